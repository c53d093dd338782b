// The top bar's count of unread notifications, on every page a person is signed in to: one
// small read of /tenshu/v1/inbox (the count comes with the list; limit=1 keeps the list short),
// again whenever the tab comes back into view. The inbox page sets it itself after each change.

const BADGE_MAX = 99;
let changes = 0;  // showUnread calls: a read that started before one is stale when it lands

/** Show `count` unread in the top bar (nothing at 0). */
export function showUnread(count) {
  changes += 1;
  paint(count);
}

function paint(count) {
  const badge = document.getElementById("nav-unread");
  if (!badge) return;
  badge.textContent = count > BADGE_MAX ? `${BADGE_MAX}+` : String(count);
  badge.title = `${count} unread`;
  badge.dataset.count = String(count);
  badge.classList.toggle("hidden", !count);
}

async function load() {
  const before = changes;
  try {
    const response = await fetch("/tenshu/v1/inbox?unread=true&limit=1", { credentials: "same-origin" });
    if (!response.ok) return;  // the page's own script says why, where it matters
    const { unread } = await response.json();
    if (before === changes) paint(unread);
  } catch { /* offline: the badge stays as it was */ }
}

load();
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") load();
});
