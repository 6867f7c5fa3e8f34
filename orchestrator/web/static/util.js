// Small helpers for building the page. Text always goes in as text nodes, never as markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const STATUSES = [
  "queued", "running", "succeeded", "failed", "cancelled", "timed_out", "interrupted",
];
const ICONS = {
  queued: "◷", running: "▶", succeeded: "✔", failed: "✖",
  cancelled: "⊘", timed_out: "⏱", interrupted: "⚠",
};

export function isActive(status) {
  return status === "queued" || status === "running";
}

export function statusBadge(status) {
  return h(
    "span",
    { class: `badge status-${status}` },
    h("span", { "aria-hidden": "true" }, ICONS[status] || "•"),
    " ",
    status.replace("_", " "),
  );
}

export function duration(job) {
  if (!job.started_at) return "";
  const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
  return seconds((end - Date.parse(job.started_at)) / 1000);
}

// A span of time as people read it: 5s, 3m 4s, 1h 5m.
export function seconds(total) {
  let s = Math.max(0, Math.round(total));
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  s %= 60;
  if (hours) return `${hours}h ${minutes}m`;
  if (minutes) return `${minutes}m ${s}s`;
  return `${s}s`;
}

export function when(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function packageName(job) {
  if (!job.pkgname) return job.operation;
  return job.pkgver ? `${job.pkgname} ${job.pkgver}` : job.pkgname;
}

let toastTimer = null;

export function toast(text) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.classList.add("shown");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.remove("shown"), 5000);
}

// An ApiError as one readable paragraph (plus makepkg's problems, when it named them).
export function errorBox(error) {
  const box = h("div", { class: "error", role: "alert" });
  const body = error.body || {};
  const where = body.line ? ` (PKGBUILD line ${body.line})` : "";
  box.append(h("p", {}, h("strong", {}, error.status ? `${error.status} ` : ""), error.message + where));
  const problems = (body.problems || []).filter((p) => p !== error.message);
  if (problems.length) box.append(h("ul", {}, problems.map((p) => h("li", {}, h("pre", {}, p)))));
  return box;
}
