// A build's life as pictures: CPU and memory over time from the stream's `sample` events, and
// makepkg's phases as a timeline under them, on one time axis (seconds since the build's
// command started). Live while it runs; a page opened later draws what the stream replays.
// Plots stretch to the page's width (preserveAspectRatio="none"), so every label is HTML
// beside them, never SVG text that would stretch with them.
import { bytes, h, seconds } from "./util.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 1000; // the plots' own units; the page scales them
const HEIGHT = 100;
// makepkg's "==> Starting build()..." opens a phase; the next such line closes it (as the
// service's build/vitals.py reads them).
const STARTING = /^==> Starting (prepare|build|check|package)(?:_\S*)?\(\)/;
const CLOSING = /^==> (Starting |Entering fakeroot|Leaving fakeroot|Finished making|ERROR)/;
const PHASE_ORDER = ["prepare", "build", "check", "package"];

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  el.append(...children);
  return el;
}

// One plot: a line and the area under it, y from 0 to `top`.
class Plot {
  constructor(id, label) {
    this.line = s("polyline", { class: "line" });
    this.area = s("polygon", { class: "area" });
    this.svg = s("svg", {
      id, class: "plot", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: "none",
      role: "img", "aria-label": label, "data-points": 0,
    }, s("line", { class: "grid", x1: 0, x2: WIDTH, y1: HEIGHT / 2, y2: HEIGHT / 2 }),
    this.area, this.line);
  }

  draw(points, xMax, top) {
    const xy = points.map(([x, y]) =>
      `${(x / xMax * WIDTH).toFixed(1)},${(HEIGHT - Math.min(y / top, 1) * HEIGHT).toFixed(1)}`);
    this.line.setAttribute("points", xy.join(" "));
    const ends = points.length ? [`${xy[xy.length - 1].split(",")[0]},${HEIGHT}`,
      `${xy[0].split(",")[0]},${HEIGHT}`] : [];
    this.area.setAttribute("points", [...xy, ...ends].join(" "));
    this.svg.setAttribute("data-points", points.length);
  }
}

function figure(title, plot, note, scale) {
  return h("figure", { class: "chart" },
    h("figcaption", {}, h("strong", {}, title), " ", note),
    h("div", { class: "plot-box" }, h("span", { class: "scale muted" }, scale), plot.svg));
}

function most(points) {
  return points.reduce((top, [, y]) => Math.max(top, y), 0);
}

// A phase's length: tenths under ten seconds (prepare often takes 0.3 s, not "0s").
function took(total) {
  return total < 10 ? `${Math.max(0, total).toFixed(1)}s` : seconds(total);
}

function niceCpu(peak) {
  return Math.max(100, Math.ceil(peak / 100) * 100); // whole cores
}

export class LifeCharts {
  constructor() {
    this.samples = [];
    this.phases = []; // {name, from_ts, to_ts (null while open)}, Unix s
    this.origin = null; // Unix s of the build's start: where elapsed_s counts from
    this.startedTs = null; // the build_started event's ts, until a sample gives the origin
    this.lastTs = null;
    this.record = null;
    this.over = false;
    this.scheduled = false;
    this.cpu = new Plot("cpu-chart", "CPU use over time");
    this.memory = new Plot("memory-chart", "Memory over time");
    this.cpuNote = h("span", { id: "cpu-now" });
    this.memoryNote = h("span", { id: "memory-peak" });
    this.cpuScale = h("span");
    this.memoryScale = h("span");
    this.bars = s("g");
    this.timeline = s("svg", {
      id: "phase-timeline", class: "timeline", viewBox: `0 0 ${WIDTH} 10`,
      preserveAspectRatio: "none", "aria-hidden": "true",
    }, this.bars);
    this.legend = h("ol", { id: "phases", class: "phases", "aria-label": "makepkg phases" });
    this.axisEnd = h("span", { id: "chart-span" });
    this.charts = h("div", { class: "charts", hidden: true },
      figure("CPU", this.cpu, this.cpuNote, this.cpuScale),
      figure("Memory", this.memory, this.memoryNote, this.memoryScale));
    this.section = h("section", { id: "life", "aria-labelledby": "life-title", hidden: true },
      h("h2", { id: "life-title" }, "Resources"),
      this.charts,
      h("div", { class: "timeline-box" }, this.timeline,
        h("div", { class: "axis muted" }, h("span", {}, "0s"), this.axisEnd)),
      this.legend);
  }

  addSamples(list) {
    for (const sample of list) {
      if (sample.elapsed_s === undefined) continue;
      if (this.origin === null) this.origin = sample.ts - sample.elapsed_s;
      this.samples.push(sample);
      this.seen(sample.ts);
    }
    this.schedule();
  }

