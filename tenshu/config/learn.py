"""[learn] in tenshu.toml: when the server runs the learning loop's nightly job.

    [learn]
    schedule = "0 3 * * *"     # cron (five fields) or "every 12h"; "" (the default): never
    timezone = "Europe/Paris"  # the cron expression's zone; "" (the default): the machine's
    adapter = "personal"       # the adapter it trains (tenshu learn nightly --adapter)
    model = ""                 # the base it trains on; "" (the default): the server's first
                               # embedded model
    user = ""                  # whose feedback; "" (the default): the owner's
    method = "dpo"             # sft, dpo or kto
    min_new = 8                # new training examples needed since the last run
    catch_up = true            # a run missed while the server was down runs once at start
"""

from __future__ import annotations

from dataclasses import dataclass

METHODS = ("sft", "dpo", "kto")  # learn/train.py's; not imported from there: it brings torch


@dataclass(frozen=True)
class LearnSettings:
    schedule: str = ""
    timezone: str = ""
    adapter: str = "personal"
    model: str = ""
    user: str = ""
    method: str = "dpo"
    min_new: int = 8
    catch_up: bool = True

    def __post_init__(self) -> None:
        from tenshu.jobs.schedule import parse_schedule, zone_named

        if self.schedule:
            parse_schedule(self.schedule, self.timezone)  # a bad one is its ValueError
        elif self.timezone:
            zone_named(self.timezone)
        if not self.adapter.strip():
            raise ValueError("adapter: must name the adapter to train")
        if self.method not in METHODS:
            raise ValueError(f"method: must be one of {', '.join(METHODS)}")
        if self.min_new < 0:
            raise ValueError("min_new: must be at least 0")
