// The dashboard's two interactive parts; the charts themselves are drawn by the server.
//  - the explorer's "Show more": the next page of requests from /tenshu/v1/requests, appended
//    as rows like the server's (text only: nothing from the API becomes HTML);
//  - an admin's user picker shows the chosen user's numbers as soon as it changes.

import { api, el, toast } from "/static/js/common.js";

const more = document.getElementById("more-requests");
const rows = document.getElementById("request-rows");
const admin = rows?.dataset.admin === "true";

function when(iso) {
  // the server's format, "2026-01-02 03:04:05 UTC"
  return iso.slice(0, 19).replace("T", " ") + " UTC";
}

function ms(value) {
  if (value === null || value === undefined) return "-";
  if (value >= 1000) return `${(value / 1000).toPrecision(3)} s`;
  return value < 10 ? `${value.toPrecision(3)} ms` : `${Math.round(value)} ms`;
}

function row(r) {
  const ok = r.status < 400;
  return el("tr", {},
    el("td", {}, el("a", { href: `/traces/${encodeURIComponent(r.request_id)}`, title: r.request_id },
      when(r.ts))),
    el("td", {}, r.routed || r.model || "-"),
    el("td", {}, r.backend || "none", r.fallbacks ? " " : "",
      r.fallbacks ? el("span", { class: "badge warn" },
        `${r.fallbacks} fallback${r.fallbacks === 1 ? "" : "s"}`) : ""),
    el("td", {}, el("span", { class: `badge ${ok ? "good" : "bad"}`, title: r.error_kind || undefined },
      ok ? String(r.status) : `${r.status} ${r.error_kind || ""}`)),
    el("td", { class: "num" }, ms(r.duration_ms)),
    el("td", { class: "num" }, `${r.input_tokens} / ${r.output_tokens}`),
    admin ? el("td", {}, r.user || "-") : "");
}

more?.addEventListener("click", async () => {
  more.disabled = true;
  const query = new URLSearchParams({ limit: "20", after: more.dataset.after });
  if (more.dataset.user) query.set("user", more.dataset.user);
  try {
    const page = await api(`/tenshu/v1/requests?${query}`);
    rows.append(...page.data.map(row));
    if (page.has_more && page.last_id) {
      more.dataset.after = page.last_id;
      more.disabled = false;
    } else {
      more.remove();
    }
  } catch (error) {
    toast(`Could not load more requests: ${error.message}`, "bad");
    more.disabled = false;
  }
});

document.getElementById("dash-user-pick")?.addEventListener("change", (event) => {
  event.target.form.requestSubmit();
});
