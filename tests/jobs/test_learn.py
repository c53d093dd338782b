"""The learning loop's nightly job from [learn] in tenshu.toml, and `tenshu jobs` on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tenshu.config import DEFAULT_MODEL_DIR, load_learn_settings, load_server_settings
from tenshu.config.learn import LearnSettings
from tenshu.jobs import configured_jobs, learn_job
from tenshu.jobs.schedule import Cron
from tenshu.store import open_store


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tenshu.toml"
    path.write_text(text)
    return path


def test_no_schedule_no_job(tmp_path):
    assert load_learn_settings(tmp_path / "missing.toml") == LearnSettings()
    assert learn_job(LearnSettings()) is None
    assert configured_jobs(toml(tmp_path, "[learn]\nadapter = 'mine'\n")) == []


def test_the_nightly_job_and_its_flags(tmp_path):
    path = toml(tmp_path, '[server]\nport = 7400\n\n[learn]\nschedule = "0 3 * * *"\n'
                          'timezone = "Europe/Paris"\nadapter = "ana-style"\nuser = "ana"\n'
                          'method = "kto"\nmin_new = 20\ncatch_up = false\n')
    assert load_server_settings(path).port == 7400  # [learn] is no unknown key to the server
    (job,) = configured_jobs(path)
    assert job.name == "learn-nightly" and not job.catch_up and job.heavy
    assert isinstance(job.schedule, Cron) and job.schedule.describe() == \
        "0 3 * * * (Europe/Paris)"
    assert list(job.command) == [sys.executable, "-m", "tenshu", "learn", "nightly",
                                 "--adapter", "ana-style", "--method", "kto", "--min-new", "20",
                                 "--model", str(DEFAULT_MODEL_DIR), "--user", "ana"]
    defaults = learn_job(LearnSettings(schedule="every 12h"))
    assert "--user" not in defaults.command and defaults.catch_up
    assert defaults.command[5:] == ("--adapter", "personal", "--method", "dpo",
                                    "--min-new", "8")


def test_the_flags_are_those_learn_nightly_takes():
    from tenshu.cli import build_parser

    job = learn_job(LearnSettings(schedule="0 3 * * *", user="ana"), "/models/qwen")
    args = build_parser("learn").parse_args(list(job.command[3:]))
    assert (args.action, args.adapter, args.method, args.min_new, args.user, args.model) == \
        ("nightly", "personal", "dpo", 8, "ana", "/models/qwen")
    own = learn_job(LearnSettings(schedule="0 3 * * *", model="/models/mine"), "/models/qwen")
    assert build_parser("learn").parse_args(list(own.command[3:])).model == "/models/mine"


@pytest.mark.parametrize(("text", "says"), [
    ('schedule = "0 3 * *"', "learn: schedule '0 3 * *': has 4 field(s)"),
    ('schedule = "0 3 * * *"\ntimezone = "Nowhere/City"', "unknown time zone 'Nowhere/City'"),
    ('method = "ppo"', "learn.method: must be one of sft, dpo, kto"),
    ("min_new = -1", "learn.min_new: must be at least 0"),
    ('min_new = "8"', "learn.min_new"),
    ("nightly = true", "learn: unknown key(s) nightly"),
])
def test_bad_learn_settings_are_one_clear_error(tmp_path, text, says):
    with pytest.raises(ValueError) as caught:
        load_learn_settings(toml(tmp_path, f"[learn]\n{text}\n"))
    assert says in str(caught.value) and "tenshu.toml" in str(caught.value)


def test_tenshu_jobs_list_run_and_history(tmp_path):
    """`tenshu jobs` as a person runs it: a job that fails at once (no adapter data), run in
    the foreground and recorded."""
    toml(tmp_path, '[learn]\nschedule = "0 3 * * *"\ntimezone = "UTC"\n')
    env = {**os.environ, "TENSHU_HOME": str(tmp_path)}

    def tenshu(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tenshu", "jobs", *args],
                              capture_output=True, text=True, timeout=300, env=env)

    listed = tenshu("list")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["JOB", "KIND", "SCHEDULE", "PAUSED", "NEXT", "RUN", "LAST", "RUN"]
    assert row.split()[:8] == ["learn-nightly", "heavy", "0", "3", "*", "*", "*", "(UTC)"]
    assert row.rstrip().endswith("never")
    assert tenshu("run", "nope").stderr.strip().endswith("the jobs are: learn-nightly")

    ran = tenshu("run", "learn-nightly")  # too little feedback: it says so
    (job,) = configured_jobs(tmp_path / "tenshu.toml")
    assert ran.stdout.splitlines()[0].endswith(" ".join(job.command))
    with open_store(tmp_path / "state.db") as store:
        (run,) = store.jobs.runs("learn-nightly")
    assert (run.trigger, run.log) == ("manual", None)
    assert run.status == ("succeeded" if ran.returncode == 0 else "failed")
    history = tenshu("history", "learn-nightly").stdout.splitlines()
    assert history[0].split()[:4] == ["RUN", "JOB", "TRIGGER", "STATUS"]
    assert "ENERGY" in history[0].split()
    assert history[1].split()[:4] == [run.id, "learn-nightly", "manual", run.status]
    # where this machine's energy counters cannot be read, the history says so, never a guess
    assert (run.energy_j is None) == ("n/a" in history[1].split())
    assert f"energy {'n/a' if run.energy_j is None else ''}" in ran.stdout
