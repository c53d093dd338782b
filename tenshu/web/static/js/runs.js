// The agent runs' pages (web/runs.py renders their skeletons):
//   /runs        the calls waiting for a decision (approve, or deny with a reason), the person's
//                runs (refreshed while any is live), and a form to start one
//   /runs/{id}   one run followed live over its events stream: the model's text as it comes,
//                each step as it ends, the approval prompt inline while it waits, Cancel
// Everything goes through /tenshu/v1 with the session (common.js: api). What a model or a tool
// wrote (text, a call's arguments, an output) goes into the page as text nodes; only the run's
// final answer is rendered as Markdown, through common.js's sanitizing renderMarkdown.

import { api, el, formatDate, renderAllMarkdown, renderMarkdown, serverEvents, toast } from "/static/js/common.js";

const BASE = "/tenshu/v1";
const POLL_MS = 3000;
const ENDED = new Set(["succeeded", "failed", "cancelled"]);
const RUN_BADGE = { succeeded: "good", failed: "bad", waiting_approval: "warn", running: "live", queued: "live" };
const STEP_BADGE = { done: "good", approved: "good", failed: "bad", denied: "bad",
  waiting_approval: "warn", started: "live", pending: "live" };
const CLASS_BADGE = { read: "good", write: "warn", network: "warn", destructive: "bad", exec: "bad" };

const label = (status) => String(status).replace(/_/g, " ");
const runPath = (id) => `${BASE}/runs/${encodeURIComponent(id)}`;

function badge(status, classes, extra = "") {
  return el("span", { class: `badge ${classes[status] || ""} ${extra}`.trim(), dataset: { status } }, label(status));
}

function setBadge(node, status, classes) {
  node.className = `badge ${classes[status] || ""}`;
  node.dataset.status = status;
  node.textContent = label(status);
}

/** A value as indented JSON, as text (never markup). */
function json(value, cls = "run-json") {
  return el("pre", { class: cls }, JSON.stringify(value ?? {}, null, 2));
}

/** What a tool call is: its tool and class, its arguments, and why it needs a person. */
function callFacts(name, data) {
  return el("dl", { class: "run-facts" },
    el("dt", {}, "Tool"),
    el("dd", {}, el("code", { class: "run-tool" }, name), " ",
      data.class ? el("span", { class: `badge run-class ${CLASS_BADGE[data.class] || ""}` }, data.class) : null),
    el("dt", {}, "Input"), el("dd", {}, json(data.input)),
    data.why ? [el("dt", {}, "Why asked"), el("dd", { class: "run-why" }, data.why)] : null);
}

/** Approve, or Deny with an optional reason, the call run `runId` waits on. */
function decisionForm(runId, after) {
  const reason = el("input", { name: "reason", maxlength: 2000, autocomplete: "off",
    placeholder: "Reason (optional)", "aria-label": "Reason" });
  const approve = el("button", { type: "button", class: "primary", dataset: { decide: "approve" } }, "Approve");
  const deny = el("button", { type: "button", class: "danger", dataset: { decide: "deny" } }, "Deny");
  async function decide(verb) {
    approve.disabled = deny.disabled = true;
    try {
      await api(`${runPath(runId)}/${verb}`, { method: "POST", body: { reason: reason.value.trim() } });
      toast(verb === "approve" ? "Approved: the call runs now" : "Denied: the model is told");
    } catch (err) {
      approve.disabled = deny.disabled = false;
      toast(err.message, "bad");
    }
    after?.();
  }
  approve.addEventListener("click", () => decide("approve"));
  deny.addEventListener("click", () => decide("deny"));
  return el("div", { class: "row run-decide" }, reason, approve, deny);
}

// -- /runs --------------------------------------------------------------------------------------

