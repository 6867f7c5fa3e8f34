// A folder picked in the browser, packed as a ustar archive (gzipped where the browser has
// CompressionStream). Files get mode 0644 (a browser cannot see modes), folders 0755.
const BLOCK = 512;
// The 12-byte octal field holds 0 to 8^11 - 1. A date outside it (a file dated before 1970) made
// a header no reader can parse, and Python's tarfile takes that as the archive's end: every
// file after it silently gone. Such dates are clamped instead.
const MAX_MTIME_S = 8 ** 11 - 1;
const encoder = new TextEncoder();

function octal(value, width) {
  // width - 1 digits and a NUL, as ustar readers expect.
  return value.toString(8).padStart(width - 1, "0") + "\0";
}

function put(header, offset, width, text) {
  const bytes = typeof text === "string" ? encoder.encode(text) : text;
  if (bytes.length > width) throw new Error(`tar field too long: ${text}`);
  header.set(bytes, offset);
}

// ustar keeps names of up to 100 bytes, or 255 split at a "/" into prefix and name.
function splitName(path) {
  const bytes = encoder.encode(path);
  if (bytes.length <= 100) return ["", path];
  for (let i = path.length - 1; i > 0; i--) {
    if (path[i] !== "/") continue;
    const prefix = path.slice(0, i);
    const name = path.slice(i + 1);
    if (encoder.encode(prefix).length <= 155 && encoder.encode(name).length <= 100) {
      return [prefix, name];
    }
  }
  throw new Error(`a path is too long for a tar archive: ${path}`);
}

function header(path, { size = 0, mode = 0o644, type = "0", mtime = 0 }) {
  const h = new Uint8Array(BLOCK);
  const [prefix, name] = splitName(path);
  put(h, 0, 100, name);
  put(h, 100, 8, octal(mode, 8));
  put(h, 108, 8, octal(0, 8));
  put(h, 116, 8, octal(0, 8));
  put(h, 124, 12, octal(size, 12));
  put(h, 136, 12, octal(mtime, 12));
  put(h, 148, 8, "        "); // spaces while the checksum is summed
  put(h, 156, 1, type);
  put(h, 257, 6, "ustar\0");
  put(h, 263, 2, "00");
  put(h, 345, 155, prefix);
  let sum = 0;
  for (const byte of h) sum += byte;
  put(h, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return h;
}

// entries: [{path, file}] with paths relative to the build folder ("PKGBUILD", "src/a.c").
export async function tar(entries) {
  const parts = [];
  const folders = new Set();
  for (const { path } of entries) {
    const pieces = path.split("/");
    for (let i = 1; i < pieces.length; i++) folders.add(pieces.slice(0, i).join("/"));
  }
  for (const folder of [...folders].sort()) {
    parts.push(header(folder + "/", { mode: 0o755, type: "5" }));
  }
  for (const { path, file } of entries) {
    const mtime = Math.min(Math.max(0, Math.floor((file.lastModified || 0) / 1000)), MAX_MTIME_S);
    parts.push(header(path, { size: file.size, mtime }));
    parts.push(new Uint8Array(await file.arrayBuffer()));
    const pad = (BLOCK - (file.size % BLOCK)) % BLOCK;
    if (pad) parts.push(new Uint8Array(pad));
  }
  parts.push(new Uint8Array(BLOCK * 2)); // the end: two empty blocks
  return new Blob(parts);
}

// The archive as the body of POST /v1/builds, and its Content-Type.
export async function pack(entries) {
  const archive = await tar(entries);
  if (typeof CompressionStream === "undefined") return { body: archive, type: "application/x-tar" };
  const gz = archive.stream().pipeThrough(new CompressionStream("gzip"));
  return { body: await new Response(gz).blob(), type: "application/gzip" };
}

// The files of an <input webkitdirectory>: their paths without the picked folder's own name.
export function folderEntries(files) {
  return [...files].map((file) => {
    const rel = file.webkitRelativePath || file.name;
    return { path: rel.split("/").slice(1).join("/") || file.name, file };
  });
}
