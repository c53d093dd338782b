"""/admin: being built (issue 16)."""

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
