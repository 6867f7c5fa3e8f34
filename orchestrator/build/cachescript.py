"""What runs in a build container that has a cache: a bash wrapper around makepkg.

The cache volume is mounted at ``/cache``. Before makepkg the wrapper keeps in ``SRCDEST`` only
what can be shown to be this build's (a file whose checksum the PKGBUILD gives and matches, a
git mirror of the same URL), so the cache can make a build faster but never change what it
builds: a file kept under the same name with other bytes, or a mirror of another repository,
would otherwise be used as is. It points cargo's home, sccache (as ``RUSTC_WRAPPER``) and
ccache (first in ``PATH``) at the volume, runs makepkg, and leaves what hit in
``/tmp/orchestrator-cache`` for the runner to copy out. Nothing here can fail the build: a
cache tool that does not start is left out.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .srcinfo import CARCH, VCS, SrcInfo, makepkg_name

CACHE_DIR = "/cache"
REPORT_DIR = "/tmp/orchestrator-cache"
# Strongest first: makepkg checks every array it is given, we need one that matches.
_SUMS: tuple[tuple[str, str], ...] = (
    ("b2sums", "b2sum"),
    ("sha512sums", "sha512sum"),
    ("sha384sums", "sha384sum"),
    ("sha256sums", "sha256sum"),
    ("sha224sums", "sha224sum"),
    ("sha1sums", "sha1sum"),
    ("md5sums", "md5sum"),
)
_SAFE_NAME = re.compile(r"[^/\x00-\x1f]+")

SCRIPT = r"""
set -u
C=/cache R=/tmp/orchestrator-cache
mkdir -p "$R"
if ! mkdir -p "$C/src" "$C/cargo" "$C/cargo-build" "$C/sccache" "$C/ccache" 2>/dev/null ||
    [ ! -w "$C/src" ]; then
    # An image older than the caches (no /cache of the build user's): build without one.
    echo unusable >"$R/unusable"
    exec "$@"
fi
declare -A keep=()
reused=0 wanted=0
while IFS=$'\t' read -r kind name a b; do
    [ -n "$kind" ] && [ -n "$name" ] || continue  # a name never kept: nothing to check
    keep[$name]=1
    path="$C/src/$name"
    wanted=$((wanted + 1))
    case $kind in
    file)
        if [ -f "$path" ] && [ "$("$a" <"$path" | cut -d' ' -f1)" = "$b" ]; then
            reused=$((reused + 1))
        else
            rm -rf -- "$path" "$path.part"
        fi ;;
    git)
        # Only a mirror of the same URL that can be brought up to date: makepkg builds from
        # a stale one (with a warning) when its own fetch fails, which a build without the
        # cache would not do.
        if [ -d "$path" ] && [ "$(git -C "$path" config --get remote.origin.url)" = "$a" ] &&
            find "$path" -name '*.lock' -type f -delete &&
            timeout 600 git -C "$path" fetch --all -p --quiet >/dev/null 2>&1; then
            reused=$((reused + 1))
        else
            rm -rf -- "$path"
        fi ;;
    *) rm -rf -- "$path" "$path.part" ;;
    esac
done <<<"${ORCHESTRATOR_SOURCES:-}"
shopt -s nullglob dotglob
for entry in "$C/src"/*; do
    [ -n "${keep[${entry##*/}]:-}" ] || rm -rf -- "$entry"
done
printf '%s %s\n' "$reused" "$wanted" >"$R/sources"

export SRCDEST="$C/src" SCCACHE_DIR="$C/sccache" CCACHE_DIR="$C/ccache"
# cargo's home stays where a build without the cache has it, a link to the cache: rustc writes
# its sources' paths into the binary (panic locations), so a home under /cache made a cached
# Rust package differ from the same package built without it (a reproduce said "differs").
home=${CARGO_HOME:-${HOME:-/nonexistent}/.cargo}
if [ ! -e "$home" ] && ln -s "$C/cargo" "$home" 2>/dev/null; then
    export CARGO_HOME="$home"
else
    export CARGO_HOME="$C/cargo"
