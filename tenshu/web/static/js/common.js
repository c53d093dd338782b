// What every page's script shares: calling the API with the session, rendering Markdown safely,
// building DOM nodes, and small messages.
//
// The session cookie is HttpOnly: scripts never see it, and nothing is kept in localStorage.
// Changes carry the page's CSRF token (the server refuses them without it).

import { marked } from "/static/vendor/marked.esm.js";
import DOMPurify from "/static/vendor/purify.esm.js";
import hljs from "/static/vendor/highlight.esm.min.js";

export const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";

/** An error from the API, with its status and the message the server gave. */
export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** fetch() against this server with the session: JSON in and out, errors as ApiError.
 *  A 401 (the session ended) sends the browser to the login page. */
export async function api(path, { method = "GET", body, headers = {}, signal, raw = false } = {}) {
  const init = { method, headers: { ...headers }, signal, credentials: "same-origin" };
  if (method !== "GET" && method !== "HEAD") init.headers["x-csrf-token"] = csrf;
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (raw && response.ok) return response;
  if (!response.ok) throw await apiError(response);
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

export async function apiError(response) {
  let body = null;
  let message = `${response.status} ${response.statusText}`;
  try {
    body = await response.json();
    message = body?.error?.message || body?.error || body?.detail || message;
  } catch { /* not JSON */ }
  if (response.status === 401) {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
  }
  return new ApiError(response.status, String(message), body);
}

/** The `data:` payloads of a server-sent-event stream (an OpenAI chat stream's chunks, as text,
 *  and its closing "[DONE]"), as they arrive. */
export async function* serverEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 1);
      if (line.startsWith("data:")) yield line.slice(5).trim();
    }
  }
}

/** A DOM element: el("a", {href: "/x", class: "y"}, "text", child, ...). Text is always text. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function toast(message, kind = "") {
  const box = document.getElementById("toasts");
  if (!box) return;
  const item = el("div", { class: `toast ${kind}` }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === "bad" ? 8000 : 4000);
}

// -- Markdown ---------------------------------------------------------------------------------
// A model's answer is text written by something we do not trust. It is rendered as Markdown,
// but: raw HTML in it is shown as text, images become a plain label with their address (no
// request leaves the machine), links keep only http(s) and mailto addresses and open in a new
// tab without a referrer, and DOMPurify then removes anything executable that got through.
// The page's Content-Security-Policy is the last line: no inline script, no outside images.

const escapeHtml = (text) => text.replace(/[&<>"']/g, (c) => (
  { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

marked.use({
  gfm: true,
  breaks: false,
  renderer: {
    html({ text }) { return escapeHtml(text); },
    image({ href, text }) {
      const label = text ? `image: ${text}` : "image";
      return `<span class="inert-image">[${escapeHtml(label)} — ${escapeHtml(href || "")}]</span>`;
    },
  },
});

const ALLOWED_TAGS = ["a", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4",
  "h5", "h6", "hr", "i", "input", "li", "ol", "p", "pre", "s", "span", "strong", "sub", "sup",
  "table", "tbody", "td", "th", "thead", "tr", "ul"];
const ALLOWED_ATTR = ["href", "title", "class", "type", "checked", "disabled", "align", "start"];

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    const href = node.getAttribute("href") || "";
    if (!/^(https?:|mailto:|#)/i.test(href)) node.removeAttribute("href");
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
  if (node.tagName === "INPUT" && node.getAttribute("type") !== "checkbox") node.remove();
});

/** Markdown text to sanitized HTML. */
export function markdownHtml(text) {
  const html = marked.parse(text || "", { async: false });
  return DOMPurify.sanitize(html, { ALLOWED_TAGS, ALLOWED_ATTR, ALLOW_DATA_ATTR: false });
}

/** Render `text` as Markdown into `node` (code highlighted). */
export function renderMarkdown(node, text) {
  node.innerHTML = markdownHtml(text);
  for (const block of node.querySelectorAll("pre code")) {
    try { hljs.highlightElement(block); } catch { /* an unknown language stays plain */ }
  }
}

/** Every `.md` element of the page that the server filled with raw text, rendered. */
export function renderAllMarkdown(root = document) {
  for (const node of root.querySelectorAll(".md[data-raw]")) {
    renderMarkdown(node, node.textContent);
    node.removeAttribute("data-raw");
  }
}

export function formatMs(ms) {
  if (ms === null || ms === undefined) return "–";
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}

export function formatDate(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}
