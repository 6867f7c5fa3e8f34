// Submit a build: a folder (packed here into a tar.gz) or an archive, a variant, a timeout.
import { api } from "./api.js";
import { folderEntries, pack } from "./tar.js";
import { errorBox, h } from "./util.js";

export function submitPage(main) {
  const folder = h("input", { type: "file", id: "folder", name: "folder", webkitdirectory: true, multiple: true });
  const archive = h("input", { type: "file", id: "archive", name: "archive", accept: ".tar,.tar.gz,.tgz,application/gzip,application/x-tar" });
  const variant = h("select", { id: "variant", name: "variant" },
    h("option", { value: "cpu" }, "cpu"), h("option", { value: "cuda" }, "cuda"));
  const timeout = h("input", { type: "number", id: "timeout", name: "timeout_s", min: "1", step: "1", inputmode: "numeric", placeholder: "the service's default" });
  const cache = h("input", { type: "checkbox", id: "cache", name: "cache", checked: true });
  const result = h("div", { id: "submit-result", "aria-live": "polite" });
  const go = h("button", { type: "submit", class: "primary" }, "Build");
  const form = h("form", { class: "card", novalidate: true },
    h("fieldset", {},
      h("legend", {}, "What to build"),
      h("p", { class: "muted" }, "A folder with a PKGBUILD at its top, or a .tar / .tar.gz of one."),
      h("div", { class: "field" }, h("label", { for: "folder" }, "Folder"), folder),
      h("div", { class: "field" }, h("label", { for: "archive" }, "or an archive"), archive)),
    h("div", { class: "field" }, h("label", { for: "variant" }, "Variant"), variant),
    h("div", { class: "field" }, h("label", { for: "timeout" }, "Timeout (seconds)"), timeout),
    h("div", { class: "field inline" }, cache, h("label", { for: "cache" }, "Use the build cache")),
    h("div", { class: "actions" }, go),
    result,
  );
  // One source at a time: picking one clears the other.
  folder.addEventListener("change", () => { if (folder.files.length) archive.value = ""; });
  archive.addEventListener("change", () => { if (archive.files.length) folder.value = ""; });
  main.append(h("h1", {}, "Submit a build"), form);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    result.replaceChildren();
    let body;
    let type;
    try {
      if (folder.files.length) {
        ({ body, type } = await pack(folderEntries(folder.files)));
      } else if (archive.files.length) {
        body = archive.files[0];
        type = /\.tar$/i.test(body.name) ? "application/x-tar" : "application/gzip";
      } else {
        result.replaceChildren(h("p", { class: "error", role: "alert" }, "Pick a folder or an archive first."));
        folder.focus();
        return;
      }
    } catch (error) {
      result.replaceChildren(h("p", { class: "error", role: "alert" }, error.message));
      return;
    }
    const query = new URLSearchParams({ variant: variant.value });
    if (timeout.value) query.set("timeout_s", timeout.value);
    if (!cache.checked) query.set("cache", "off");
    go.disabled = true;
    go.textContent = "Submitting…";
    try {
      const job = await api(`/v1/builds?${query}`, { method: "POST", data: body, type });
      location.assign(`/jobs/${job.job_id}`);
    } catch (error) {
      result.replaceChildren(errorBox(error));
      go.disabled = false;
      go.textContent = "Build";
    }
  });
}
