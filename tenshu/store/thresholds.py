"""The sentinel's calibrated thresholds, one per route: a score at or above it means the
request goes to the stronger tier.

`tenshu routes calibrate` finds a threshold (from the route's logged scores, or from labelled
prompts) and sets it here; the server reads them all once, at start. Each row says how it was
found, for the person who later wonders why a route sends what it sends.
"""

from __future__ import annotations

from sqlalchemy import Engine, Float, Integer, String, column, delete, insert, select, table

from tenshu.store.sql import UTCDateTime, begin_write, utcnow

# The columns this module reads and writes; their types are in migrations.py (m003_routing).
thresholds = table(
    "sentinel_thresholds",
    column("route", String), column("threshold", Float), column("method", String),
    column("samples", Integer), column("created_at", UTCDateTime()),
)


class ThresholdStore:
    """The calibrated thresholds in one database. Database I/O: not for the event loop."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def set(self, route: str, threshold: float, method: str, samples: int) -> None:
        """Replace `route`'s threshold. `method` says how it was found ("share 0.30",
        "labels (n=120, balanced accuracy 0.87)"), `samples` from how many scores or labels."""
        if not route.strip():
            raise ValueError("a threshold needs the name of its route")
        values = dict(route=route, threshold=float(threshold), method=method,
                      samples=int(samples), created_at=utcnow())
        with begin_write(self._engine) as conn:
            conn.execute(delete(thresholds).where(thresholds.c.route == route))
            conn.execute(insert(thresholds).values(**values))

    def get(self, route: str) -> float | None:
        """`route`'s threshold, or None when it was never calibrated."""
        stmt = select(thresholds.c.threshold).where(thresholds.c.route == route)
        with self._engine.connect() as conn:
            return conn.execute(stmt).scalar()

    def all(self) -> dict[str, float]:
        """Every calibrated route's threshold."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(thresholds.c.route, thresholds.c.threshold))
            return dict(rows.tuples().all())
