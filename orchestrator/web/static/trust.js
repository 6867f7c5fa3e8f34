// A job's Trust panel: who signed its packages (the repository they were published to), what
// vouches for how they were made (the signed provenance, its subjects checked against the
// packages), and whether building them again made the same bytes (its reproduction).
// Everything the service says goes in as text.
import { api, authFetch, savedLink } from "./api.js";
import { h, toast } from "./util.js";

// A package bigger than this is not downloaded just to check its digest in the page.
const HASH_AT_MOST_BYTES = 16 * 1024 * 1024;

const jobLink = (id) => h("a", { href: `/jobs/${encodeURIComponent(id)}`, class: "mono" }, id.slice(0, 12));

// The in-toto statement a DSSE envelope carries (base64 of UTF-8 JSON).
export function statementOf(envelope) {
  const bytes = Uint8Array.from(atob(envelope.payload), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

async function sha256Hex(blob) {
  const digest = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function checkOne(job, subject, known, onDisk) {
  const want = (subject.digest || {}).sha256;
  if (!job.artifacts.some((a) => a.name === subject.name)) {
    return ["mismatch", "not among this job's packages"];
  }
  if (known.has(subject.name)) {
    return known.get(subject.name) === want ? ["match", "matches the repository's signed database"]
      : ["mismatch", "differs from the repository's copy of that file"];
  }
  const artifact = onDisk.get(subject.name);
  if (!artifact) return ["unchecked", "not checked: the package is no longer on disk"];
  if (artifact.size_bytes > HASH_AT_MOST_BYTES || !(globalThis.crypto && crypto.subtle)) {
    return ["unchecked", "not checked here (too large, or no hashing in this page)"];
  }
  const response = await authFetch(artifact.url);
  if (!response.ok) return ["unchecked", "not checked: the package could not be fetched"];
  return await sha256Hex(await response.blob()) === want
    ? ["match", "matches the package to download"]
    : ["mismatch", "differs from the package to download"];
}

// Each subject's digest against the bytes the service offers: the repository's signed
// database when it lists the file (no download), else the package itself when it is small
// and the page may hash (crypto.subtle needs a secure context: https or loopback).
async function checkSubjects(job, subjects) {
  const known = new Map();
  if (job.published) {
    const listed = await api(job.published.repo_url);
    for (const p of listed.packages) known.set(p.filename, p.sha256);
  }
  const { artifacts } = await api(`/v1/jobs/${encodeURIComponent(job.id)}/artifacts`);
  const onDisk = new Map(artifacts.map((a) => [a.name, a]));
  return Promise.all(subjects.map((subject) => checkOne(job, subject, known, onDisk)));
}

function signatureView(job) {
  const p = job.published;
  if (!p) {
    const hint = job.status === "succeeded" ? " (submit with publish=true to sign it into a repository)" : "";
    return [h("span", { "data-published": "no" }, "Not published"), hint];
  }
  return [
    "Published to ", h("code", { "data-repository": p.repository }, p.repository), ", signed by ",
    h("code", { class: "fingerprint wrap", "data-fingerprint": "" }, p.fingerprint), " ",
    h("span", { class: "muted", id: "trust-listed" }),
  ];
}

async function showListed(job, box) {
  try {
    const listed = await api(job.published.repo_url);
    const names = new Set(listed.packages.map((p) => p.filename));
    const all = job.artifacts.every((a) => names.has(a.name));
    box.textContent = all ? "(listed now)" : "(no longer listed: replaced by a later build, or removed)";
  } catch (error) {
    box.textContent = `(could not read the repository: ${error.message})`;
  }
}

async function provenanceView(job, box) {
  if (!job.provenance_url) {
    box.replaceChildren(job.status === "succeeded" ? "None kept for this job" : "None: only a succeeded build has one");
    return;
  }
  const name = `${job.id}.provenance.intoto.json`;
  const link = savedLink(job.provenance_url, name, { id: "provenance-link" }, "provenance.intoto.json");
  box.replaceChildren(link, h("span", { class: "muted" }, " (a DSSE envelope, SLSA Provenance v1)"));
  try {
    const envelope = await api(job.provenance_url);
    const statement = statementOf(envelope);
    const signer = (envelope.signatures[0] || {}).keyid || "";
    const subjects = statement.subject || [];
    const items = subjects.map((s) => {
      const check = h("span", { class: "check muted" }, "checking…");
      return [s, check, h("li", { "data-subject": s.name },
        h("span", { class: "mono wrap" }, s.name), " ",
        h("code", { class: "wrap", "data-sha256": "" }, `sha256:${(s.digest || {}).sha256 || "?"}`), " ", check)];
    });
    box.append(
      h("div", {}, "Signed by ", h("code", { id: "provenance-signer", class: "wrap" }, signer),
        h("span", { class: "muted" }, " — check the signature with orchestrator verify PKG --job ",
          job.id)),
      h("ul", { class: "subjects" }, items.map(([, , li]) => li)),
    );
    const results = await checkSubjects(job, subjects);
    results.forEach(([state, text], i) => {
      const check = items[i][1];
      check.className = `check check-${state}`;
      check.dataset.check = state;
      check.textContent = `${state === "match" ? "✔" : state === "mismatch" ? "✖" : "•"} ${text}`;
    });
  } catch (error) {
    box.append(h("p", { class: "error" }, `Could not read it: ${error.message}`));
  }
}

const PACKAGING = new Set(["build", "worker_install", "reproduce"]);

const VERDICTS = {
  running: "Being rebuilt…",
  identical: "✔ Reproducible: the rebuild made identical packages",
  differs: "✖ Not reproducible: the rebuild made different packages",
  failed: "✖ The rebuild failed",
};

function packagesTable(packages) {
  return h("div", { class: "scroll-x" }, h("table", { class: "reproduced" },
    h("thead", {}, h("tr", {}, ["Package", "Same", "Original sha256", "Rebuilt sha256"].map((t) =>
      h("th", { scope: "col" }, t)))),
    h("tbody", {}, packages.flatMap((p) => [
      h("tr", { "data-package": p.name },
        h("td", { class: "mono wrap" }, p.name),
        h("td", {}, p.identical ? "✔ yes" : "✖ no"),
        h("td", { class: "mono wrap" }, p.original_sha256 || "not in the original"),
        h("td", { class: "mono wrap" }, p.rebuilt_sha256 || "not built")),
      p.differences ? h("tr", {}, h("td", { colspan: "4" },
        h("details", {}, h("summary", {}, `What differs in ${p.name}`), h("pre", { class: "differences" }, p.differences))))
        : null,
    ]))));
}

// The reproducibility of `job` from its `reproduction` (null, or the original, the rebuild,
// their state and each package's digests); `onReproduce` is called by the Reproduce button.
// Exported so that every state can be drawn from a record (the browser tests do).
export function renderReproduction(job, onReproduce, queued = null) {
  const r = job.reproduction;
  const box = h("div", { id: "reproduction", "data-state": r ? r.state : queued ? "queued" : "none" });
  if (!r && queued) {
    // Asked from this page: its report comes once the rebuild runs.
    box.append(h("p", {}, "Rebuild queued as ", jobLink(queued), "."));
    return box;
  }
  if (r) {
    box.append(h("p", { class: `verdict verdict-${r.state}` }, VERDICTS[r.state] || r.state));
    if (job.id === r.rebuild) box.append(h("p", {}, "This job rebuilds ", jobLink(r.original), "."));
    else box.append(h("p", {}, "Rebuilt by ", jobLink(r.rebuild), "."));
    if (r.packages && r.packages.length) box.append(packagesTable(r.packages));
  } else if (job.operation === "build") {
    box.append(h("p", { class: "muted" }, "Not rebuilt yet."));
  } else {
    box.append(h("p", { class: "muted" }, "Only an uploaded build keeps what a rebuild needs."));
  }
  const rebuildable = job.operation === "build" && job.status === "succeeded"
    && (!r || (r.state !== "running" && job.id !== r.rebuild));
  if (rebuildable && onReproduce) {
    box.append(h("button", { type: "button", id: "reproduce", onclick: onReproduce },
      r ? "Reproduce again" : "Reproduce"));
  }
  return box;
}

// The panel, drawn again from each reading of the job; what needs a request (the envelope,
// the repository's listing) is read once per job.
export class TrustView {
  constructor(onChange) {
    this.onChange = onChange;
    this.signature = h("dd", { id: "trust-signature" });
    this.provenance = h("dd", { id: "trust-provenance" });
    this.reproduction = h("dd", { id: "trust-reproduction" });
    this.section = h("section", { id: "trust", "aria-labelledby": "trust-title", hidden: true },
      h("h2", { id: "trust-title" }, "Trust"),
      h("dl", { class: "trust" },
        h("dt", {}, "Signature"), this.signature,
        h("dt", {}, "Provenance"), this.provenance,
        h("dt", {}, "Reproducible"), this.reproduction));
    this.read = null;
    this.queued = null; // the rebuild this page asked for, until the job's record names it
    this.waiting = false; // a rebuild is queued or running: the job is read again until it ends
  }

  update(job) {
    const ended = job.status !== "queued" && job.status !== "running";
    // Only what makes packages has anything to vouch for (not a model download).
    this.section.hidden = !ended || !PACKAGING.has(job.operation);
    if (this.section.hidden) return;
    const key = `${job.status} ${job.provenance_url} ${JSON.stringify(job.published)}`;
    if (this.read !== key) {
      this.read = key;
      this.signature.replaceChildren(...signatureView(job));
      if (job.published) showListed(job, this.signature.querySelector("#trust-listed"));
      provenanceView(job, this.provenance);
    }
    const r = job.reproduction;
    if (r && r.rebuild === this.queued) this.queued = null;
    this.waiting = Boolean(this.queued || (r && r.state === "running"));
    this.reproduction.replaceChildren(renderReproduction(job, () => this.reproduce(job), this.queued));
  }

  async reproduce(job) {
    try {
      const started = await api(`/v1/jobs/${encodeURIComponent(job.id)}/reproduce`, { method: "POST" });
      this.queued = started.job_id;
    } catch (error) {
      toast(`Reproduce refused: ${error.message}`);
    }
    this.onChange();
  }
}
