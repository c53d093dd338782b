"""/tenshu/v1/jobs on the real app (api/server.py's build_server), with a scheduler of real
jobs: admins list, run, pause and resume them and read their history; anyone else gets 403;
an unknown job, or a server without a scheduler, 404."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import httpx
import pytest

from tenshu.api.server import build_server
from tenshu.config import ServerSettings
from tenshu.jobs import Conditions, FixedProbe, Job, Scheduler, parse_schedule
from tests.jobs.test_energy import Clock

WAIT = 120


@pytest.fixture
async def app(tmp_path):
    server = build_server(ServerSettings(embedder=False, log_level="warning"),
                          state_db=tmp_path / "state.db")
    server.app.state.scheduler = None  # each test's own, below
    yield server
    await server.gateway.aclose()
    server.store.close()


@pytest.fixture
async def scheduler(app, tmp_path):
    release = tmp_path / "release"
    block = [sys.executable, "-c", "import sys, time, pathlib\n"
             "while not pathlib.Path(sys.argv[1]).exists(): time.sleep(0.02)", str(release)]
    # due years from now (29 February; every 9999 days since 1970), so never during a test
    scheduler = Scheduler([Job("nightly", parse_schedule("0 3 29 2 *", "UTC"), block),
                           Job("hourly", parse_schedule("every 9999d"),
                               [sys.executable, "-c", ""])],
                          app.store.jobs, logs=tmp_path / "logs")
    await scheduler.start()
    app.app.state.scheduler = scheduler
    scheduler.release = release
    yield scheduler
    release.touch()
    await scheduler.close()


@pytest.fixture
def keys(app) -> dict[str, str]:
    app.store.users.add("ana")
    return {"owner": app.store.keys.create("owner-key")[1],
            "ana": app.store.keys.create("ana-key", user="ana")[1]}


@pytest.fixture
async def client(app, keys):
    transport = httpx.ASGITransport(app=app.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                 timeout=WAIT) as client:
        yield lambda who: {"Authorization": f"Bearer {keys[who]}"}, client


async def test_an_admin_runs_a_job_and_reads_its_history(scheduler, client):
    as_, http = client
    listed = (await http.get("/tenshu/v1/jobs", headers=as_("owner"))).json()
    assert [j["name"] for j in listed["data"]] == ["nightly", "hourly"]
    nightly = listed["data"][0]
    assert (nightly["schedule"], nightly["paused"], nightly["last_run"], nightly["running"]) == \
        ("0 3 29 2 * (UTC)", False, None, None)
    assert (nightly["heavy"], nightly["deferred"]) == (False, None)
    assert nightly["next_run_at"].endswith("03:00:00+00:00")

    started = await http.post("/tenshu/v1/jobs/nightly/run", headers=as_("owner"))
    assert started.status_code == 202
    run = started.json()
    assert (run["object"], run["job"], run["trigger"], run["status"], run["energy_j"]) == \
        ("job.run", "nightly", "manual", "queued", None)
    again = (await http.post("/tenshu/v1/jobs/nightly/run", headers=as_("owner"))).json()
    assert again["status"] == "skipped" and run["id"] in again["why"]
    listed = (await http.get("/tenshu/v1/jobs", headers=as_("owner"))).json()
    assert listed["data"][0]["running"] == run["id"]
    assert listed["data"][0]["last_run"]["id"] == run["id"]  # the skipped one is no last run

    scheduler.release.touch()
    assert (await scheduler.wait(run["id"])).status == "succeeded"
    history = (await http.get("/tenshu/v1/jobs/nightly/runs", headers=as_("owner"))).json()
    assert [(r["id"], r["status"]) for r in history["data"]] == \
        [(again["id"], "skipped"), (run["id"], "succeeded")]
    page = (await http.get("/tenshu/v1/jobs/nightly/runs?limit=1",
                           headers=as_("owner"))).json()
    assert page["has_more"] and page["last_id"] == again["id"]
    rest = (await http.get(f"/tenshu/v1/jobs/nightly/runs?limit=1&after={page['last_id']}",
                           headers=as_("owner"))).json()
    assert [r["id"] for r in rest["data"]] == [run["id"]] and not rest["has_more"]
    assert (await http.get("/tenshu/v1/jobs/hourly/runs", headers=as_("owner"))).json()[
        "data"] == []


async def test_pause_and_resume(scheduler, client):
    as_, http = client
    paused = await http.post("/tenshu/v1/jobs/hourly/pause", headers=as_("owner"))
    assert paused.status_code == 200
    assert (paused.json()["paused"], paused.json()["next_run_at"]) == (True, None)
    assert scheduler.state("hourly").paused
    resumed = (await http.post("/tenshu/v1/jobs/hourly/resume", headers=as_("owner"))).json()
    assert resumed["paused"] is False and resumed["next_run_at"] is not None


async def test_only_admins_and_only_known_jobs(scheduler, client):
    as_, http = client
    for method, path in (("GET", "/tenshu/v1/jobs"), ("GET", "/tenshu/v1/jobs/nightly/runs"),
                         ("POST", "/tenshu/v1/jobs/nightly/run"),
                         ("POST", "/tenshu/v1/jobs/nightly/pause"),
                         ("POST", "/tenshu/v1/jobs/nightly/resume")):
        refused = await http.request(method, path, headers=as_("ana"))
        assert refused.status_code == 403, path
        assert refused.json()["error"]["message"] == "only an admin may see and run jobs"
        missing = await http.request(method, path.replace("nightly", "weekly"),
                                     headers=as_("owner"))
        if "weekly" in path.replace("nightly", "weekly"):
            assert missing.status_code == 404, path
            assert "no job named 'weekly'" in missing.json()["error"]["message"]
    assert not scheduler.state("nightly").paused
    assert scheduler.running("nightly") is None
    bad_page = await http.get("/tenshu/v1/jobs/nightly/runs?after=jobrun_nope",
                              headers=as_("owner"))
    assert bad_page.status_code == 400


async def test_a_server_without_a_scheduler_has_no_jobs(app, client):
    as_, http = client
    assert (await http.get("/tenshu/v1/jobs", headers=as_("owner"))).json() == \
        {"object": "list", "data": []}
    for path in ("/tenshu/v1/jobs/nightly/run", "/tenshu/v1/jobs/nightly/pause"):
        response = await http.post(path, headers=as_("owner"))
        assert response.status_code == 404
        assert "this server runs no jobs" in response.json()["error"]["message"]
    assert (await http.get("/tenshu/v1/jobs", headers=as_("ana"))).status_code == 403


async def test_a_heavy_jobs_deferred_run_and_a_run_by_hand(app, client, tmp_path):
    """On battery: the nightly heavy job's run is deferred, and the API says so and why; a run
    by hand starts at once, in its place."""
    as_, http = client
    clock = Clock(datetime(2026, 3, 2, 3, 1, tzinfo=UTC))
    scheduler = Scheduler([Job("train", parse_schedule("0 3 * * *", "UTC"),
                               [sys.executable, "-c", ""], heavy=True)],
                          app.store.jobs, logs=tmp_path / "logs", clock=clock,
                          probe=FixedProbe(Conditions(on_mains=False)))
    await scheduler.start()
    app.app.state.scheduler = scheduler
    try:
        clock.now = datetime(2026, 3, 3, 3, 1, tzinfo=UTC)
        await scheduler.check()
        (job,) = (await http.get("/tenshu/v1/jobs", headers=as_("owner"))).json()["data"]
        assert job["heavy"] and job["deferred"] is not None and job["running"] is None
        (waiting,) = (await http.get("/tenshu/v1/jobs/train/runs",
                                     headers=as_("owner"))).json()["data"]
        assert (waiting["id"], waiting["status"], waiting["why"], waiting["energy_j"]) == \
            (job["deferred"], "deferred", "on battery", None)
        run = (await http.post("/tenshu/v1/jobs/train/run", headers=as_("owner"))).json()
        assert (run["trigger"], run["status"]) == ("manual", "queued")
        assert (await scheduler.wait(run["id"])).status == "succeeded"
        runs = (await http.get("/tenshu/v1/jobs/train/runs", headers=as_("owner"))).json()
        assert {r["id"]: r["status"] for r in runs["data"]} == \
            {run["id"]: "succeeded", waiting["id"]: "skipped"}
    finally:
        await scheduler.close()
