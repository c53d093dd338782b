// The jobs page (web/jobs.py renders its skeleton; admins only): every job from /tenshu/v1/jobs
// with Run now, Pause and Resume; one job's runs (?job=NAME in the address) and one run's log
// (?log=RUN_ID), from /tenshu/v1/jobs/{name}/runs and /tenshu/v1/jobs/runs/{id}/log. While
// anything shown is queued or running, the page reads it all again every POLL_MS; while a run
// only waits (deferred, or a state the API adds), twenty times less often.
// A log is a program's output and a `why` is its words: both go into the page as text nodes.
// A run's fields beyond the ones this page knows (the API may add some) are listed as they come.

import { api, el, formatDate, toast } from "/static/js/common.js";

const BASE = "/tenshu/v1/jobs";
const POLL_MS = 1500;
const PAGE = 50;  // runs per read of a job's history
const ALL_KIB = 64 * 1024;  // the most of a log the API sends
const ENDED = new Set(["succeeded", "failed", "skipped", "cancelled"]);
const RUN_BADGE = { succeeded: "good", failed: "bad", cancelled: "warn", skipped: "", running: "live", queued: "live", deferred: "warn" };
// what the runs table and the facts above a log show by name; any other field is listed as is
const KNOWN = new Set(["id", "object", "job", "trigger", "status", "why", "exit_code", "started_at",
  "finished_at", "log"]);

const rows = document.getElementById("job-rows");
const noJobs = document.getElementById("no-jobs");
const runsCard = document.getElementById("job-runs");
const runRows = document.getElementById("run-rows");
const noRuns = document.getElementById("no-job-runs");
const older = document.getElementById("older-runs");
const logCard = document.getElementById("job-log");
const logText = document.getElementById("log-text");

let chosen = { job: null, run: null };  // from the address
let runs = new Map();  // the chosen job's runs shown, by id
let more = false;  // the history goes on past the oldest run shown
let olderShown = false;  // "Older runs" was used: a refresh leaves `more` as that read said
let tail = 256;  // KiB of the log to read
let reads = 0;  // refresh() calls: only the latest one's answers are drawn
let timer = null;

const jobPath = (name) => `${BASE}/${encodeURIComponent(name)}`;
const address = (job, run) => "/jobs?" + new URLSearchParams({ job, ...(run ? { log: run } : {}) });

function badge(status, extra = "") {
  return el("span", { class: `badge ${RUN_BADGE[status] ?? ""} ${extra}`.trim(), dataset: { status } }, status);
}

/** Seconds as a person says them: 0.4 s, 12 s, 4 min 3 s, 2 h 5 min. */
function duration(seconds) {
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function took(run) {
  return run.finished_at ? duration((new Date(run.finished_at) - new Date(run.started_at)) / 1000) : "";
}

function time(iso) {
  return iso ? el("time", { datetime: iso }, formatDate(iso)) : "–";
}

function bytes(n) {
  return n >= 1024 * 1024 ? `${(n / 1024 / 1024).toFixed(1)} MiB` : `${Math.ceil(n / 1024)} KiB`;
}

/** A link that changes what the page shows without reloading it. */
function choose(href, ...children) {
  return el("a", { href, dataset: { choose: "" } }, ...children);
}

// -- the jobs -----------------------------------------------------------------------------------

function jobRow(job) {
  const last = job.last_run;
  const state = job.running ? badge("running", "job-state")
    : el("span", { class: `badge job-state ${job.paused ? "warn" : "good"}` }, job.paused ? "paused" : "active");
  return el("tr", { dataset: { job: job.name, paused: job.paused ? "true" : "false" },
    class: chosen.job === job.name ? "chosen" : "" },
    el("td", {}, choose(address(job.name), el("strong", { class: "job-name" }, job.name))),
    el("td", { class: "jobs-wide job-schedule" }, job.schedule ?? "by hand"),
    el("td", {}, state, job.running ? [" ", choose(address(job.name, job.running), "log")] : null),
    el("td", { class: "jobs-wide job-next" }, job.paused ? "–" : time(job.next_run_at)),
    el("td", { class: "job-last" }, last ? [badge(last.status), " ", time(last.started_at),
      took(last) ? el("span", { class: "hint" }, ` · ${took(last)}`) : null] : el("span", { class: "hint" }, "never")),
    el("td", { class: "job-actions" }, el("div", { class: "row" },
      el("button", { type: "button", class: "small", dataset: { act: "run" } }, "Run now"),
      el("button", { type: "button", class: "small", dataset: { act: job.paused ? "resume" : "pause" } },
        job.paused ? "Resume" : "Pause"))));
}

async function act(name, verb, button) {
  button.disabled = true;
  try {
    const answer = await api(`${jobPath(name)}/${verb}`, { method: "POST" });
    if (verb === "run" && answer.status === "skipped") {
      toast(`Skipped: ${answer.why}`, "bad");
    } else if (verb === "run") {
      toast(`${name}: started`);
      show(address(name, answer.id));  // its history, and its log as it is written
      return;
    } else {
      toast(`${name}: ${verb === "pause" ? "paused" : "scheduled again"}`);
    }
  } catch (err) {
    toast(err.message, "bad");
  }
  button.disabled = false;
  refresh();
}

rows.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-act]");
  if (button) act(button.closest("tr").dataset.job, button.dataset.act, button);
});

