// The dashboard's entry: pick the page from the path. Links are plain links (a page load
// each), so every page has an address to share and the back button just works.
import { catalogPage } from "./catalog.js";
import { jobPage } from "./job.js";
import { jobsPage } from "./jobs.js";
import { submitPage } from "./submit.js";
import { h } from "./util.js";

// An address like /jobs/% is not valid percent-encoding: a page saying "Not found", not a
// script error and a blank page.
function decoded(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return null;
  }
}

function route() {
  const path = location.pathname;
  const job = /^\/jobs\/([^/]+)\/?$/.exec(path);
  const id = job && decoded(job[1]);
  if (id) return ["jobs", (main, signal) => jobPage(main, signal, id)];
  if (path === "/submit") return ["submit", submitPage];
  if (path === "/catalog") return ["catalog", catalogPage];
  if (path === "/") return ["jobs", jobsPage];
  return [null, (main) => main.append(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "/" }, "Jobs")))];
}

const [nav, draw] = route();
for (const link of document.querySelectorAll("[data-nav]")) {
  if (link.dataset.nav === nav) link.setAttribute("aria-current", "page");
}
const main = document.getElementById("main");
main.replaceChildren();
const controller = new AbortController();
addEventListener("pagehide", () => controller.abort());
draw(main, controller.signal);
