// The admin page's actions: users, keys and sessions, through /tenshu/v1 with the session.
//
// The server renders every section; after a change, the sections it touched are fetched again as
// the server renders them (the page's own HTML, parsed, never run) and swapped in, so what is
// shown is always what the server has. Buttons are found by delegation, so swapped-in rows work.
// A new API key appears once, in a dialog; it is in no variable once the dialog closes.

import { api, formatDate, toast } from "/static/js/common.js";

const $ = (id) => document.getElementById(id);

/** Fetch /admin again and replace the named sections with the server's new rendering. */
async function refresh(...ids) {
  const response = await api("/admin", { raw: true });
  if (response.redirected) {  // this browser's session ended: the server sent it to log in
    location.href = response.url;
    return;
  }
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
  for (const id of ids) {
    const next = fresh.getElementById(id);
    if (next) $(id).replaceWith(document.adoptNode(next));
  }
  localTimes();
}

/** Times are rendered in UTC; show them in the reader's zone. */
function localTimes(root = document) {
  for (const node of root.querySelectorAll("time[datetime]:not([data-local])")) {
    node.textContent = formatDate(node.getAttribute("datetime"));
    node.dataset.local = "1";
  }
}

/** Run a change; on failure, say why and show the section as the server has it. */
async function change(what, sections, work) {
  try {
    await work();
    toast(what);
  } catch (error) {
    toast(error.message, "bad");
  }
  await refresh(...sections).catch((error) => toast(error.message, "bad"));
}

/** Ask in a dialog; true when the person confirmed. */
function confirmed(text, okLabel = "Remove") {
  const dialog = $("confirm-dialog");
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

const userPath = (name) => `/tenshu/v1/users/${encodeURIComponent(name)}`;

// -- users ---------------------------------------------------------------------------------

document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (form.id === "add-user") {
    event.preventDefault();
    const data = new FormData(form);
    const body = { name: data.get("name").trim(), role: data.get("role") };
    if (data.get("password")) body.password = data.get("password");
    await change(`Added ${body.name}`, ["admin-users", "admin-keys"],
      async () => { await api("/tenshu/v1/users", { method: "POST", body }); form.reset(); });
  } else if (form.id === "add-key") {
    event.preventDefault();
    const data = new FormData(form);
    const body = { name: data.get("name").trim(), user: data.get("user"),
      private: data.get("private") === "on" };
    let made = null;
    try {
      made = await api("/tenshu/v1/keys", { method: "POST", body });
    } catch (error) {
      toast(error.message, "bad");
      return;
    }
    showKey(made);
    await refresh("admin-keys", "admin-users").catch((error) => toast(error.message, "bad"));
  }
});

document.addEventListener("change", async (event) => {
  const select = event.target.closest("select[data-field]");
  const row = select?.closest("tr[data-user]");
  if (!row) return;
  const name = row.dataset.user;
  const field = select.dataset.field;
  await change(`${name}: ${field} is now ${select.value}`, ["admin-users"],
    () => api(userPath(name), { method: "PATCH", body: { [field]: select.value } }));
});

async function removeUser(row, button) {
  const name = row.dataset.user;
  if (!(await confirmed(button.dataset.confirm, `Remove ${name}`))) return;
  await change(`Removed ${name}`, ["admin-users", "admin-keys", "admin-sessions"],
    () => api(userPath(name), { method: "DELETE" }));
}

function setPassword(row) {
  const name = row.dataset.user;
  const dialog = $("password-dialog");
  const form = $("password-form");
  form.reset();
  $("password-title").textContent = `Set ${name}'s password`;
  form.onsubmit = async (event) => {
    event.preventDefault();
    const password = form.elements.password.value;
    dialog.close();
    await change(`${name} has a new password`, ["admin-users", "admin-sessions"],
      () => api(userPath(name), { method: "PATCH", body: { password } }));
  };
  dialog.showModal();
}

$("password-cancel")?.addEventListener("click", () => $("password-dialog").close());

// -- keys ----------------------------------------------------------------------------------

function showKey(made) {
  const dialog = $("new-key-dialog");
  $("new-key-title").textContent = `New key “${made.name}” for ${made.user}`;
  $("new-key-value").textContent = made.key;
  dialog.addEventListener("close", () => {
    $("new-key-value").textContent = "";  // shown once: gone from the page when closed
    $("add-key").reset();
  }, { once: true });
  dialog.showModal();
}

$("copy-key")?.addEventListener("click", async () => {
  const value = $("new-key-value");
  try {
    await navigator.clipboard.writeText(value.textContent);
    toast("Copied");
  } catch {
    // no clipboard here (a page not on loopback or HTTPS): select it for copying by hand
    getSelection().selectAllChildren(value);
    toast("Selected: copy it with Ctrl+C (⌘C)");
  }
});

async function revokeKey(button) {
  const name = button.dataset.name;
  if (!(await confirmed(`Revoke the key “${name}”? Programs using it are refused from now on.`,
    "Revoke"))) return;
  const prefix = button.closest("tr").dataset.key;
  await change(`Revoked ${name}`, ["admin-keys"],
    () => api(`/tenshu/v1/keys/${encodeURIComponent(prefix)}`, { method: "DELETE" }));
}

// -- sessions ------------------------------------------------------------------------------

async function revokeSession(row) {
  const id = row.dataset.session;
  if (row.dataset.current && !(await confirmed(
    "This is the session you are using: ending it logs you out here.", "Log out"))) return;
  await change(`Ended ${row.dataset.user}'s session`, ["admin-sessions"],
    () => api(`/tenshu/v1/sessions/${encodeURIComponent(id)}`, { method: "DELETE" }));
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const row = button.closest("tr");
  const actions = {
    "remove-user": () => removeUser(row, button),
    password: () => setPassword(row),
    "revoke-key": () => revokeKey(button),
    "revoke-session": () => revokeSession(row),
  };
  actions[button.dataset.action]?.();
});

localTimes();