// -- a job's runs -------------------------------------------------------------------------------

function runRow(run) {
  return el("tr", { dataset: { run: run.id, status: run.status }, class: chosen.run === run.id ? "chosen" : "" },
    el("td", {}, badge(run.status)),
    el("td", { class: "job-trigger" }, run.trigger),
    el("td", {}, time(run.started_at)),
    el("td", { class: "jobs-wide" }, run.finished_at ? [time(run.finished_at), el("span", { class: "hint" }, ` · ${took(run)}`)] : "–"),
    el("td", { class: "num job-exit" }, run.exit_code ?? "–"),
    el("td", { class: "job-why" }, run.why),
    el("td", {}, run.log ? choose(address(run.job, run.id), "Log") : null));
}

function newestFirst(a, b) {
  return new Date(b.started_at) - new Date(a.started_at) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
}

function drawRuns() {
  const list = [...runs.values()].sort(newestFirst);
  runRows.replaceChildren(...list.map(runRow));
  noRuns.textContent = "No runs yet.";
  noRuns.classList.toggle("hidden", list.length > 0);
  older.classList.toggle("hidden", !more);
}

older.addEventListener("click", async () => {
  const oldest = [...runs.values()].sort(newestFirst).at(-1);
  older.disabled = true;
  try {
    const page = await api(`${jobPath(chosen.job)}/runs?limit=${PAGE}&after=${encodeURIComponent(oldest.id)}`);
    for (const run of page.data) runs.set(run.id, run);
    more = page.has_more;
    olderShown = true;
    drawRuns();
  } catch (err) {
    toast(err.message, "bad");
  }
  older.disabled = false;
});

// -- a run's log --------------------------------------------------------------------------------

function facts(run) {
  const list = [["Job", run.job], ["Trigger", run.trigger], ["Started", time(run.started_at)],
    ["Finished", run.finished_at ? [time(run.finished_at), ` (${took(run)})`] : "–"],
    ["Exit code", run.exit_code ?? "–"], ["Why", run.why || "–"], ["File", el("code", {}, run.log ?? "–")]];
  for (const [key, value] of Object.entries(run)) {
    if (!KNOWN.has(key) && value !== null && typeof value !== "object") list.push([key, String(value)]);
  }
  return list.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]);
}

