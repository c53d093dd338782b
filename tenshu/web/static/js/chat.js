// The chat page: send a message and stream its answer, stop it, regenerate or edit and resend,
// rate or correct an answer, rename, delete. Everything goes through the public API with the
// session: /v1/chat/completions (streamed), /tenshu/v1/conversations and /tenshu/v1/feedback.
//
// The conversation is kept by the server: each request names it (x-tenshu-conversation) and
// sends only the new message; a regenerate or an edit names the turn it answers again
// (x-tenshu-rewind). Where the person's recording is off, no conversation comes back, and the
// page sends the whole history itself.

import {
  api, el, renderAllMarkdown, renderMarkdown, serverEvents, toast,
} from "./common.js";

const $ = (id) => document.getElementById(id);
const root = $("chat");
const messages = $("messages");
const prompt = $("prompt");
const state = {
  conversation: root.dataset.conversation || null,
  running: null, // the answer streaming now: {controller}
  lastSystem: $("system").value.trim(),
  local: [], // the history, when the server keeps none
  turns: new Map(), // turn id -> {user: [texts], answer}
};

// What the server rendered, before Markdown replaces the raw text.
for (const li of messages.querySelectorAll(".turn")) {
  state.turns.set(li.dataset.turn, {
    user: [...li.querySelectorAll(".message.user .md")].map((n) => n.textContent),
    answer: li.querySelector(".answer")?.textContent || "",
  });
}
renderAllMarkdown();
scrollToEnd();

// -- sending and streaming ----------------------------------------------------------------------

async function ask(text, { rewind = null } = {}) {
  if (state.running || !text.trim()) return;
  // marks for benchmarks/web.py: sent, response headers, first delta read, first delta painted
  performance.clearMarks();
  performance.mark("tenshu-send");
  $("empty-hint")?.remove();
  const model = $("model").value;
  const system = $("system").value.trim();
  const body = { model, stream: true, stream_options: { include_usage: true }, messages: [] };
  if (system && (system !== state.lastSystem || !state.conversation || rewind)) {
    body.messages.push({ role: "system", content: system });
  }
  body.messages.push({ role: "user", content: text });
  const headers = { "x-tenshu-conversation": state.conversation || "new" };
  if (rewind) headers["x-tenshu-rewind"] = rewind;
  if (!state.conversation && state.local.length) {
    body.messages = [...(system ? [{ role: "system", content: system }] : []), ...state.local,
      { role: "user", content: text }];
  }
  const memory = $("memory").value.trim();
  if (memory) headers["x-tenshu-memory"] = memory;

  const view = turnView(text, model);
  messages.append(view.li);
  scrollToEnd();
  const controller = new AbortController();
  state.running = { controller };
  busy(true);
  let answer = "";
  let thinking = "";
  let painted = false;
  let frame = 0;
  const paint = () => {
    frame = 0;
    if (thinking) renderMarkdown(view.thinking(), thinking);
    renderMarkdown(view.answer, answer);
    if (!painted && answer) {
      painted = true;
      performance.mark("tenshu-first-token");
    }
    scrollToEnd();
  };
  try {
    performance.mark("tenshu-fetch");
    const response = await api("/v1/chat/completions", {
      method: "POST", body, headers, signal: controller.signal, raw: true });
    performance.mark("tenshu-response");
    adopt(response, view, text);
    for await (const data of serverEvents(response)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message || "the answer failed");
      if (chunk.sources?.length) view.sources.replaceWith(sourcesList(chunk.sources));
      const delta = chunk.choices?.[0]?.delta || {};
      if (delta.reasoning_content) {  // a thinking model's reasoning, shown folded
        thinking += delta.reasoning_content;
        if (!frame) frame = requestAnimationFrame(paint);
      }
      if (delta.content) {
        if (!answer) performance.mark("tenshu-first-delta");
        answer += delta.content;
        if (!frame) frame = requestAnimationFrame(paint);
      }
    }
    if (frame) cancelAnimationFrame(frame);
    paint();
    if (!answer) view.answer.append(el("span", { class: "muted" }, "(no text)"));
    finish(view, text, answer);
  } catch (error) {
    if (frame) cancelAnimationFrame(frame);
    if (answer) paint();
    if (error.name === "AbortError") {
      view.answer.append(el("p", { class: "muted stopped" }, "(stopped)"));
    } else {
      view.answer.append(el("p", { class: "error" }, error.message));
    }
    view.li.classList.add("unfinished");
  } finally {
    state.running = null;
    busy(false);
  }
}

