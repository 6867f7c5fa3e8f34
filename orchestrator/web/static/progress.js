// How far along a running job is, as a bar: its elapsed time over its estimate (the service's
// `progress`, from the package's last successful build). Between two reads of the record the
// bar moves on by itself, from the time the record arrived (the browser's clock may differ
// from the service's, its pace does not). A job with no estimate shows no bar.
import { h, seconds } from "./util.js";

const MOST = 0.99; // past its estimate a job is late, not done

// {fraction, estimate_s} for a running job with an estimate, else null.
export function progressOf(job, receivedMs, nowMs = Date.now()) {
  const known = typeof job.progress === "number";
  if (job.status !== "running" || !job.estimate_s || !known) return null;
  const moved = Math.max(0, nowMs - receivedMs) / 1000 / job.estimate_s;
  return { fraction: Math.min(MOST, job.progress + moved), estimate_s: job.estimate_s };
}

export class ProgressView {
  constructor({ id = null, label = "Progress" } = {}) {
    this.bar = h("progress", { max: 100, value: 0, "aria-label": label });
    this.text = h("span", { class: "progress-text" });
    this.el = h("span", { class: "progress", id, hidden: true }, this.bar, this.text);
    this.job = null;
    this.receivedMs = 0;
  }

  update(job, receivedMs = Date.now()) {
    this.job = job;
    this.receivedMs = receivedMs;
    this.tick();
  }

  // Draw where the job should be now; called by the page's own timer between reads.
  tick() {
    const shown = this.job && progressOf(this.job, this.receivedMs);
    this.el.hidden = !shown;
    if (!shown) return;
    const percent = Math.floor(shown.fraction * 100);
    const left = shown.estimate_s * (1 - shown.fraction);
    if (this.bar.value !== percent) this.bar.value = percent;
    this.bar.setAttribute("aria-valuetext", `${percent}%`);
    const text = shown.fraction >= MOST
      ? `${percent}%, longer than the ${seconds(shown.estimate_s)} expected`
      : `${percent}%, about ${seconds(left)} left`;
    if (this.text.textContent !== text) this.text.textContent = text;
  }
}