async function drawLog(mine) {
  const error = document.getElementById("log-error");
  let text = "";
  let size = 0;
  try {
    const response = await api(`${BASE}/runs/${encodeURIComponent(chosen.run)}/log?tail=${tail}`, { raw: true });
    text = await response.text();
    size = Number(response.headers.get("x-tenshu-log-size") || 0);
    error.classList.add("hidden");
  } catch (err) {
    if (mine !== reads) return;
    error.textContent = err.message;
    error.classList.remove("hidden");
  }
  if (mine !== reads) return;
  const run = runs.get(chosen.run);
  document.getElementById("log-run").textContent = chosen.run;
  const status = document.getElementById("log-status");
  status.className = `badge ${run ? RUN_BADGE[run.status] ?? "" : "hidden"}`;
  status.dataset.status = status.textContent = run ? run.status : "";
  document.getElementById("log-facts").replaceChildren(...(run ? facts(run) : []));
  const shown = new TextEncoder().encode(text).length;
  document.getElementById("log-cut-text").textContent = `The last ${bytes(shown)} of ${bytes(size)}.`;
  document.getElementById("log-cut").classList.toggle("hidden", !(size > shown && tail < ALL_KIB));
  if (logText.textContent !== text) {
    const atEnd = logText.scrollTop + logText.clientHeight >= logText.scrollHeight - 4;
    logText.textContent = text;
    if (atEnd) logText.scrollTop = logText.scrollHeight;  // follow a log being written
  }
  logText.classList.toggle("muted", !text);
  if (!text) logText.textContent = run && !ENDED.has(run.status) ? "Nothing written yet." : "(empty)";
}

document.getElementById("log-all").addEventListener("click", () => {
  tail = ALL_KIB;
  refresh();
});

// -- reading it all -----------------------------------------------------------------------------

async function refresh() {
  clearTimeout(timer);
  const mine = ++reads;
  let jobs;
  let page = null;
  try {
    [jobs, page] = await Promise.all([api(BASE),
      chosen.job ? api(`${jobPath(chosen.job)}/runs?limit=${PAGE}`) : null]);
  } catch (err) {
    if (mine !== reads) return;
    toast(err.message, "bad");
    noRuns.textContent = err.message;
    timer = setTimeout(refresh, POLL_MS * 4);
    return;
  }
  if (mine !== reads) return;
  rows.replaceChildren(...jobs.data.map(jobRow));
  noJobs.textContent = "This server runs no jobs. The learning loop's nightly run is one: [learn] schedule in tenshu.toml.";
  noJobs.classList.toggle("hidden", jobs.data.length > 0);
  runsCard.classList.toggle("hidden", !chosen.job);
  if (page) {
    document.getElementById("runs-of").textContent = chosen.job;
    for (const run of page.data) runs.set(run.id, run);
    if (!olderShown) more = page.has_more;
    drawRuns();
  }
  logCard.classList.toggle("hidden", !chosen.run);
  if (chosen.run) await drawLog(mine);
  if (mine !== reads) return;
  // A job's last run is read apart from whether it runs, so one read may say "not running"
  // while its last run still says "running": look again until both agree it has ended. A run
  // waiting for the energy policy (deferred) may wait for hours: looked at less often.
  const shown = [...jobs.data.map((j) => j.last_run).filter(Boolean), ...runs.values()];
  const busy = jobs.data.some((j) => j.running) ||
    shown.some((r) => r.status === "queued" || r.status === "running");
  if (busy) timer = setTimeout(refresh, POLL_MS);
  else if (shown.some((r) => !ENDED.has(r.status))) timer = setTimeout(refresh, POLL_MS * 20);
}

/** What the address chooses: a job's runs, a run's log. */
function readAddress() {
  const params = new URLSearchParams(location.search);
  const job = params.get("job");
  if (job !== chosen.job) {
    runs = new Map();
    more = olderShown = false;
  }
  const run = params.get("log");
  if (run !== chosen.run) {
    tail = 256;
    logText.textContent = "";
  }
  chosen = { job, run };
}

async function show(href) {
  history.pushState(null, "", href);
  readAddress();
  await refresh();
  (chosen.run ? logCard : runsCard).scrollIntoView({ block: "nearest" });
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-choose]");
  if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
  event.preventDefault();
  show(link.getAttribute("href"));
});
window.addEventListener("popstate", () => {
  readAddress();
  refresh();
});

readAddress();
refresh();
