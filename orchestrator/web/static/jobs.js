// The jobs list: newest first, polled every two seconds (one small request; a stream per job
// would hold a connection for each). Rows are updated in place, so focus and the keyboard
// position survive each poll.
import { api } from "./api.js";
import { ProgressView } from "./progress.js";
import { STATUSES, duration, errorBox, h, isActive, packageName, statusBadge, toast, when } from "./util.js";

const POLL_MS = 2000;
const PAGE = 100;

export async function cancelJob(id) {
  try {
    const job = await api(`/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" });
    toast(`Job ${id.slice(0, 8)} ${job.status}`);
    return job;
  } catch (error) {
    toast(`Cancel refused: ${error.message}`);
    return null;
  }
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

export function jobsPage(main, signal) {
  const params = new URLSearchParams(location.search);
  const filter = h(
    "select",
    { id: "status-filter", name: "status" },
    h("option", { value: "" }, "all"),
    STATUSES.map((s) => h("option", { value: s }, s.replace("_", " "))),
  );
  filter.value = params.get("status") || "";
  const count = h("p", { class: "muted", "aria-live": "polite" });
  const tbody = h("tbody");
  const problem = h("div");
  const table = h(
    "table",
    { class: "jobs" },
    h("caption", { class: "visually-hidden" }, "Jobs, newest first"),
    h(
      "thead",
      {},
      h("tr", {},
        ["Status", "Job", "Package", "Variant", "Created", "Duration"].map((t) =>
          h("th", { scope: "col" }, t)),
        h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions"))),
    ),
    tbody,
  );
  main.append(
    h("div", { class: "heading" },
      h("h1", {}, "Jobs"),
      h("div", { class: "filter" }, h("label", { for: "status-filter" }, "Status"), filter),
      h("a", { class: "button primary", href: "/submit" }, "Submit a build")),
    problem,
    count,
    h("div", { class: "scroll-x" }, table),
  );

  const rows = new Map();

  function row(job) {
    let r = rows.get(job.id);
    if (!r) {
      const cells = Array.from({ length: 7 }, () => h("td"));
      cells[1].append(h("a", { href: `/jobs/${job.id}`, class: "mono" }, job.id.slice(0, 12)));
      // The package links to the job too: narrow screens hide the id column.
      cells[2].append(h("a", { href: `/jobs/${job.id}` }));
      // Duration: the time so far, and a running job's progress bar when it has an estimate.
      const progress = new ProgressView({ label: `Progress of job ${job.id.slice(0, 12)}` });
      cells[5].append(h("span"), " ", progress.el);
      r = { tr: h("tr", { "data-job": job.id }, cells), cells, status: null, active: null, progress };
      rows.set(job.id, r);
    }
    const [status, , pkg, variant, created, took, action] = r.cells;
    if (r.status !== job.status) {
      status.replaceChildren(statusBadge(job.status));
      r.status = job.status;
    }
    setText(pkg.firstChild, packageName(job));
    setText(variant, job.variant || "");
    setText(created, when(job.created_at));
    setText(took.firstChild, duration(job));
    r.progress.update(job);
    const active = isActive(job.status);
    if (r.active !== active) {
      // A keyboard user's focus must not fall to <body> with the Cancel that held it.
      const hadFocus = action.contains(document.activeElement);
      action.replaceChildren(
        active
          ? h("button", {
              type: "button",
              class: "danger",
              "aria-label": `Cancel job ${job.id.slice(0, 12)}`,
              // aria-disabled, not disabled: a disabled button drops the keyboard focus.
              onclick: async (event) => {
                const button = event.currentTarget;
                if (button.getAttribute("aria-disabled")) return;
                button.setAttribute("aria-disabled", "true");
                await cancelJob(job.id);
                button.removeAttribute("aria-disabled");
                refresh();
              },
            }, "Cancel")
          : "",
      );
      r.active = active;
      if (hadFocus && !active) pkg.firstChild.focus();
    }
    return r.tr;
  }

  let timer = null;
  let busy = false;
  let again = false;
  // One poll at a time: a refresh asked for meanwhile runs right after it.
  async function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    clearTimeout(timer);
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (filter.value) query.set("status", filter.value);
    try {
      const list = await api(`/v1/jobs?${query}`);
      if (signal.aborted) return;
      problem.replaceChildren();
      const seen = new Set();
      const wanted = list.jobs.map((job) => {
        seen.add(job.id);
        return row(job);
      });
      for (const id of rows.keys()) if (!seen.has(id)) rows.delete(id);
      // Reorder only when the order changed, so a row with focus is not moved needlessly.
      const current = [...tbody.children];
      if (current.length !== wanted.length || current.some((tr, i) => tr !== wanted[i])) {
        tbody.replaceChildren(...wanted);
      }
      setText(count, list.total
        ? `${list.total} job${list.total === 1 ? "" : "s"}${list.total > PAGE ? `, newest ${PAGE} shown` : ""}`
        : "No jobs yet.");
    } catch (error) {
      if (signal.aborted) return;
      problem.replaceChildren(errorBox(error));
    }
    busy = false;
    if (signal.aborted) return;
    if (again) {
      again = false;
      refresh();
    } else {
      timer = setTimeout(refresh, POLL_MS);
    }
  }

  filter.addEventListener("change", () => {
    const url = new URL(location.href);
    if (filter.value) url.searchParams.set("status", filter.value);
    else url.searchParams.delete("status");
    history.replaceState(null, "", url);
    rows.clear();
    refresh();
  });
  // Progress bars move on between polls.
  const stepper = setInterval(() => { for (const r of rows.values()) r.progress.tick(); }, 1000);
  signal.addEventListener("abort", () => {
    clearTimeout(timer);
    clearInterval(stepper);
  });
  refresh();
}
