// The catalog page's "Package repositories": where pacman finds each variant's signed
// repository, and the key that signs them (its fingerprint, its link, the commands to trust it).
import { api, savedLink, token } from "./api.js";
import { errorBox, h } from "./util.js";

// pacman cannot send a header: with a token it goes in the URL as the password. The page
// never writes the token itself, only where it goes.
function serverLine(server) {
  if (!token()) return server;
  const url = new URL(server);
  url.username = "token";
  url.password = "TOKEN";
  return url.href;
}

function keyCommands(list) {
  const auth = token() ? ' -H "Authorization: Bearer $TOKEN"' : "";
  return [
    `curl -s${auth} ${list.key_url} -o orchestrator.asc`,
    "pacman-key --add orchestrator.asc",
    `pacman-key --lsign-key ${list.fingerprint}`,
  ].join("\n");
}

function confSnippet(repo) {
  return [`[${repo.repository}]`, "SigLevel = Required", `Server = ${serverLine(repo.server)}`].join("\n");
}

export async function drawRepositories(box) {
  const title = h("h2", { id: "repos-title" }, "Package repositories");
  try {
    const list = await api("/v1/repo");
    box.replaceChildren(
      title,
      h("p", {}, "Builds and installs asked to publish land in their variant's repository, "
        + "signed with this key. Trust the key on a machine (as root), then add the repository "
        + "to /etc/pacman.conf."),
      h("dl", { class: "trust" },
        h("dt", {}, "Key fingerprint"), h("dd", {}, h("code", { id: "repo-fingerprint", class: "wrap" }, list.fingerprint)),
        h("dt", {}, "Key"), h("dd", {}, savedLink(list.key_url, "orchestrator.asc", { id: "repo-key" }, list.key_url))),
      h("pre", { class: "snippet", id: "repo-key-commands" }, keyCommands(list)),
      ...list.repositories.map((repo) => h("figure", { class: "repo", "data-repository": repo.repository },
        h("figcaption", {}, h("code", {}, repo.repository), ` (${repo.variant}, ${repo.arch})`),
        h("pre", { class: "snippet" }, confSnippet(repo)))),
      token() ? h("p", { class: "muted" }, "Replace TOKEN with the API token.") : "",
    );
  } catch (error) {
    box.replaceChildren(title, errorBox(error));
  }
}
