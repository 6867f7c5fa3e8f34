"""What makepkg itself reads from a PKGBUILD: its ``.SRCINFO``, and what follows from it.

Bash is the only complete parser of bash, so the PKGBUILD is never read here: makepkg reads it
(``makepkg --printsrcinfo``, in a sandbox: see ``Inspector``) and this module parses what makepkg
printed, a plain ``key = value`` format. The text is kept exactly as makepkg printed it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import PkgbuildError

CARCH = "x86_64"  # what the build images are
_DEP_NAME = re.compile(r"^([^<>=:\s]+)")
# Checksums and the like: per source, so only their count matters to us.
_SUMS = (
    "b2sums",
    "cksums",
    "md5sums",
    "sha1sums",
    "sha224sums",
    "sha256sums",
    "sha384sums",
    "sha512sums",
)


@dataclass(frozen=True, slots=True)
class SrcInfo:
    text: str  # exactly as makepkg printed it
    pkgbase: str
    base: Mapping[str, tuple[str, ...]]  # the pkgbase section's keys
    packages: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    # What the PKGBUILD's top level printed while makepkg read it (stdout before the .SRCINFO,
    # then stderr), cut to a few KiB: makepkg goes on, and so do we, with a warning.
    printed: str = ""

    @property
    def warnings(self) -> tuple[str, ...]:
        if not self.printed:
            return ()
        return (f"the PKGBUILD printed this while makepkg read it: {self.printed}",)

    def first(self, key: str, default: str = "") -> str:
        values = self.base.get(key)
        return values[0] if values else default

    @property
    def pkgnames(self) -> tuple[str, ...]:
        return tuple(self.packages) or (self.pkgbase,)

    @property
    def version(self) -> str:
        """``[epoch:]pkgver-pkgrel``, as makepkg puts it in package file names."""
        epoch = self.first("epoch")
        core = f"{self.first('pkgver')}-{self.first('pkgrel')}"
        return f"{epoch}:{core}" if epoch and epoch != "0" else core

    @property
    def arch(self) -> tuple[str, ...]:
        return self.base.get("arch", ())

    def per_arch(self, key: str, carch: str = CARCH) -> tuple[str, ...]:
        """``key`` and ``key_<carch>`` of the pkgbase section, in that order."""
        return self.base.get(key, ()) + self.base.get(f"{key}_{carch}", ())

    def sources(self, carch: str = CARCH) -> tuple[str, ...]:
        return self.per_arch("source", carch)

    def local_sources(self, carch: str = CARCH) -> tuple[str, ...]:
        """The file names makepkg looks for in the upload: sources that are no URL."""
        return tuple(name for name, url in map(makepkg_name, self.sources(carch)) if url is None)

    def needs(self, carch: str = CARCH) -> tuple[str, ...]:
        """Every package name in depends, makedepends and checkdepends, of the base and of
        each split package, without version constraints, first seen first."""
        names: dict[str, None] = {}
        sections = [self.base, *self.packages.values()]
        for section in sections:
            for key in ("depends", "makedepends", "checkdepends"):
                for dep in section.get(key, ()) + section.get(f"{key}_{carch}", ()):
                    if match := _DEP_NAME.match(dep):
                        names.setdefault(match.group(1))
        return tuple(names)

    def package_files(self, carch: str = CARCH) -> tuple[str, ...]:
        """The package files makepkg names for this (without the compression suffix)."""
        files = []
        for name in self.pkgnames:
            arch = self.packages.get(name, {}).get("arch") or self.arch
            built_arch = "any" if tuple(arch) == ("any",) else carch
            files.append(f"{name}-{self.version}-{built_arch}.pkg.tar")
        return tuple(files)

    def summary(self) -> dict[str, object]:
        """The fields a client sees with the job."""
        return {
            "pkgbase": self.pkgbase,
            "pkgnames": list(self.pkgnames),
            "version": self.version,
            "arch": list(self.arch),
            "sources": list(self.sources()),
            "depends": list(self.per_arch("depends")),
            "makedepends": list(self.per_arch("makedepends")),
        }


MAX_PRINTED_CHARS = 2048


def read_output(stdout: str, stderr: str) -> SrcInfo:
    """The .SRCINFO in what ``makepkg --printsrcinfo`` printed (exit code 0), and apart from it
    what the PKGBUILD's own top level printed.

    makepkg sources the PKGBUILD before it prints the .SRCINFO, so the .SRCINFO is the end of
    stdout: its ``pkgbase`` line, then only its own lines (indented, empty or ``pkgname``). So
    it is found from the end, and a top level that prints .SRCINFO-like lines of its own cannot
    pass them off as makepkg's; one whose last line has no newline leaves its text just before
    ``pkgbase`` on that line, as makepkg's own output has it."""
    lines = stdout.split("\n")
    first = len(lines) - 1
    while first >= 0 and (not lines[first] or lines[first].startswith(("\t", "pkgname = "))):
        first -= 1
    at = lines[first].rfind("pkgbase = ") if first >= 0 else -1
    if at < 0:
        raise PkgbuildError("makepkg printed no pkgbase: is this a PKGBUILD?")
    text = "\n".join([lines[first][at:], *lines[first + 1 :]])
    before = "\n".join([*lines[:first], lines[first][:at]])
    printed = "\n".join(part.strip() for part in (before, stderr) if part.strip())
    if len(printed) > MAX_PRINTED_CHARS:
        more = len(printed) - MAX_PRINTED_CHARS
        printed = f"{printed[:MAX_PRINTED_CHARS]}… ({more} more characters)"
    return replace(parse(text), printed=printed)


