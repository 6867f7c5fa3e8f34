// The live log: events are queued as they arrive and drawn once per animation frame, a
// bounded amount each frame, so a build printing 200 000 lines never holds the tab.
// Each event becomes one text node (an output event is a run of up to 64 KiB of lines);
// stderr runs and makepkg's "==>" phases are spans with a class, everything else plain text.

const FRAME_BUDGET_MS = 8;
const ORCHESTRATOR = new Set(["output", "phase"]);

export class LogView {
  constructor(pre, status) {
    this.pre = pre;
    this.status = status;
    this.queue = [];
    this.head = 0;
    this.lines = 0;
    this.scheduled = false;
    this.follow = true;
    this.onFollowChange = () => {};
    pre.addEventListener("scroll", () => {
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
      if (atEnd !== this.follow) {
        this.follow = atEnd;
        this.onFollowChange(atEnd);
      }
    });
  }

  push(events) {
    for (const event of events) this.queue.push(event);
    if (!this.scheduled) {
      this.scheduled = true;
      requestAnimationFrame(() => this.flush());
    }
  }

  flush() {
    this.scheduled = false;
    const started = performance.now();
    const fragment = document.createDocumentFragment();
    while (this.head < this.queue.length && performance.now() - started < FRAME_BUDGET_MS) {
      fragment.append(this.render(this.queue[this.head++]));
    }
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    }
    this.pre.append(fragment);
    this.status.textContent = `${this.lines.toLocaleString("en")} lines`;
    if (this.follow) this.scrollToEnd();
    if (this.queue.length) {
      this.scheduled = true;
      requestAnimationFrame(() => this.flush());
    }
  }

  render(event) {
    const text = event.message + "\n";
    this.lines += event.lines || 1;
    let cls = null;
    if (event.action === "phase") cls = "phase";
    else if (!ORCHESTRATOR.has(event.action)) cls = `note level-${event.level}`;
    if (event.stream === "stderr") cls = cls ? `${cls} stderr` : "stderr";
    if (!cls) return document.createTextNode(text);
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text;
    if (event.stream === "stderr") span.title = "stderr";
    return span;
  }

  scrollToEnd() {
    this.pre.scrollTop = this.pre.scrollHeight;
    this.follow = true;
  }
}
