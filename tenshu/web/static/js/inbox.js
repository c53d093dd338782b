// The inbox page (web/inbox.py renders its skeleton): the person's notifications, newest first,
// from /tenshu/v1/inbox, with Mark read, Mark all read and Delete, and a filter for the unread
// ones (kept in the address as ?unread=true). Each change ends with a fresh read of the list,
// whose unread count also sets the top bar's badge (nav.js).
// A title, a source or an address goes into the page as text; the body is a model's answer,
// rendered by common.js's sanitizing renderMarkdown (raw HTML in it stays text), and only an
// http(s) address becomes a link.

import { api, el, formatDate, renderMarkdown, toast } from "/static/js/common.js";
import { showUnread } from "/static/js/nav.js";

const BASE = "/tenshu/v1/inbox";
const LIMIT = 100;  // the most the API gives in one read

const list = document.getElementById("inbox-items");
const empty = document.getElementById("no-items");
const more = document.getElementById("inbox-more");
const onlyUnread = document.getElementById("only-unread");
const markAll = document.getElementById("mark-all-read");
let reads = 0;  // refresh() calls: only the latest one's answer is drawn

/** `url` as a link's address when it is http(s); null for anything else (javascript:, data:...). */
function webAddress(url) {
  try {
    const parsed = new URL(url);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

function item(n) {
  const unread = !n.read_at;
  const href = n.url ? webAddress(n.url) : null;
  let body = null;
  if (n.body) {
    body = el("div", { class: "md inbox-body" });
    renderMarkdown(body, n.body);
  }
  return el("li", { class: `inbox-item${unread ? " unread" : ""}`, dataset: { id: n.id } },
    el("div", { class: "row inbox-head" },
      unread ? el("span", { class: "badge live inbox-unread" }, "unread") : null,
      el("strong", { class: "inbox-title" }, n.title),
      el("time", { class: "hint", datetime: n.created_at }, formatDate(n.created_at)),
      n.source ? el("span", { class: "hint inbox-source" }, n.source) : null),
    body,
    el("div", { class: "row inbox-actions" },
      n.run_id ? el("a", { class: "inbox-run", href: `/runs/${encodeURIComponent(n.run_id)}` }, "Open the run") : null,
      href ? el("a", { class: "inbox-url", href, target: "_blank", rel: "noopener noreferrer" }, n.url)
        : n.url ? el("span", { class: "hint inbox-url" }, n.url) : null,
      el("span", { class: "grow" }),
      unread ? el("button", { type: "button", class: "small", dataset: { act: "read" } }, "Mark read") : null,
      el("button", { type: "button", class: "small danger", dataset: { act: "delete" } }, "Delete")));
}

async function refresh() {
  const mine = ++reads;
  let page;
  try {
    page = await api(`${BASE}?limit=${LIMIT}${onlyUnread.checked ? "&unread=true" : ""}`);
  } catch (err) {
    if (mine === reads) empty.textContent = err.message;
    return;
  }
  if (mine !== reads) return;
  list.replaceChildren(...page.data.map(item));
  showUnread(page.unread);
  markAll.disabled = !page.unread;
  empty.textContent = onlyUnread.checked ? "Nothing unread."
    : 'Nothing here yet. A trigger with notify = ["inbox"] leaves its run\'s answer here.';
  empty.classList.toggle("hidden", page.data.length > 0);
  more.textContent = `Showing the newest ${LIMIT}: delete some to see older ones.`;
  more.classList.toggle("hidden", page.data.length < LIMIT);
}

/** POST read for one item; one removed meanwhile (another tab) is no error. */
async function markRead(id) {
  try {
    await api(`${BASE}/${encodeURIComponent(id)}/read`, { method: "POST" });
  } catch (err) {
    if (err.status !== 404) throw err;
  }
}

list.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-act]");
  if (!button) return;
  const id = button.closest(".inbox-item").dataset.id;
  button.disabled = true;
  try {
    if (button.dataset.act === "read") await markRead(id);
    else await api(`${BASE}/${encodeURIComponent(id)}`, { method: "DELETE" });
  } catch (err) {
    toast(err.message, "bad");
  }
  await refresh();
});

markAll.addEventListener("click", async () => {
  markAll.disabled = true;
  try {
    await api(`${BASE}/read`, { method: "POST" });  // every unread one, in one statement
  } catch (err) {
    toast(err.message, "bad");
  }
  await refresh();
});

onlyUnread.checked = new URLSearchParams(location.search).get("unread") === "true";
onlyUnread.addEventListener("change", () => {
  history.replaceState(null, "", onlyUnread.checked ? "?unread=true" : location.pathname);
  refresh();
});
refresh();
