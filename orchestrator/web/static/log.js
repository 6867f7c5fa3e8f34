// The live log: events are queued as they arrive and drawn once per animation frame, a
// bounded amount each frame, so a build printing 200 000 lines never holds the tab.
// A line's colour says what the line means (MEANINGS), never which stream it came on: cargo,
// CMake and makepkg write their progress to stderr. The stream stays a quiet hint: a stderr
// event is a block with a thin left border. The service's own notes take their meaning from
// the level it gave them (a failure, a non-zero exit).

const FRAME_BUDGET_MS = 8;
const ORCHESTRATOR = new Set(["output", "phase"]);

// (pattern, meaning): the first pattern that matches a line gives its meaning; a line none
// matches is plain. Add a row to teach the log another tool's words. No flags: the patterns
// are also joined into one, which skips a run of lines none of them matches in one pass.
export const MEANINGS = [
  [/^==> ERROR:/, "error"], // makepkg
  [/^==> WARNING:/, "warning"],
  [/^==> /, "progress"], // makepkg's steps...
  [/^ {2}-> /, "progress"], // ...and their sub-steps
  // rustc/cargo "error:", "error[E0308]:"; gcc/clang "file:line:col: error:", "fatal error:";
  // "collect2: error:", "/usr/bin/ld: error:"
  [/^(\S+: )?(fatal )?[Ee]rror(\[\w+\])?:/, "error"],
  [/^(\S+: )?[Ww]arning(\[\w+\])?:/, "warning"],
  [/^CMake Error/, "error"],
  [/^CMake (Deprecation )?Warning/, "warning"],
  [/^g?make(\[\d+\])?: \*\*\* /, "error"], // make's "*** [Makefile:3: all] Error 1"
];
const ANY = new RegExp(MEANINGS.map(([pattern]) => `(?:${pattern.source})`).join("|"), "m");
const LEVELS = { error: "error", warning: "warning" };

export function meaningOf(line) {
  for (const [pattern, meaning] of MEANINGS) if (pattern.test(line)) return meaning;
  return null;
}

function marked(text, meaning) {
  const span = document.createElement("span");
  span.className = `is-${meaning}`;
  span.textContent = text;
  return span;
}

// A run of lines: the plain ones stay text nodes (one per stretch), each meaningful line a span.
function lines(message) {
  if (!ANY.test(message)) return document.createTextNode(message + "\n");
  const fragment = document.createDocumentFragment();
  let plain = "";
  for (const line of message.split("\n")) {
    const meaning = meaningOf(line);
    if (!meaning) {
      plain += line + "\n";
      continue;
    }
    if (plain) fragment.append(document.createTextNode(plain));
    plain = "";
    fragment.append(marked(line + "\n", meaning));
  }
  if (plain) fragment.append(document.createTextNode(plain));
  return fragment;
}

function note(event) {
  const meaning = LEVELS[event.level];
  const span = document.createElement("span");
  span.className = meaning ? `note is-${meaning}` : "note";
  span.textContent = event.message + "\n";
  return span;
}

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
    this.lines += event.lines || 1;
    const drawn = ORCHESTRATOR.has(event.action) ? lines(event.message) : note(event);
    if (event.stream !== "stderr") return drawn;
    const block = document.createElement("span");
    block.className = "stderr";
    block.title = "stderr";
    block.append(drawn);
    return block;
  }

  scrollToEnd() {
    this.pre.scrollTop = this.pre.scrollHeight;
    this.follow = true;
  }
}