function runsPage() {
  const approvals = document.getElementById("approval-list");
  const noApprovals = document.getElementById("no-approvals");
  const rows = document.getElementById("run-rows");
  const noRuns = document.getElementById("no-runs");
  let shown = "";  // the pending calls on screen, so a refresh keeps a reason being typed
  let timer = null;

  function approvalItem(a) {
    return el("li", { class: "run-approval", dataset: { run: a.run_id, seq: a.seq } },
      el("div", { class: "row run-approval-head" },
        el("strong", {}, a.agent),
        el("a", { href: `/runs/${encodeURIComponent(a.run_id)}` }, "open the run"),
        el("time", { class: "hint", datetime: a.started_at }, formatDate(a.started_at))),
      el("p", { class: "run-text run-approval-task" }, a.task),
      callFacts(a.name, a.data),
      decisionForm(a.run_id, refresh));
  }

  function runRow(r) {
    return el("tr", { dataset: { run: r.id } },
      el("td", { class: "run-task-cell" },
        el("a", { href: `/runs/${encodeURIComponent(r.id)}`, title: r.task }, r.task)),
      el("td", {}, r.agent),
      el("td", {}, badge(r.status, RUN_BADGE)),
      el("td", { class: "num runs-wide" }, r.model_steps),
      el("td", { class: "runs-wide" }, el("time", { datetime: r.created_at }, formatDate(r.created_at))));
  }

  async function refresh() {
    clearTimeout(timer);
    let pending, runs;
    try {
      [pending, runs] = await Promise.all([api(`${BASE}/approvals`), api(`${BASE}/runs?limit=100`)]);
    } catch (err) {
      toast(err.message, "bad");
      timer = setTimeout(refresh, POLL_MS * 3);
      return;
    }
    const key = pending.data.map((a) => `${a.run_id}:${a.seq}`).join(",");
    if (key !== shown) {
      approvals.replaceChildren(...pending.data.map(approvalItem));
      shown = key;
    }
    noApprovals.textContent = "No calls are waiting for a decision.";
    noApprovals.classList.toggle("hidden", pending.data.length > 0);
    rows.replaceChildren(...runs.data.map(runRow));
    noRuns.textContent = "No runs yet: start one above.";
    noRuns.classList.toggle("hidden", runs.data.length > 0);
    if (runs.data.some((r) => !ENDED.has(r.status))) timer = setTimeout(refresh, POLL_MS);
  }

  const form = document.getElementById("start-run");
  const select = document.getElementById("run-agent");
  const about = document.getElementById("agent-about");
  const error = document.getElementById("start-error");
  let agents = [];

  function describe() {
    const agent = agents.find((a) => a.name === select.value);
    if (!agent) return;
    const tools = agent.tools.length ? agent.tools.join(", ") : "none";
    about.textContent = `${agent.description ? agent.description + " · " : ""}model ${agent.model} · tools: ${tools}`;
  }

  async function loadAgents() {
    try {
      agents = (await api(`${BASE}/agents`)).data;
    } catch (err) {
      about.textContent = err.message;
      return;
    }
    select.replaceChildren(...agents.map((a) => el("option", { value: a.name }, a.name)));
    if (!agents.length) {
      about.textContent = "This server runs no agents: add one as [agents.NAME] in tenshu.toml.";
      for (const field of form.elements) field.disabled = true;
      return;
    }
    describe();
  }
  select.addEventListener("change", describe);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.classList.add("hidden");
    const data = new FormData(form);
    const button = document.getElementById("start-button");
    button.disabled = true;
    try {
      const run = await api(`${BASE}/agents/${encodeURIComponent(select.value)}/runs`, {
        method: "POST", body: { task: String(data.get("task") || "") } });
      location.href = `/runs/${encodeURIComponent(run.id)}`;
    } catch (err) {
      error.textContent = err.message;
      error.classList.remove("hidden");
      button.disabled = false;
    }
  });

  loadAgents();
  refresh();
}

// -- /runs/{id} ---------------------------------------------------------------------------------