def parse(text: str) -> SrcInfo:
    """Parse makepkg's ``--printsrcinfo`` output; raises ``PkgbuildError`` if it is not that."""
    pkgbase: str | None = None
    base: dict[str, list[str]] = {}
    packages: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(" = ")
        if not sep:
            if line.endswith(" ="):  # an empty value
                key, value = line[:-2], ""
            else:
                raise PkgbuildError(f"makepkg printed an unreadable .SRCINFO line: {raw!r}", number)
        if key == "pkgbase" and not raw.startswith(("\t", " ")):
            if pkgbase is not None:
                raise PkgbuildError(
                    "makepkg's .SRCINFO has a second pkgbase (printed by the "
                    "PKGBUILD's top level?)",
                    number,
                )
            pkgbase, section = value, base
        elif key == "pkgname" and not raw.startswith(("\t", " ")):
            section = packages.setdefault(value, {})
        elif section is None:
            raise PkgbuildError(f".SRCINFO has {key!r} before its pkgbase", number)
        else:
            section.setdefault(key, []).append(value)
    if pkgbase is None:
        raise PkgbuildError("makepkg printed no pkgbase: is this a PKGBUILD?")
    return SrcInfo(
        text,
        pkgbase,
        {k: tuple(v) for k, v in base.items()},
        {name: {k: tuple(v) for k, v in keys.items()} for name, keys in packages.items()},
    )


def problems(info: SrcInfo, build_dir: Path) -> list[str]:
    """What makepkg would stop at later, found before anything starts (a 422 for a build)."""
    found = []
    for name in info.local_sources():
        if name in ("", ".", "..") or not (build_dir / name).is_file():
            found.append(f"local source {name!r} is not in the upload")
    for suffix in ("", f"_{CARCH}"):
        sources = info.base.get(f"source{suffix}", ())
        for sums in _SUMS:
            given = info.base.get(f"{sums}{suffix}", ())
            if given and len(given) != len(sources):
                found.append(
                    f"{sums}{suffix} has {len(given)} entries for {len(sources)} "
                    f"source{suffix} entries"
                )
    if info.arch and not {"any", CARCH} & set(info.arch):
        found.append(f"arch is ({' '.join(info.arch)}): the build images are {CARCH}")
    return found


def not_provided(info: SrcInfo, provides: Iterable[str]) -> list[str]:
    """The packages the PKGBUILD depends on that the build image does not provide."""
    have = set(provides)
    return [name for name in info.needs() if name not in have]


# The version-control schemes makepkg fetches itself (``git+https://…``).
VCS = ("bzr", "fossil", "git", "hg", "svn")


def makepkg_name(entry: str) -> tuple[str, str | None]:
    """The name makepkg keeps a source under in ``SRCDEST`` and its URL (None for a local file),
    as makepkg's ``get_filename`` and ``get_url`` have them."""
    name, sep, url = entry.partition("::")
    if not sep:
        name, url = "", entry
    if "://" not in url and not url.startswith("lp:"):
        return (name or url).rsplit("/", 1)[-1], None
    if name:
        return name, url
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme in VCS:
        base = url.split("#", 1)[0].split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return (base.split(".git", 1)[0] if scheme == "git" else base), url
    return url.rsplit("/", 1)[-1], url  # makepkg keeps a query or fragment in the name
