"""Energy counters: the joules the machine's CPU packages used, from the counters the operating
system keeps, for each job run (scheduler.py) and for /metrics (api/metrics.py).

    meter = EnergyMeter.open()            # where there are none: meter.unavailable says why
    start = meter.read()                  # None when unavailable
    ...                                   # read every meter.sample_every seconds meanwhile
    used = meter.read().since(start)      # joules; None where the meter lost count

Linux: RAPL, through powercap (/sys/class/powercap/intel-rapl:N/energy_uj, Intel's and AMD's
CPUs alike): the package zones (package-0, ...), or the platform's (psys) where there are none;
not the GPU's. Since Linux 5.10 the files are readable by root only (a guard against power
side channels), so an ordinary server says unavailable. macOS: powermetrics needs root, so
nothing is measured; nor on Windows. What a counter says is everything the package used in the
time, whatever used it: a job's run is charged for all the machine did meanwhile.

A counter wraps at its zone's max_energy_range_uj (some hundreds of kJ: minutes at full power).
Between two reads, one wrap is told from the value going down; more cannot be told, so a read
later than the range lasts at SAFE_WATTS counts as a gap, and what spans it is None.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

POWERCAP = Path("/sys/class/powercap")
SAFE_WATTS = 1000.0  # more than any CPU package draws: the range lasts longer than that
SAMPLE_EVERY = 30.0  # seconds between reads while a job runs, at most
_ZONE = re.compile(r"intel-rapl:\d+")  # a top-level zone; intel-rapl:N:M are inside it


@dataclass(frozen=True)
class Reading:
    """The joules counted since the meter was opened, as far as it could follow."""

    joules: float
    gaps: int  # reads too far apart to tell how often a counter wrapped between them

    def since(self, earlier: Reading | None) -> float | None:
        """The joules used from `earlier` to this reading; None where the meter lost count
        between them, or had no reading then."""
        if earlier is None or earlier.gaps != self.gaps:
            return None
        return self.joules - earlier.joules


@dataclass
class _Zone:
    name: str
    counter: Path  # energy_uj
    range_uj: int  # it wraps to 0 past this
    last_uj: int
    last_at: float  # when last read (the meter's clock, seconds)


class EnergyMeter:
    """The machine's energy counters, followed across wraps by reading them (read) often
    enough. `unavailable` says why there are none ("" where there are)."""

    def __init__(self, zones: list[_Zone], unavailable: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.zones = zones
        self.unavailable = unavailable
        self.clock = clock
        self._joules = 0.0
        self._gaps = 0

    @classmethod
    def open(cls, root: Path = POWERCAP, clock: Callable[[], float] = time.monotonic
             ) -> EnergyMeter:
        """The RAPL counters under `root` (powercap's sysfs folder)."""
        if not root.is_dir():
            why = ("macOS: its energy counters (powermetrics) need root" if sys.platform ==
                   "darwin" else f"no RAPL counters ({root} is not there)")
            return cls([], why, clock)
        zones, refused = [], ""
        for folder in sorted(p for p in root.iterdir() if _ZONE.fullmatch(p.name)):
            try:
                zones.append(_Zone((folder / "name").read_text().strip(),
                                   folder / "energy_uj",
                                   int((folder / "max_energy_range_uj").read_text()),
                                   int((folder / "energy_uj").read_text()), clock()))
            except PermissionError:
                refused = f"{folder / 'energy_uj'} is readable by root only"
            except (OSError, ValueError):
                continue  # a zone without counters
        packages = [z for z in zones if z.name.startswith("package")]
        zones = packages or [z for z in zones if z.name == "psys"]
        if not zones:
            return cls([], refused or f"no RAPL package counters under {root}", clock)
        return cls(zones, "", clock)

    @property
    def available(self) -> bool:
        return bool(self.zones)

    @property
    def sample_every(self) -> float:
        """Seconds between reads that keep count: half the shortest range at SAFE_WATTS
        (about two minutes for Intel's usual 262 kJ), at most SAMPLE_EVERY."""
        shortest = min((z.range_uj / 1e6 / SAFE_WATTS for z in self.zones), default=SAMPLE_EVERY)
        return max(0.5, min(SAMPLE_EVERY, shortest / 2))

    def read(self) -> Reading | None:
        """The joules since the meter was opened (None where there are no counters)."""
        if not self.zones:
            return None
        now = self.clock()
        for zone in self.zones:
            try:
                value = int(zone.counter.read_text())
            except (OSError, ValueError):
                self._gaps += 1  # a counter that went away: what it missed is unknown
                continue
            used = value - zone.last_uj if value >= zone.last_uj else \
                zone.range_uj - zone.last_uj + value  # it wrapped, once
            if now - zone.last_at < zone.range_uj / 1e6 / SAFE_WATTS:
                self._joules += used / 1e6
            else:
                self._gaps += 1
            zone.last_uj, zone.last_at = value, now
        return Reading(self._joules, self._gaps)