/** What the response's headers say: the conversation, the turn, who served it. */
function adopt(response, view, text) {
  const conversation = response.headers.get("x-tenshu-conversation");
  const turn = response.headers.get("x-tenshu-turn");
  const request = response.headers.get("request-id");
  if (turn) view.li.dataset.turn = turn;
  if (request) view.li.dataset.request = request;
  const route = response.headers.get("x-tenshu-route");
  const backend = response.headers.get("x-tenshu-backend");
  const adapter = response.headers.get("x-tenshu-adapter");
  const fallbacks = Number(response.headers.get("x-tenshu-fallbacks") || 0);
  view.meta.replaceChildren(...[  // the DOM's replaceChildren does not flatten, as el() does
    el("span", { class: "badge", title: "route" }, route || view.li.dataset.model),
    " ", el("span", { class: "badge", title: "backend" }, backend || "–"),
    adapter ? [" ", el("span", { class: "badge", title: "adapter version" }, adapter)] : [],
    fallbacks ? [" ", el("span", { class: "badge warn", title: "candidates that failed first" },
      `${fallbacks} fallback${fallbacks > 1 ? "s" : ""}`)] : [],
    " ", request ? el("a", { href: `/traces/${request}`, class: "trace-link" }, "trace") : ""].flat());
  if (conversation && conversation !== state.conversation) {
    const isNew = !state.conversation;
    state.conversation = conversation;
    root.dataset.conversation = conversation;
    history.replaceState(null, "", `/chat/${conversation}`);
    if (isNew) listed(conversation, text);
  }
}

function finish(view, text, answer) {
  const turn = view.li.dataset.turn;
  state.lastSystem = $("system").value.trim();
  if (turn) {
    state.turns.set(turn, { user: [text], answer });
    view.actions.classList.remove("hidden");
  } else {
    state.local.push({ role: "user", content: text }, { role: "assistant", content: answer });
  }
}

function stop() {
  state.running?.controller.abort();
}

function busy(on) {
  $("send").disabled = on;
  $("stop").classList.toggle("hidden", !on);
  $("send").classList.toggle("hidden", on);
}

// -- building a turn ----------------------------------------------------------------------------

function turnView(text, model) {
  const user = el("div", { class: "md" });
  renderMarkdown(user, text);
  const answer = el("div", { class: "md answer" });
  let thought = null;
  const thinking = () => {  // made when the first piece of reasoning arrives
    if (!thought) {
      thought = el("div", { class: "md" });
      answer.before(el("details", { class: "thinking" }, el("summary", {}, "Thinking"), thought));
    }
    return thought;
  };
  const meta = el("div", { class: "meta" }, el("span", { class: "muted" }, "…"));
  const sources = el("span");
  const actions = answerActions();
  actions.classList.add("hidden");
  const li = el("li", { class: "turn", dataset: { model } },
    el("div", { class: "message user" }, user,
      el("div", { class: "actions" }, el("button", { type: "button", class: "small link edit-user" }, "Edit"))),
    el("div", { class: "message assistant" }, answer, meta, sources, actions));
  return { li, answer, meta, sources, actions, thinking };
}

function answerActions() {
  return $("answer-actions").content.firstElementChild.cloneNode(true);
}

function sourcesList(sources) {
  return el("ul", { class: "sources" }, sources.map((s, i) => el("li", {},
    el("a", { href: `/memory/chunks/${s.chunk_id}`, target: "_blank", rel: "noopener", dataset: { chunk: s.chunk_id } },
      `[${i + 1}] ${s.title || s.source || `chunk ${s.chunk_id}`}${s.section ? ` · ${s.section}` : ""}${s.page ? ` · p. ${s.page}` : ""}`),
    s.collection ? [" ", el("span", { class: "muted" }, `(${s.collection})`)] : [])));
}

function listed(id, text) {
  const list = $("conversation-list");
  list.querySelector(".empty")?.remove();
  for (const li of list.querySelectorAll(".current")) li.classList.remove("current");
  const title = text.split(/\s+/).join(" ").slice(0, 80) || "New conversation";
  list.prepend(el("li", { class: "current", dataset: { id } }, el("a", { href: `/chat/${id}`, class: "title" }, title)));
  $("conversation-title").textContent = title;
  document.title = `${title} · tenshu`;
  $("conversation-actions").classList.remove("hidden");
  $("export-md").href = `/tenshu/v1/conversations/${id}/export?format=markdown`;
  $("export-json").href = `/tenshu/v1/conversations/${id}/export?format=json`;
}

function scrollToEnd() {
  messages.lastElementChild?.scrollIntoView({ block: "end" });
}

// -- answering again ----------------------------------------------------------------------------

/** Take a turn and every turn after it off the page (the server keeps them off the path). */
function cut(li) {
  while (li.nextElementSibling) li.nextElementSibling.remove();
  li.remove();
}

function regenerate(li) {
  const turn = li.dataset.turn;
  const said = state.turns.get(turn);
  if (!turn || !said || state.running) return;
  cut(li);
  ask(said.user.join("\n\n"), { rewind: turn });
}

