// The memory pages' interactive parts (web/memory.py renders the first view):
//   /memory          make a collection
//   /memory/{name}   upload files (a progress bar each: the upload, then the document's ingest
//                    status polled until ready or failed), delete documents and the collection,
//                    search with each hit's score, the reindex status, shares
//   /memory/chunks/  the chunk's text rendered as Markdown
// Everything goes through /tenshu/v1/memory with the session (common.js: api). Text from
// documents is put in the page as text, or through renderMarkdown (sanitized).

import { api, csrf, el, formatDate, renderAllMarkdown, renderMarkdown, toast } from "/static/js/common.js";

const BASE = "/tenshu/v1/memory";
const POLL_MS = 700;
const STATUS_CLASS = { ready: "good", failed: "bad" };

/** Bytes as Jinja's filesizeformat writes them (decimal units), so both views agree. */
function formatBytes(n) {
  if (n < 1000) return n === 1 ? "1 Byte" : `${n} Bytes`;
  const units = ["kB", "MB", "GB", "TB"];
  let value = n;
  let unit = "";
  for (const u of units) {
    value /= 1000;
    unit = u;
    if (value < 1000) break;
  }
  return `${value.toFixed(1)} ${unit}`;
}

function localTimes(root = document) {
  for (const node of root.querySelectorAll("time[datetime]")) {
    node.textContent = formatDate(node.getAttribute("datetime"));
  }
}

// -- /memory ----------------------------------------------------------------------------------

function collectionsPage() {
  const form = document.getElementById("create-collection");
  const error = document.getElementById("create-error");
  form?.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.classList.add("hidden");
    const data = new FormData(form);
    try {
      const made = await api(`${BASE}/collections`, { method: "POST", body: {
        name: String(data.get("name") || "").trim(),
        description: String(data.get("description") || ""),
        cloud: data.get("cloud") === "on",
      } });
      location.href = `/memory/${encodeURIComponent(made.name)}`;
    } catch (err) {
      error.textContent = err.message;
      error.classList.remove("hidden");
    }
  });
}

// -- /memory/{name} ---------------------------------------------------------------------------