  // Log events: the build's start and makepkg's phases; every event's time moves the end on.
  addEvents(list) {
    for (const event of list) {
      this.seen(event.ts);
      if (event.action === "build_started") this.startedTs = event.ts;
      if (event.action !== "phase") continue;
      const open = this.phases[this.phases.length - 1];
      if (open && open.to_ts === null && CLOSING.test(event.message)) open.to_ts = event.ts;
      const starting = STARTING.exec(event.message);
      if (starting) this.phases.push({ name: starting[1], from_ts: event.ts, to_ts: null });
    }
    this.schedule();
  }

  // The job's record: once it has ended, its phases_s stand in for phase events not seen.
  setRecord(job) {
    this.record = job;
    this.schedule();
  }

  // The job ended: a phase still open ran until its last event (the legend drops its "…"),
  // and the captions say what it used in all rather than what it uses now.
  ended() {
    this.over = true;
    this.schedule();
  }

  isOver() {
    return this.over || Boolean(this.record && this.record.finished_at);
  }

  seen(ts) {
    if (typeof ts === "number" && (this.lastTs === null || ts > this.lastTs)) this.lastTs = ts;
  }

  start() {
    return this.origin ?? this.startedTs ?? this.lastTs ?? 0;
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      this.draw();
    });
  }

  // Phases in seconds from the build's start (to_s null while open).
  shownPhases() {
    const start = this.start();
    if (this.phases.length || !this.record || !this.record.phases_s) {
      return this.phases.map((p) => ({
        name: p.name, from_s: p.from_ts - start, to_s: p.to_ts === null ? null : p.to_ts - start,
      }));
    }
    // Only durations are kept: laid end to end in makepkg's order.
    let at = 0;
    return PHASE_ORDER.filter((name) => name in this.record.phases_s).map((name) => {
      const phase = { name, from_s: at, to_s: at + this.record.phases_s[name] };
      at = phase.to_s;
      return phase;
    });
  }

  draw() {
    const phases = this.shownPhases();
    this.section.hidden = !this.samples.length && !phases.length;
    if (this.section.hidden) return;
    this.charts.hidden = !this.samples.length; // no samples (an older service): phases only
    const last = this.samples[this.samples.length - 1];
    const now = this.lastTs === null ? 0 : this.lastTs - this.start();
    const ends = phases.map((p) => p.to_s ?? now);
    const xMax = Math.max(1, now, last ? last.elapsed_s : 0, ...ends);
    this.drawCpu(xMax);
    this.drawMemory(xMax);
    this.drawPhases(phases, ends, xMax);
    this.axisEnd.textContent = seconds(xMax);
  }

  drawCpu(xMax) {
    const points = this.samples.map((x) => [x.elapsed_s, x.cpu_percent]);
    const peak = most(points);
    const top = niceCpu(peak);
    this.cpu.draw(points, xMax, top);
    const last = this.samples[this.samples.length - 1];
    const now = this.isOver()
      ? `${last ? last.cpu_seconds.toFixed(1) : 0} CPU-seconds in all`
      : `now ${last ? Math.round(last.cpu_percent) : 0}%`;
    this.cpuNote.textContent = last ? `${now}, peak ${Math.round(peak)}%` : "";
    this.cpuScale.textContent = `${top}%`;
  }

  drawMemory(xMax) {
    const points = this.samples.map((x) => [x.elapsed_s, x.memory_bytes]);
    const last = this.samples[this.samples.length - 1];
    const peak = Math.max(most(points), last ? last.peak_memory_bytes || 0 : 0);
    const limit = last && last.memory_limit_bytes;
    // The limit is the scale when the peak comes near it; far above, it would flatten the line.
    const top = limit && peak > limit / 2 ? limit : Math.max(peak * 1.15, 1 << 20);
    this.memory.draw(points, xMax, top);
    const now = this.isOver() ? "" : `now ${bytes(last ? last.memory_bytes : 0)}, `;
    this.memoryNote.textContent = last
      ? `${now}peak ${bytes(peak)}${limit ? ` of ${bytes(limit)}` : ""}`
      : "";
    this.memoryScale.textContent = bytes(Math.round(top));
  }

  drawPhases(phases, ends, xMax) {
    this.bars.replaceChildren(...phases.map((p, i) => {
      const x = p.from_s / xMax * WIDTH;
      const width = Math.max(2, (ends[i] - p.from_s) / xMax * WIDTH);
      return s("rect", { class: `phase phase-${p.name}`, x: x.toFixed(1), y: 0,
        width: width.toFixed(1), height: 10 }, s("title", {}, p.name));
    }));
    this.legend.replaceChildren(...phases.map((p, i) =>
      h("li", {}, h("span", { class: `swatch phase-${p.name}`, "aria-hidden": "true" }),
        `${p.name} ${took(ends[i] - p.from_s)}${p.to_s === null && !this.isOver() ? "…" : ""}`)));
  }
}
