// Workers and models: the catalog with Install, the installed workers with Uninstall, the
// models with Delete, a download form whose progress follows the job's stream, and where
// pacman finds the signed repositories (repos.js).
import { api } from "./api.js";
import { cancelJob } from "./jobs.js";
import { drawRepositories } from "./repos.js";
import { follow } from "./sse.js";
import { bytes, errorBox, h, statusBadge, toast, when } from "./util.js";

function table(caption, heads, rows) {
  return h("div", { class: "scroll-x" },
    h("table", { class: "stack" },
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, heads.map((t) =>
        h("th", { scope: "col" }, t || h("span", { class: "visually-hidden" }, "Actions"))))),
      h("tbody", {}, rows)));
}

export function catalogPage(main, signal) {
  const catalogBox = h("section", { "aria-labelledby": "catalog-title" });
  const workersBox = h("section", { "aria-labelledby": "workers-title" });
  const modelsBox = h("section", { "aria-labelledby": "models-title" });
  const reposBox = h("section", { "aria-labelledby": "repos-title", id: "repositories" });
  const downloads = h("ul", { class: "downloads", "aria-live": "polite" });
  main.append(h("h1", {}, "Workers & models"), catalogBox, workersBox, modelsBox, reposBox);

  async function guarded(box, title, draw) {
    try {
      await draw();
    } catch (error) {
      box.replaceChildren(h("h2", { id: `${title}-title` }, title), errorBox(error));
    }
  }

  async function startJob(body) {
    try {
      const job = await api("/v1/jobs", { method: "POST", json: body });
      return job;
    } catch (error) {
      toast(`Refused: ${error.message}`);
      return null;
    }
  }

  // What the service would refuse (metal needs macOS) is not offered: its reason is shown.
  const installCell = (w) => w.refused
    ? h("span", { class: "refused", "data-refused": w.id }, "Not installable: ", w.refused)
    : h("button", {
      type: "button",
      "aria-label": `Install ${w.id}`,
      onclick: async () => {
        const job = await startJob({ operation: "worker_install", worker_id: w.id });
        if (job) location.assign(`/jobs/${job.job_id}`);
      },
    }, "Install");

  const drawCatalog = () => guarded(catalogBox, "Catalog", async () => {
    const catalog = await api("/v1/catalog/workers");
    catalogBox.replaceChildren(
      h("h2", { id: "catalog-title" }, "Catalog"),
      table("Workers in the catalog", ["Worker", "Version", "Type", "Description", ""],
        catalog.workers.map((w) => h("tr", {},
          h("td", { class: "mono" }, w.id), h("td", {}, w.version), h("td", {}, w.worker_type),
          h("td", {}, w.description),
          h("td", {}, installCell(w))))),
      catalog.problems.length
        ? h("details", {}, h("summary", {}, `${catalog.problems.length} entries skipped`),
          h("ul", {}, catalog.problems.map((p) => h("li", {}, p))))
        : "",
    );
  });

  // A row's destructive button: DELETE `path`, say a refusal (or `done`), then redraw its list.
  const removeButton = (verb, name, path, redraw, done) => h("button", {
    type: "button",
    class: "danger",
    "aria-label": `${verb} ${name}`,
    onclick: async () => {
      try {
        await api(path, { method: "DELETE" });
        if (done) toast(done);
      } catch (error) {
        toast(`${verb} refused: ${error.message}`);
      }
      redraw();
    },
  }, verb);

  const drawWorkers = () => guarded(workersBox, "Installed", async () => {
    const { workers } = await api("/v1/workers");
    workersBox.replaceChildren(
      h("h2", { id: "installed-title" }, "Installed workers"),
      workers.length
        ? table("Installed workers", ["Worker", "Version", "Path", "Installed", ""],
          workers.map((w) => h("tr", {},
            h("td", { class: "mono" }, w.id), h("td", {}, w.version),
            h("td", { class: "mono" }, w.path), h("td", {}, when(w.installed_at)),
            h("td", {}, removeButton("Uninstall", w.id,
              `/v1/workers/${encodeURIComponent(w.id)}`, drawWorkers, `Uninstalled ${w.id}`)))))
        : h("p", { class: "muted" }, "None installed."));
  });

  const drawModels = () => guarded(modelsBox, "Models", async () => {
    const { models } = await api("/v1/models");
    modelsBox.replaceChildren(
      h("h2", { id: "models-title" }, "Models"),
      models.length
        ? table("Downloaded models", ["Name", "Size", "Downloaded", "From", ""],
          models.map((m) => h("tr", {},
            h("td", { class: "mono" }, m.name), h("td", {}, bytes(m.size_bytes)),
            h("td", {}, when(m.downloaded_at)), h("td", { class: "mono wrap" }, m.url),
            h("td", {}, removeButton("Delete", m.name,
              `/v1/models/${encodeURIComponent(m.name)}`, drawModels)))))
        : h("p", { class: "muted" }, "No models yet."),
      form,
      downloads);
  });

  function track(jobId, name) {
    const bar = h("progress", { max: "100", "aria-label": `Download of ${name}` });
    const text = h("span", { class: "muted" }, "queued");
    const cancel = h("button", { type: "button", class: "danger", onclick: () => cancelJob(jobId) }, "Cancel");
    const item = h("li", {}, h("a", { href: `/jobs/${jobId}`, class: "mono" }, name), " ", bar, " ", text, " ", cancel);
    downloads.append(item);
    follow(jobId, {
      onEvents: (events) => {
        const last = events[events.length - 1];
        text.textContent = last.message;
        const percent = /\((\d+)%\)/.exec(last.message);
        if (percent) bar.value = Number(percent[1]);
      },
      onEnd: (end) => {
        cancel.remove();
        bar.remove();
        text.replaceChildren(statusBadge(end.status), " ", end.reason || "");
        drawModels();
      },
    }, signal).catch((error) => { text.textContent = error.message; });
  }

  function downloadForm() {
    const url = h("input", { id: "model-url", type: "url", required: true, placeholder: "https://… or hf://REPO/FILE" });
    const name = h("input", { id: "model-name", required: true, placeholder: "model.gguf" });
    const sha = h("input", { id: "model-sha", pattern: "[0-9a-fA-F]{64}", placeholder: "optional" });
    return h("form", {
      class: "card",
      onsubmit: async (event) => {
        event.preventDefault();
        const body = { operation: "model_download", url: url.value.trim(), name: name.value.trim() };
        if (sha.value.trim()) body.sha256 = sha.value.trim();
        const job = await startJob(body);
        if (job) track(job.job_id, body.name);
      },
    },
    h("h3", {}, "Download a model"),
    h("div", { class: "field" }, h("label", { for: "model-url" }, "URL"), url),
    h("div", { class: "field" }, h("label", { for: "model-name" }, "File name"), name),
    h("div", { class: "field" }, h("label", { for: "model-sha" }, "SHA-256"), sha),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Download")));
  }

  // Made once and moved into each redraw of the list: what the user is typing survives a
  // download ending (which draws the list again).
  const form = downloadForm();
  drawCatalog();
  drawWorkers();
  drawRepositories(reposBox);
  drawModels().then(async () => {
    // Downloads already under way when the page opened get their progress too.
    for (const status of ["running", "queued"]) {
      const { jobs } = await api(`/v1/jobs?status=${status}&limit=100`);
      for (const job of jobs) if (job.operation === "model_download") track(job.id, job.pkgname || job.id);
    }
  }).catch(() => {});
}