fi
export CARGO_INCREMENTAL=0 SCCACHE_IGNORE_SERVER_IO_ERROR=1
key=${ORCHESTRATOR_BUILD_DIR_KEY:-}
for entry in "$C/cargo-build"/*; do
    [ -n "$key" ] && [ "${entry##*/}" = "$key" ] || rm -rf -- "$entry"
done
shopt -u nullglob dotglob
if [ -n "$key" ]; then
    # cargo's intermediate output (build-dir), kept; the binaries still land in the target
    # folder the PKGBUILD expects.
    export CARGO_BUILD_BUILD_DIR="$C/cargo-build/$key/{workspace-path-hash}"
fi
if command -v sccache >/dev/null && sccache --start-server >/dev/null 2>&1; then
    export RUSTC_WRAPPER=sccache
fi
if command -v ccache >/dev/null && [ -d /usr/lib/ccache ]; then
    ccache --zero-stats >/dev/null 2>&1
    # Debian's masquerade folder has gcc and clang but not cc and c++, which Makefiles call.
    mkdir -p /tmp/orchestrator-ccache
    ln -sf "$(command -v ccache)" /tmp/orchestrator-ccache/cc
    ln -sf "$(command -v ccache)" /tmp/orchestrator-ccache/c++
    export PATH="/tmp/orchestrator-ccache:/usr/lib/ccache:$PATH"
fi

"$@"
code=$?

if [ -n "${RUSTC_WRAPPER:-}" ]; then
    sccache --show-stats --stats-format=json >"$R/sccache.json" 2>/dev/null
    sccache --stop-server >/dev/null 2>&1
fi
if [ -d /usr/lib/ccache ]; then
    ccache --print-stats >"$R/ccache.tsv" 2>/dev/null
fi
exit "$code"
"""


def command(makepkg: tuple[str, ...]) -> tuple[str, ...]:
    return ("bash", "-c", SCRIPT, "orchestrator-cache", *makepkg)


MAX_SOURCES_BYTES = 64 * 1024  # one environment string may be 128 KiB at most (execve)


def env(info: SrcInfo, tool_max_bytes: int) -> dict[str, str]:
    """The wrapper's environment for a build of ``info``.

    cargo's build-dir is kept only when every remote source is pinned (a checksum, or a git
    mirror whose checkout makepkg makes afresh, so its files are newer than any earlier
    output), and under a key made of those pins: other sources, another build-dir. cargo
    decides what is fresh by mtime, so local files are given theirs by the runner."""
    lines = source_lines(info)
    pinned = all(line.startswith(("file\t", "git\t")) for line in lines.splitlines())
    if len(lines) > MAX_SOURCES_BYTES:
        lines, pinned = "", False  # every download again, no build-dir: slower, still right
    size = f"{max(tool_max_bytes // (1024 * 1024), 64)}M"
    key = hashlib.sha256(lines.encode()).hexdigest()[:16] if pinned else ""
    return {
        "ORCHESTRATOR_SOURCES": lines,
        "ORCHESTRATOR_BUILD_DIR_KEY": key,
        "SCCACHE_CACHE_SIZE": size,
        "CCACHE_MAXSIZE": size,
    }


def source_lines(info: SrcInfo, carch: str = CARCH) -> str:
    """One line per remote source, as the wrapper reads them: ``file NAME TOOL SUM`` for a file
    with a checksum, ``git NAME URL`` for a git source, ``other NAME`` for anything that cannot
    be shown to be this build's (its cached copy is dropped)."""
    sources = info.sources(carch)
    lines = []
    for index, entry in enumerate(sources):
        name, url = makepkg_name(entry)
        if url is None:
            continue  # a local file, from the upload
        if not _SAFE_NAME.fullmatch(name) or name in (".", ".."):
            lines.append("other\t")  # not kept (nor handled) by the wrapper; not pinned
            continue
        vcs = url.split("://", 1)[0].split("+", 1)[0]
        if vcs == "git":
            clean = url.removeprefix("git+").split("#", 1)[0].split("?", 1)[0]
            if "\t" not in clean and "\n" not in clean:
                lines.append(f"git\t{name}\t{clean}")
                continue
        elif vcs not in VCS:
            digest = _strongest_sum(info, index, carch)
            if digest is not None:
                lines.append(f"file\t{name}\t{digest[0]}\t{digest[1]}")
                continue
        lines.append(f"other\t{name}")
    return "\n".join(lines)


