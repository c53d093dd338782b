"""/tenshu/v1 admin: being built (issue 16)."""

from fastapi import APIRouter

router = APIRouter(prefix="/tenshu/v1", tags=["tenshu"])