function collectionPage(root) {
  const name = root.dataset.name;
  const owner = root.dataset.owner;
  const ref = root.dataset.ref;
  const writable = root.dataset.writable === "true";
  const query = owner ? `?owner=${encodeURIComponent(owner)}` : "";
  const at = `${BASE}/collections/${encodeURIComponent(name)}`;

  // documents

  const rows = document.getElementById("document-rows");
  const counts = document.getElementById("collection-counts");

  function documentRow(d) {
    const source = el("td", { class: "mem-source" }, d.source,
      d.title && d.title !== d.source ? el("div", { class: "hint" }, d.title) : null);
    const status = el("td", {}, el("span", { class: `badge ${STATUS_CLASS[d.status] || "warn"}` }, d.status),
      d.error ? el("div", { class: "error hint" }, d.error) : null);
    return el("tr", { dataset: { doc: d.id } }, source,
      el("td", { class: "mem-wide" }, d.kind || "–"), status,
      el("td", { class: "num" }, d.chunks), el("td", { class: "num" }, formatBytes(d.bytes)),
      el("td", { class: "mem-wide" }, el("time", { datetime: d.updated_at }, formatDate(d.updated_at))),
      writable ? el("td", {}, el("button", { type: "button", class: "small danger",
        dataset: { deleteDoc: d.id, source: d.source } }, "Delete")) : null);
  }

  async function refreshDocuments() {
    const [list, info] = await Promise.all([
      api(`${at}/documents${query}${query ? "&" : "?"}limit=1000`), api(`${at}${query}`)]);
    rows.replaceChildren(...list.data.map(documentRow));
    document.getElementById("no-documents").classList.toggle("hidden", list.data.length > 0);
    counts.textContent = `${info.documents} documents · ${info.chunks} chunks`;
    refreshIndexes();
  }

  rows.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-delete-doc]");
    if (!button) return;
    if (!confirm(`Delete ${button.dataset.source} and its chunks from ${name}?`)) return;
    button.disabled = true;
    try {
      await api(`${at}/documents/${button.dataset.deleteDoc}`, { method: "DELETE" });
      toast(`Deleted ${button.dataset.source}`);
      await refreshDocuments();
    } catch (err) {
      button.disabled = false;
      toast(err.message, "bad");
    }
  });

  document.getElementById("delete-collection")?.addEventListener("click", async () => {
    if (!confirm(`Delete the collection ${name}, with every document and chunk in it? This cannot be undone.`)) return;
    try {
      await api(at, { method: "DELETE" });
      location.href = "/memory";
    } catch (err) {
      toast(err.message, "bad");
    }
  });

  // uploads: one XMLHttpRequest per file (fetch cannot report upload progress), then the
  // document's status polled until it is ready or failed

  const uploads = document.getElementById("uploads");
  const form = document.getElementById("upload-form");
  form?.addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("upload-files");
    const files = [...input.files];
    if (!files.length) {
      toast("Choose one or more files first");
      return;
    }
    input.value = "";
    Promise.all(files.map(upload)).then(() => refreshDocuments()).catch(() => refreshDocuments());
  });

  function upload(file) {
    const bar = el("progress", { max: 100, value: 0 });
    const state = el("span", { class: "mem-state" }, "uploading…");
    const item = el("li", { class: "mem-upload", dataset: { file: file.name } },
      el("span", { class: "mem-source" }, file.name), bar, state);
    uploads.prepend(item);
    const finish = (text, kind) => {
      state.textContent = text;
      item.classList.add(kind);
    };
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", `${at}/documents`);
      xhr.setRequestHeader("x-csrf-token", csrf);
      xhr.responseType = "json";
      xhr.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) bar.value = Math.round((100 * e.loaded) / e.total);
      });
      xhr.upload.addEventListener("load", () => {
        bar.removeAttribute("value"); // indeterminate while the server indexes it
        state.textContent = "pending…";
      });
      xhr.addEventListener("load", async () => {
        if (xhr.status >= 400) {
          const message = xhr.response?.error?.message || `${xhr.status} ${xhr.statusText}`;
          bar.value = 0;
          finish(`failed: ${message}`, "bad");
          resolve();
          return;
        }
        const doc = await follow(xhr.response, state);
        bar.value = 100;
        if (doc.status === "ready") finish(`ready · ${doc.chunks} chunks`, "good");
        else finish(`failed: ${doc.error || "not indexed"}`, "bad");
        resolve();
      });
      xhr.addEventListener("error", () => {
        finish("failed: the connection broke", "bad");
        resolve();
      });
      const body = new FormData();
      body.append("file", file, file.name);
      xhr.send(body);
    });
  }

  async function follow(doc, state) {
    while (doc.status === "pending" || doc.status === "indexing") {
      state.textContent = `${doc.status}…`;
      await new Promise((r) => setTimeout(r, POLL_MS));
      try {
        doc = await api(`${at}/documents/${doc.id}`);
      } catch (err) {
        return { ...doc, status: "failed", error: err.message };
      }
    }
    return doc;
  }

  // search

  const hits = document.getElementById("hits");
  const searchForm = document.getElementById("search-form");
  searchForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(searchForm);
    const button = searchForm.querySelector("button");
    button.disabled = true;
    hits.replaceChildren(el("li", { class: "muted" }, "Searching…"));
    try {
      const found = await api(`${BASE}/search`, { method: "POST", body: {
        query: String(data.get("query")), collection: ref, k: Number(data.get("k")) } });
      hits.replaceChildren(...(found.hits.length ? found.hits.map(hitItem)
        : [el("li", { class: "muted" }, "Nothing found.")]));
    } catch (err) {
      hits.replaceChildren(el("li", { class: "error" }, err.message));
    } finally {
      button.disabled = false;
    }
  });

  function hitItem(hit, i) {
    const where = [hit.section, hit.page !== null && hit.page !== undefined ? `page ${hit.page}` : null]
      .filter(Boolean).join(" · ");
    const text = el("div", { class: "md mem-hit-text" });
    renderMarkdown(text, hit.text);
    return el("li", { class: "mem-hit", dataset: { chunk: hit.chunk_id } },
      el("div", { class: "row mem-hit-head" },
        el("span", { class: "badge mem-score", title: "fused score: higher is better" },
          `#${i + 1} · ${hit.score.toFixed(4)}`),
        el("a", { href: `/memory/chunks/${hit.chunk_id}`, class: "mem-source" },
          hit.kind === "correction" ? "correction" : hit.source),
        where ? el("span", { class: "hint" }, where) : null),
      text);
  }

  // the reindex status: refreshed after changes, and every few seconds while one is built

  const indexRows = document.getElementById("index-rows");
  let indexTimer = null;

  async function refreshIndexes() {
    clearTimeout(indexTimer);
    let list;
    try {
      list = (await api(`${at}/indexes${query}`)).data;
    } catch {
      return;
    }
    indexRows.replaceChildren(...list.map((i) => el("tr", {},
      el("td", { class: "mem-source" }, i.embedder), el("td", { class: "num mem-wide" }, i.dim ?? "–"),
      el("td", {}, el("span", { class: `badge ${i.live ? "good" : "warn"}` }, i.live ? "live" : i.status)),
      el("td", { class: "num mem-wide" }, i.version),
      el("td", {}, `${i.vectors} / ${i.chunks}`,
        i.live ? null : el("progress", { max: i.chunks || 1, value: i.vectors })))));
    const building = list.some((i) => !i.live);
    document.getElementById("reindex-state").textContent = building
      ? "A new index is being built beside the live one; searches use the live one until it is whole."
      : "No reindex is running.";
    if (building) indexTimer = setTimeout(refreshIndexes, 5000);
  }
  if (indexRows.querySelector("progress")) indexTimer = setTimeout(refreshIndexes, 5000);

  // shares (the owner's)

  const shareList = document.getElementById("share-list");
  const shareForm = document.getElementById("share-form");

  async function setShare(user, shared) {
    await api(`${at}/shares/${encodeURIComponent(user)}`, { method: shared ? "PUT" : "DELETE" });
    const users = (await api(`${at}/shares`)).data;
    shareList.replaceChildren(...users.map((u) => el("li", { dataset: { user: u } }, el("span", {}, u), " ",
      el("button", { type: "button", class: "small link", dataset: { unshare: u } }, "Stop sharing"))));
    document.getElementById("no-shares").classList.toggle("hidden", users.length > 0);
  }

  shareForm?.addEventListener("submit", async (event) => {
    event.preventDefault();
    const user = String(new FormData(shareForm).get("user") || "").trim();
    try {
      await setShare(user, true);
      shareForm.reset();
      toast(`Shared with ${user}`);
    } catch (err) {
      toast(err.message, "bad");
    }
  });
  shareList?.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-unshare]");
    if (!button) return;
    try {
      await setShare(button.dataset.unshare, false);
    } catch (err) {
      toast(err.message, "bad");
    }
  });
}

// -- start ------------------------------------------------------------------------------------

localTimes();
renderAllMarkdown();
if (document.getElementById("create-collection")) collectionsPage();
const collection = document.getElementById("collection");
if (collection) collectionPage(collection);
