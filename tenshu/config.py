"""Where tenshu keeps things, and which model it uses when none is named.

This is the one module that reads the environment (TENSHU_HOME, XDG_DATA_HOME). The server's
tenshu.toml settings will be parsed and validated here too.
"""

from __future__ import annotations

import os
from pathlib import Path

# The built-in chat model: a tiny model tenshu's own trainer built (`tenshu train tiny`),
# shipped inside the package so everything works offline on a fresh machine.
DEFAULT_MODEL_NAME = "tenshu-tiny"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "assets" / DEFAULT_MODEL_NAME


def tenshu_home() -> Path:
    """TENSHU_HOME, else tenshu/ under the user's data directory (XDG_DATA_HOME or
    ~/.local/share)."""
    if home := os.environ.get("TENSHU_HOME"):
        return Path(home).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "tenshu"


def resolve_model(model: str | None) -> str:
    """A model the user named (a checkpoint directory), or the built-in default."""
    return str(model) if model else str(DEFAULT_MODEL_DIR)