function runPage(root) {
  const id = root.dataset.run;
  const list = document.getElementById("run-steps");
  const noSteps = document.getElementById("no-steps");
  const status = document.getElementById("run-status");
  const cancel = document.getElementById("cancel-run");
  const waiting = document.getElementById("run-waiting");
  const steps = new Map();  // seq -> {seq, kind, name, status, data, live}
  const items = new Map();  // seq -> its <li>
  let ended = ENDED.has(root.dataset.status);

  function setStatus(value) {
    root.dataset.status = value;
    setBadge(status, value, RUN_BADGE);
    ended = ENDED.has(value);
    cancel.classList.toggle("hidden", ended);
    waiting.classList.toggle("hidden", value !== "waiting_approval");
  }

  function setEnd(run) {
    const why = document.getElementById("run-why");
    why.textContent = run.why || "";
    why.classList.toggle("hidden", !run.why);
    renderMarkdown(document.getElementById("run-result"), run.result || "");
    const none = document.getElementById("run-no-result");
    none.textContent = ENDED.has(run.status) ? "No result." : "Not finished yet.";
    none.classList.toggle("hidden", Boolean(run.result));
  }

  function counts() {
    let model = 0;
    let tokens = 0;
    for (const s of steps.values()) {
      if (s.kind !== "model" || s.status !== "done") continue;
      model += 1;
      tokens += (s.data.usage?.input_tokens || 0) + (s.data.usage?.output_tokens || 0);
    }
    document.getElementById("run-counts").textContent =
      `${model} model step${model === 1 ? "" : "s"} · ${tokens} tokens`;
  }

  function modelStep(s) {
    const blocks = s.data.message?.content || [];
    const text = s.data.message ? blocks.filter((b) => b.type === "text").map((b) => b.text).join("") : s.live || "";
    const thinking = blocks.filter((b) => b.type === "thinking").map((b) => b.thinking || b.text || "").join("");
    const calls = blocks.filter((b) => b.type === "tool_use");
    return [
      thinking ? el("details", { class: "thinking" }, el("summary", {}, "Thinking"),
        el("p", { class: "run-text" }, thinking)) : null,
      text || !calls.length ? el("p", { class: `run-text run-step-text${text ? "" : " muted"}` },
        text || (s.status === "started" ? "" : "(no text)")) : null,
      calls.length ? el("div", { class: "run-calls" }, el("div", { class: "hint" }, "Asks to call:"),
        calls.map((c) => el("div", { class: "run-call" }, el("code", { class: "run-tool" }, c.name), json(c.input)))) : null,
      s.data.error ? el("p", { class: "error" }, s.data.error) : null,
      s.data.usage ? el("p", { class: "hint" },
        `${s.data.usage.input_tokens} tokens in · ${s.data.usage.output_tokens} out` +
        (s.data.stop_reason ? ` · stopped: ${s.data.stop_reason}` : "")) : null,
    ];
  }

  function toolStep(s) {
    const output = s.data.output;
    return [
      callFacts(s.name, s.data),
      s.data.decision ? el("p", { class: "run-decision" }, s.data.decision) : null,
      s.status === "waiting_approval" && !ended ? decisionForm(id) : null,
      output ? [el("div", { class: "hint" }, output.is_error ? "Error" : "Output"),
        el("pre", { class: `run-output${output.is_error ? " bad" : ""}` }, output.text)] : null,
      s.data.error ? el("p", { class: "error" }, s.data.error) : null,
    ];
  }

  function draw(s) {
    const li = el("li", { class: `run-step ${s.kind}${s.status === "waiting_approval" ? " waiting" : ""}`,
      dataset: { seq: s.seq, kind: s.kind, status: s.status } },
      el("div", { class: "row run-step-head" },
        el("span", { class: "run-seq" }, `#${s.seq}`),
        el("strong", {}, s.kind === "model" ? "Model" : "Tool call"),
        el("span", { class: "hint" }, s.name),
        badge(s.status, STEP_BADGE, "run-step-status")),
      (s.kind === "model" ? modelStep(s) : toolStep(s)).flat());
    const old = items.get(s.seq);
    if (old) {
      old.replaceWith(li);
    } else {
      const after = [...items.entries()].filter(([seq]) => seq > s.seq).sort((a, b) => a[0] - b[0])[0];
      list.insertBefore(li, after ? after[1] : null);
    }
    items.set(s.seq, li);
    noSteps.classList.add("hidden");
  }

  function update(seq, change) {
    const s = steps.get(seq) || { seq, kind: "tool", name: "", status: "started", data: {}, live: "" };
    change(s);
    steps.set(seq, s);
    draw(s);
    counts();
  }

  function reset(run) {
    steps.clear();
    items.clear();
    list.replaceChildren();
    setStatus(run.status);
  }

  function handle(event) {
    const seq = event.seq;
    switch (event.type) {
      case "run.created":
        reset(event.run);
        break;
      case "step.replayed":
        update(seq, (s) => Object.assign(s, { kind: event.kind, name: event.name, status: event.status,
          data: event.data || {} }));
        break;
      case "step.started":
        update(seq, (s) => {
          Object.assign(s, { kind: event.kind, name: event.name, status: "started" });
          if (event.input !== undefined) s.data.input = event.input;
        });
        break;
      case "text.delta": {
        const s = steps.get(seq);
        if (!s) break;
        s.live = (s.live || "") + event.text;
        const node = items.get(seq)?.querySelector(".run-step-text");
        if (node) {
          node.classList.remove("muted");
          node.append(event.text);
        }
        break;
      }
      case "step.completed":
        update(seq, (s) => {
          Object.assign(s, { kind: event.kind, name: event.name, status: event.status });
          if (event.message) Object.assign(s.data, { message: event.message, stop_reason: event.stop_reason });
          if (event.output) s.data.output = event.output;
        });
        if (event.kind === "model") stored(seq);  // the event has no usage: the journal has
        break;
      case "approval.required":
        update(seq, (s) => Object.assign(s, { kind: "tool", name: event.tool, status: "waiting_approval",
          data: { ...s.data, input: event.input, class: event.class, why: event.why } }));
        break;
      case "approval.decided":
        update(seq, (s) => {
          s.status = event.approved ? "approved" : "denied";
          s.data.decision = `${s.status} by ${event.by}${event.reason ? `: ${event.reason}` : ""}`;
        });
        break;
      case "run.status":
        setStatus(event.status);
        break;
      case "run.completed":
        setStatus(event.status);
        setEnd(event);
        break;
      default:
        break;
    }
  }

  /** Step `seq` as the journal has it (a model step's token usage is only there). */
  async function stored(seq) {
    try {
      const found = (await api(runPath(id))).steps.find((s) => s.seq === seq);
      if (found && steps.has(seq)) update(seq, (s) => Object.assign(s, { status: found.status, data: found.data }));
    } catch { /* the counts stay as they were */ }
  }

  /** The run as the store has it now: every step redrawn (what a live stream cannot tell, e.g.
   *  the waiting call a cancel closed, is there). */
  async function sync() {
    const run = await api(runPath(id));
    reset(run);
    for (const s of run.steps) handle({ ...s, type: "step.replayed" });
    if (!run.steps.length) noSteps.classList.remove("hidden");
    setEnd(run);
  }

  async function follow() {
    for (let tries = 0; ; tries++) {
      try {
        const response = await api(`${runPath(id)}/events`, { raw: true });
        for await (const data of serverEvents(response)) {
          handle(JSON.parse(data));
          tries = 0;
        }
      } catch (err) {
        if (err.status === 404) break;  // a server that runs no agents now: the record stays
      }
      if (ended) break;
      await new Promise((r) => setTimeout(r, Math.min(1000 * 2 ** tries, 10_000)));
    }
    try {
      await sync();
    } catch (err) {
      toast(err.message, "bad");
    }
  }

  cancel.addEventListener("click", async () => {
    if (!confirm("Cancel this run? A call it waits on is refused, and the run ends.")) return;
    cancel.disabled = true;
    try {
      const run = await api(`${runPath(id)}/cancel`, { method: "POST" });
      setStatus(run.status);
      setEnd(run);
    } catch (err) {
      toast(err.message, "bad");
    }
    cancel.disabled = false;
  });

  follow();
}

// -- start --------------------------------------------------------------------------------------

for (const node of document.querySelectorAll("time[datetime]")) {
  node.textContent = formatDate(node.getAttribute("datetime"));
}
renderAllMarkdown();
if (document.getElementById("start-run")) runsPage();
const run = document.getElementById("run");
if (run) runPage(run);
