"""[jobs] in tenshu.toml: when the job scheduler may start a heavy job (training, a large
ingest, a report). A heavy job that comes due waits until all of these hold, and is given up
if they do not before its next due time; a light job, and any job run by hand, starts at once.

    [jobs]
    heavy_hours = "01:00-06:00"  # when a heavy job may start ("22:00-05:00" crosses midnight);
                                 # "" (the default): any time
    timezone = "Europe/Paris"    # heavy_hours' zone; "" (the default): the machine's
    require_mains = true         # not on battery (a machine without one is on mains)
    max_load = 0.5               # the 1-minute load average per core must be below this
    idle_minutes = 15            # no request to the server for this long; 0: not checked
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JobsSettings:
    heavy_hours: str = ""
    timezone: str = ""
    require_mains: bool = True
    max_load: float = 0.5
    idle_minutes: float = 15.0

    def __post_init__(self) -> None:
        from tenshu.jobs.schedule import parse_hours, zone_named

        try:
            zone_named(self.timezone)
        except ValueError as exc:
            raise ValueError(f"timezone: {exc}") from None
        try:
            parse_hours(self.heavy_hours, self.timezone)
        except ValueError as exc:
            raise ValueError(f"heavy_hours: {exc}") from None
        if not self.max_load > 0:
            raise ValueError(f"max_load: must be > 0 (load per core), got {self.max_load!r}")
        if not self.idle_minutes >= 0:
            raise ValueError(f"idle_minutes: must be >= 0, got {self.idle_minutes!r}")

    @property
    def hours(self):
        """heavy_hours as jobs.schedule.Hours, in its zone; None: any time."""
        from tenshu.jobs.schedule import parse_hours

        return parse_hours(self.heavy_hours, self.timezone)