def _strongest_sum(info: SrcInfo, index: int, carch: str) -> tuple[str, str] | None:
    """The strongest checksum the PKGBUILD gives for source number ``index`` (of ``source``
    then ``source_<carch>``, as makepkg counts them), as (tool, digest)."""
    common = len(info.base.get("source", ()))
    for array, tool in _SUMS:
        if index < common:
            values = info.base.get(array, ())
            at = index
        else:
            values = info.base.get(f"{array}_{carch}", ())
            at = index - common
        digest = values[at].lower() if at < len(values) else "skip"
        if re.fullmatch(r"[0-9a-f]{32,128}", digest):
            return tool, digest
    return None


@dataclass(frozen=True, slots=True)
class Hits:
    hits: int
    misses: int

    @property
    def lookups(self) -> int:
        return self.hits + self.misses

    def to_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses}

    def __str__(self) -> str:
        if not self.lookups:
            return "nothing to look up"
        return f"{self.hits} of {self.lookups} hit ({100 * self.hits // self.lookups}%)"


@dataclass(frozen=True, slots=True)
class CacheReport:
    """What a build's cache gave it, as its job record and narration tell it."""

    key: str
    warm: bool  # the volume had been used by an earlier build
    sources: Hits | None = None  # remote sources found in SRCDEST (hits) or downloaded
    sccache: Hits | None = None
    ccache: Hits | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "used": True,
            "warm": self.warm,
            "sources": self.sources and self.sources.to_dict(),
            "sccache": self.sccache and self.sccache.to_dict(),
            "ccache": self.ccache and self.ccache.to_dict(),
        }

    def summary(self) -> str:
        parts = [f"cache {self.key} ({'warm' if self.warm else 'cold: first build'})"]
        if self.sources is not None and self.sources.lookups:
            parts.append(f"sources {self.sources.hits} of {self.sources.lookups} reused")
        for name in ("sccache", "ccache"):
            hits: Hits | None = getattr(self, name)
            if hits is not None and hits.lookups:
                parts.append(f"{name} {hits}")
        return "; ".join(parts)


def stored_warmth(stored: Mapping[str, Any] | None) -> bool | None:
    """Whether the cache a job record's stored report (``CacheReport.to_dict``) tells of was
    warm; None when the job used no cache."""
    if not stored or not stored.get("used"):
        return None
    return bool(stored.get("warm"))


def parse_report(key: str, warm: bool, files: Mapping[str, bytes]) -> CacheReport:
    """The report from the wrapper's files (name → content); what is missing or garbled is
    left out, since the build wrote those files and may have written anything."""
    return CacheReport(
        key,
        warm,
        sources=_sources(files.get("sources", b"")),
        sccache=_sccache(files.get("sccache.json", b"")),
        ccache=_ccache(files.get("ccache.tsv", b"")),
    )


def _sources(data: bytes) -> Hits | None:
    parts = data.decode("ascii", "replace").split()
    if len(parts) != 2 or not all(p.isdigit() and len(p) < 10 for p in parts):
        return None
    reused, wanted = int(parts[0]), int(parts[1])
    return Hits(reused, max(wanted - reused, 0))


def _sccache(data: bytes) -> Hits | None:
    try:
        stats = json.loads(data)["stats"]
        hits = _count(stats["cache_hits"])
        misses = _count(stats["cache_misses"])
    except (ValueError, KeyError, TypeError):
        return None
    return Hits(hits, misses)


def _count(field: Any) -> int:
    counts = field.get("counts", {}) if isinstance(field, dict) else {}
    return sum(v for v in counts.values() if isinstance(v, int) and v >= 0)


def _ccache(data: bytes) -> Hits | None:
    stats: dict[str, int] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        name, _, value = line.partition("\t")
        if value.strip().isdigit():
            stats[name.strip()] = int(value)
    if "cache_miss" not in stats:
        return None
    hits = stats.get("direct_cache_hit", 0) + stats.get("preprocessed_cache_hit", 0)
    return Hits(hits, stats["cache_miss"])
