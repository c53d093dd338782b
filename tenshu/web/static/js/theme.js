// Light or dark: the system's choice until the person picks one here (kept in localStorage:
// a preference, never a credential).
const root = document.documentElement;
const saved = localStorage.getItem("tenshu-theme");
if (saved === "light" || saved === "dark") apply(saved);

function apply(theme) {
  root.dataset.theme = theme;
  const light = document.getElementById("hljs-light");
  const dark = document.getElementById("hljs-dark");
  if (light && dark) {
    light.media = theme === "light" ? "all" : "not all";
    dark.media = theme === "dark" ? "all" : "not all";
  }
}

function current() {
  if (root.dataset.theme) return root.dataset.theme;
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

document.addEventListener("DOMContentLoaded", () => {
  const toggle = document.getElementById("theme-toggle");
  if (!toggle) return;
  toggle.addEventListener("click", () => {
    const next = current() === "dark" ? "light" : "dark";
    localStorage.setItem("tenshu-theme", next);
    apply(next);
  });
});
