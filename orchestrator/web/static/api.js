// Calls to /v1 with the token the user gave (kept in this tab's sessionStorage, sent as a
// header, never in a URL). A 401 asks for the token again and retries the call.
import { h, toast } from "./util.js";

const KEY = "orchestrator.token";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function authHeaders(extra = {}) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : { ...extra };
}

let asking = null;
let watching = false;

// Escape would close the dialog and leave every call waiting for a token no one can give.
// Preventing "cancel" is not enough: Chromium closes anyway on a second Escape with no click
// in between, so a close while a token is still wanted opens it again.
function keepAsking(dialog, input) {
  dialog.addEventListener("cancel", (event) => event.preventDefault());
  dialog.addEventListener("close", () => {
    if (!asking) return;
    dialog.showModal();
    input.focus();
  });
}

// One prompt at a time, however many calls were refused together.
export function askToken(refused) {
  if (asking) return asking;
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const error = document.getElementById("token-error");
  if (!watching) {
    keepAsking(dialog, input);
    watching = true;
  }
  error.hidden = !refused;
  error.textContent = refused ? "That token was refused. Try again." : "";
  input.value = "";
  asking = new Promise((resolve) => {
    const done = (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      sessionStorage.setItem(KEY, value);
      form.removeEventListener("submit", done);
      asking = null;
      dialog.close();
      resolve(value);
    };
    form.addEventListener("submit", done);
  });
  dialog.showModal();
  input.focus();
  return asking;
}

// fetch() with the token; on 401 forget it, ask, and try once more per answer given.
export async function authFetch(path, options = {}) {
  for (;;) {
    const response = await fetch(path, { ...options, headers: authHeaders(options.headers) });
    if (response.status !== 401) return response;
    const hadToken = token() !== null;
    sessionStorage.removeItem(KEY);
    await askToken(hadToken);
  }
}

async function body(response) {
  const type = response.headers.get("Content-Type") || "";
  if (type.startsWith("application/json")) return response.json();
  return { message: await response.text() };
}

// The JSON answer of a /v1 call, or an ApiError carrying the service's error body.
export async function api(path, { method = "GET", json, data, type } = {}) {
  const options = { method, headers: {} };
  if (json !== undefined) {
    options.body = JSON.stringify(json);
    options.headers["Content-Type"] = "application/json";
  } else if (data !== undefined) {
    options.body = data;
    options.headers["Content-Type"] = type;
  }
  const response = await authFetch(path, options);
  const parsed = await body(response);
  if (!response.ok) throw new ApiError(response.status, parsed);
  return parsed;
}

// Download with the header a plain link cannot carry: fetch as a blob, then save it.
export async function download(url, name) {
  const response = await authFetch(url);
  if (!response.ok) throw new ApiError(response.status, await body(response));
  const blob = await response.blob();
  const href = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = href;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10000);
}

// A link to a file behind the token: with a token a plain link would be refused (401), so a
// click fetches it with the header and saves it as `name`; without one it stays a plain link.
export function savedLink(href, name, attrs, ...children) {
  return h("a", {
    ...attrs,
    href,
    onclick: async (event) => {
      if (!token()) return;
      event.preventDefault();
      try {
        await download(href, name);
      } catch (error) {
        toast(`Download failed: ${error.message}`);
      }
    },
  }, ...children);
}