function editUser(li) {
  const turn = li.dataset.turn;
  const said = state.turns.get(turn);
  if (!turn || !said || state.running || li.querySelector(".editing")) return;
  const box = el("textarea", { rows: 3, class: "editing" });
  box.value = said.user.join("\n\n");
  const send = el("button", { type: "button", class: "primary small" }, "Send");
  const cancel = el("button", { type: "button", class: "small" }, "Cancel");
  const form = el("div", { class: "edit-form" }, box, el("div", { class: "row" }, send, cancel));
  const message = li.querySelector(".message.user");
  message.classList.add("hidden");
  message.after(form);
  box.focus();
  cancel.addEventListener("click", () => { form.remove(); message.classList.remove("hidden"); });
  send.addEventListener("click", () => { cut(li); ask(box.value, { rewind: turn }); });
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); send.click(); }
  });
}

// -- feedback -----------------------------------------------------------------------------------

async function rate(li, rating) {
  const dialog = $("rate-dialog");
  $("rate-title").textContent = rating > 0 ? "What was good?" : "What was wrong?";
  $("rate-reason").value = "";
  dialog.showModal();
  const choice = await closed(dialog);
  if (choice !== "save") return;
  const reason = $("rate-reason").value.trim();
  try {
    await api("/tenshu/v1/feedback", { method: "POST", body: {
      kind: "rating", turn_id: li.dataset.turn, rating, text: reason || null } });
    for (const button of li.querySelectorAll(".rate")) {
      button.classList.toggle("on", Number(button.dataset.rating) === rating);
    }
    toast("Thanks: your rating is kept.");
  } catch (error) {
    toast(error.message, "bad");
  }
}

async function correct(li) {
  const said = state.turns.get(li.dataset.turn);
  const dialog = $("correct-dialog");
  $("correct-text").value = said?.answer || "";
  dialog.showModal();
  if (await closed(dialog) !== "save") return;
  const text = $("correct-text").value.trim();
  if (!text) return;
  try {
    await api("/tenshu/v1/feedback", { method: "POST", body: {
      kind: "correction", turn_id: li.dataset.turn, text } });
    li.querySelector(".correction")?.remove();
    const shown = el("div", { class: "md" });
    renderMarkdown(shown, text);
    li.querySelector(".answer").after(el("div", { class: "correction" },
      el("span", { class: "badge good" }, "your correction"), shown));
    toast("Your correction is kept.");
  } catch (error) {
    toast(error.message, "bad");
  }
}

function closed(dialog) {
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue), { once: true });
  });
}

async function copy(li) {
  const said = state.turns.get(li.dataset.turn);
  const text = said?.answer ?? li.querySelector(".answer").innerText;
  try {
    await navigator.clipboard.writeText(text);
    toast("Copied.");
  } catch {
    toast("The browser did not allow copying here.", "bad");
  }
}

// -- the conversation ---------------------------------------------------------------------------

async function rename() {
  const dialog = $("rename-dialog");
  $("rename-title").value = $("conversation-title").textContent;
  dialog.showModal();
  if (await closed(dialog) !== "save") return;
  const title = $("rename-title").value.trim();
  if (!title) return;
  try {
    const renamed = await api(`/tenshu/v1/conversations/${state.conversation}`, {
      method: "PATCH", body: { title } });
    $("conversation-title").textContent = renamed.title;
    const item = $("conversation-list").querySelector(`li[data-id="${state.conversation}"] .title`);
    if (item) item.textContent = renamed.title;
    document.title = `${renamed.title} · tenshu`;
  } catch (error) {
    toast(error.message, "bad");
  }
}

async function remove() {
  if (!confirm("Delete this conversation, its answers and the feedback on them?")) return;
  try {
    await api(`/tenshu/v1/conversations/${state.conversation}`, { method: "DELETE" });
    location.href = "/chat";
  } catch (error) {
    toast(error.message, "bad");
  }
}

// -- wiring -------------------------------------------------------------------------------------

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = prompt.value;
  if (!text.trim() || state.running) return;
  prompt.value = "";
  ask(text);
});
prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && state.running) {
    event.preventDefault();
    stop();
  }
});
$("stop").addEventListener("click", stop);
$("model").addEventListener("change", () => { $("model-shown").textContent = $("model").value; });
$("rename").addEventListener("click", rename);
$("delete").addEventListener("click", remove);
$("open-list").addEventListener("click", () => document.body.classList.add("show-list"));
$("close-list").addEventListener("click", () => document.body.classList.remove("show-list"));
messages.addEventListener("click", (event) => {
  const button = event.target.closest("button");
  const li = event.target.closest(".turn");
  if (!button || !li) return;
  if (button.classList.contains("rate")) rate(li, Number(button.dataset.rating));
  else if (button.classList.contains("edit-answer")) correct(li);
  else if (button.classList.contains("regenerate")) regenerate(li);
  else if (button.classList.contains("edit-user")) editUser(li);
  else if (button.classList.contains("copy")) copy(li);
});
