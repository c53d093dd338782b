"""keep_alive: how long a model stays loaded after its last request, as Ollama spells it.

Ollama's `keep_alive` (and tenshu.toml's `keep_alive`) is a duration string in Go's syntax
("10m", "1h30m", "300ms", "0"), or a number of seconds; a negative value means forever, 0 means
unload as soon as the request is done. `keep_alive_seconds` reads either into seconds, with
FOREVER (math.inf) for a negative value.
"""

from __future__ import annotations

import math
import re

FOREVER = math.inf

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_NUMBER = re.compile(r"[+-]?(\d+(?:\.\d*)?|\.\d+)")


def keep_alive_seconds(value: str | float | int) -> float:
    """Seconds (FOREVER for a negative duration); raises ValueError naming what is accepted."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"must be a duration such as \"5m\" or a number of seconds, "
                         f"not {value!r}")
    if isinstance(value, (int, float)):
        if math.isnan(value):
            raise ValueError("must be a number of seconds, not NaN")
        return FOREVER if value < 0 else float(value)
    text = value.strip()
    if _NUMBER.fullmatch(text):  # "300", "-1": seconds, as OLLAMA_KEEP_ALIVE reads them
        return keep_alive_seconds(float(text))
    sign, body = (-1, text[1:]) if text.startswith("-") else (1, text.removeprefix("+"))
    seconds, at = 0.0, 0
    for match in _PART.finditer(body):
        if match.start() != at:
            break
        seconds += float(match[1]) * _UNITS[match[2]]
        at = match.end()
    if not body or at != len(body):
        raise ValueError(f"{value!r} is not a duration: use one such as \"30s\", \"5m\" or "
                         "\"1h\", a number of seconds, 0 to unload at once or -1 for forever")
    return FOREVER if sign < 0 and seconds > 0 else seconds
