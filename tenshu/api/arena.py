"""/tenshu/v1 arena: being built (issue 16)."""

from fastapi import APIRouter

router = APIRouter(prefix="/tenshu/v1", tags=["tenshu"])
