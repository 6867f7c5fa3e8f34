// One job at /jobs/{id}: its record, a live log (replay, then live), its end, its packages
// and what vouches for them (trust.js).
import { api, download } from "./api.js";
import { LifeCharts } from "./charts.js";
import { cancelJob } from "./jobs.js";
import { LogView } from "./log.js";
import { ProgressView } from "./progress.js";
import { follow } from "./sse.js";
import { TrustView } from "./trust.js";
import {
  duration, errorBox, h, isActive, packageName, seconds, statusBadge, toast, when,
} from "./util.js";

function field(dl, name, value) {
  if (value === null || value === undefined || value === "") return;
  dl.append(h("dt", {}, name), h("dd", {}, value));
}

function cacheText(cache) {
  if (!cache) return "";
  if (!cache.used) return `not used${cache.why ? `: ${cache.why}` : ""}`;
  return `${cache.key || ""} (${cache.warm ? "warm" : "cold"})`;
}

export function jobPage(main, signal, id) {
  const title = h("h1", {}, "Job ", h("span", { class: "mono" }, id.slice(0, 12)));
  const status = h("span", { id: "job-status" });
  const cancel = h("button", { type: "button", class: "danger", id: "cancel", hidden: true }, "Cancel");
  const meta = h("dl", { class: "meta" });
  const srcinfo = h("pre", { class: "srcinfo" });
  const srcinfoBox = h("details", { hidden: true }, h("summary", {}, ".SRCINFO"), srcinfo);
  const ending = h("div", { id: "ending", role: "status", "aria-live": "polite", tabindex: "-1" });
  const artifacts = h("ul", { class: "artifacts" });
  const artifactsBox = h("section", { "aria-labelledby": "artifacts-title", hidden: true },
    h("h2", { id: "artifacts-title" }, "Packages"), artifacts);
  const pre = h("pre", { id: "log", class: "log", tabindex: "0", "aria-label": "Build log" });
  const lineCount = h("span", { class: "muted", id: "log-lines" });
  const streamState = h("span", { class: "muted", id: "stream-state" });
  const jump = h("button", { type: "button", hidden: true, id: "jump" }, "↓ Follow the end");
  const problem = h("div");
  const progress = new ProgressView({ id: "job-progress", label: "Progress of this job" });
  const charts = new LifeCharts();
  const trust = new TrustView(() => load());

  main.append(
    h("div", { class: "heading" }, title, status, cancel),
    progress.el,
    problem,
    ending,
    h("section", { "aria-labelledby": "details-title" },
      h("h2", { id: "details-title", class: "visually-hidden" }, "Details"), meta, srcinfoBox),
    artifactsBox,
    trust.section,
    charts.section,
    h("section", { "aria-labelledby": "log-title" },
      h("div", { class: "log-head" },
        h("h2", { id: "log-title" }, "Log"), lineCount, streamState, jump),
      pre),
  );

  const log = new LogView(pre, lineCount);
  log.onFollowChange = (following) => { jump.hidden = following; };
  jump.addEventListener("click", () => {
    log.scrollToEnd();
    jump.hidden = true;
  });

  function show(job) {
    status.replaceChildren(statusBadge(job.status));
    progress.update(job);
    charts.setRecord(job);
    const focusGone = document.activeElement === cancel && !isActive(job.status);
    cancel.hidden = !isActive(job.status);
    document.title = `${packageName(job)} · ${job.status} · orchestrator`;
    meta.replaceChildren();
    field(meta, "Operation", job.operation);
    field(meta, "Package", job.pkgname);
    field(meta, "Version", job.pkgver);
    field(meta, "Variant", job.variant);
    field(meta, "Created", when(job.created_at));
    field(meta, "Started", when(job.started_at));
    field(meta, "Finished", when(job.finished_at));
    field(meta, "Duration", duration(job));
    field(meta, "Expected", job.estimate_s ? seconds(job.estimate_s) : "");
    field(meta, "Timeout", job.timeout_s ? `${job.timeout_s} s` : "");
    field(meta, "Exit code", job.exit_code === null ? "" : String(job.exit_code));
    field(meta, "Cancelled by", job.cancel_reason);
    field(meta, "Cache", cacheText(job.cache));
    if (job.srcinfo) {
      srcinfo.textContent = job.srcinfo;
      srcinfoBox.hidden = false;
    }
    if (!isActive(job.status)) {
      ending.className = `ending status-${job.status}`;
      ending.replaceChildren(h("p", {}, statusBadge(job.status), " ", job.reason || ""));
    }
    // The Cancel that held focus is hidden: the ending it brought takes it, not <body>.
    if (focusGone) ending.focus();
    artifacts.replaceChildren(...job.artifacts.map((a) =>
      h("li", {},
        h("button", {
          type: "button",
          class: "link",
          onclick: async () => {
            try {
              await download(a.url, a.name);
            } catch (error) {
              toast(`Download failed: ${error.message}`);
            }
          },
        }, "⤓ ", a.name))));
    artifactsBox.hidden = job.artifacts.length === 0;
    trust.update(job);
  }

  async function load() {
    try {
      show(await api(`/v1/jobs/${encodeURIComponent(id)}`));
      return true;
    } catch (error) {
      problem.replaceChildren(errorBox(error));
      return false;
    }
  }

  // Durations tick while it runs; the record is read again when the stream says it ended, and
  // while a rebuild of it runs. The progress bar moves on by itself in between.
  const ticker = setInterval(() => { if (!cancel.hidden || trust.waiting) load(); }, 5000);
  const stepper = setInterval(() => progress.tick(), 1000);
  signal.addEventListener("abort", () => {
    clearInterval(ticker);
    clearInterval(stepper);
  });

  // aria-disabled, not disabled: a disabled button drops the keyboard focus.
  cancel.addEventListener("click", async () => {
    if (cancel.getAttribute("aria-disabled")) return;
    cancel.setAttribute("aria-disabled", "true");
    cancel.textContent = "Cancelling…";
    const job = await cancelJob(id);
    if (job) show(job);
    cancel.removeAttribute("aria-disabled");
    cancel.textContent = "Cancel";
  });

  (async () => {
    if (!(await load())) return;
    try {
      await follow(id, {
        onEvents: (events) => {
          log.push(events);
          charts.addEvents(events);
        },
        onSamples: (samples) => charts.addSamples(samples),
        onEnd: () => {
          charts.ended();
          load();
        },
        onState: (state) => { streamState.textContent = state === "live" ? "" : "reconnecting…"; },
      }, signal);
      streamState.textContent = "";
    } catch (error) {
      if (!signal.aborted) problem.replaceChildren(errorBox(error));
    }
  })();
}
