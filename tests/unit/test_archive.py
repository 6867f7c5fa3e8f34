"""Safe tar in and out: hostile archives fail clearly and write nothing."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.errors import ArchiveError, ArchiveTooLarge
from orchestrator.storage import archive


def without_extraction_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make tarfile what Debian bookworm's Python 3.11.2 (the service image's) has: no extraction
    filters. Extraction itself is refused too, so a test passes only if archive writes members
    itself, whatever this Python's tarfile would have done."""
    for name in ("data_filter", "tar_filter", "fully_trusted_filter", "FilterError"):
        monkeypatch.delattr(tarfile, name, raising=False)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tarfile must only parse: archive writes the members itself")

    for method in ("extractall", "extract", "_extract_member"):
        monkeypatch.setattr(tarfile.TarFile, method, refuse)


@pytest.fixture(autouse=True, params=["this-python", "python-3.11.2"])
def python_tarfile(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every test on this Python's tarfile and on one without extraction filters."""
    if request.param == "python-3.11.2":
        without_extraction_filters(monkeypatch)
    return str(request.param)


def make_tar(
    *members: tuple[tarfile.TarInfo, bytes | None], gz: bool = False, pax: bool = False
) -> io.BytesIO:
    out = io.BytesIO()
    # PAX carries names ustar cannot (long, or with control characters) as they are.
    fmt = tarfile.PAX_FORMAT if pax else tarfile.DEFAULT_FORMAT
    with tarfile.open(fileobj=out, mode="w:gz" if gz else "w", format=fmt) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    out.seek(0)
    return out


def file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def link(name: str, target: str, *, hard: bool = False) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info, None


@pytest.mark.parametrize("gz", [False, True])
def test_extracts_a_plain_build_dir(tmp_path: Path, gz: bool) -> None:
    tar = make_tar(file("./PKGBUILD", b"pkgname=x"), file("./src/a.c", b"int x;"), gz=gz)
    names = archive.extract(tar, tmp_path / "out", max_bytes=1000)
    assert (tmp_path / "out" / "PKGBUILD").read_bytes() == b"pkgname=x"
    assert (tmp_path / "out" / "src" / "a.c").read_bytes() == b"int x;"
    assert "./src/a.c" in names


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (file("../evil"), "escapes the directory"),
        (file("a/../../evil"), "escapes the directory"),
        (file("/etc/evil"), "absolute path"),
        (link("ok", "/etc/passwd"), "outside the directory"),
        (link("sub/ok", "../../etc/passwd"), "outside the directory"),
        (link("ok", "../x", hard=True), "outside the directory"),
    ],
)
def test_refuses_members_that_escape(
    tmp_path: Path, member: tuple[tarfile.TarInfo, bytes | None], message: str
) -> None:
    tar = make_tar(file("PKGBUILD"), member)
    with pytest.raises(ArchiveError, match=message):
        archive.extract(tar, tmp_path / "out", max_bytes=1000)
    # Vetting happens before extraction: not even the harmless member was written.
    assert list((tmp_path / "out").iterdir()) == []


def test_setuid_bits_are_dropped(tmp_path: Path) -> None:
    info, data = file("tool", b"#!/bin/sh")
    info.mode = 0o4777
    archive.extract(make_tar((info, data)), tmp_path, max_bytes=1000)
    assert (tmp_path / "tool").stat().st_mode & 0o7777 == 0o755


def test_refuses_devices(tmp_path: Path) -> None:
    info = tarfile.TarInfo("dev")
    info.type = tarfile.CHRTYPE
    with pytest.raises(ArchiveError, match="special"):
        archive.extract(make_tar((info, None)), tmp_path, max_bytes=1000)


def test_allows_symlinks_that_stay_inside(tmp_path: Path) -> None:
    tar = make_tar(file("a/real", b"1"), link("a/alias", "real"), link("b", "a/real"))
    archive.extract(tar, tmp_path, max_bytes=1000)
    assert (tmp_path / "a" / "alias").read_bytes() == b"1"


def test_size_cap(tmp_path: Path) -> None:
    tar = make_tar(file("a", b"x" * 600), file("b", b"x" * 600))
    with pytest.raises(ArchiveTooLarge) as raised:
        archive.extract(tar, tmp_path, max_bytes=1000)
    assert raised.value.limit_bytes == 1000


def test_garbage_is_an_archive_error(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="not a readable tar"):
        archive.extract(io.BytesIO(b"this is not a tar at all" * 50), tmp_path, max_bytes=10**6)


def test_an_unreadable_header_after_the_first_is_an_error_not_the_end(tmp_path: Path) -> None:
    """tarfile takes a bad header past the first as the archive's end, so every member after
    it would be dropped without a word (a writer that put a negative date in one did this)."""
    good = make_tar(file("PKGBUILD", b"pkgname=x"), file("src/a.c"), file("src/b.c")).getvalue()
    broken = bytearray(good)
    second = 1024  # PKGBUILD's header and its one data block come first
    assert broken[second : second + 7] == b"src/a.c"
    broken[second + 136 : second + 148] = b"-00000000005"  # mtime: not octal
    with pytest.raises(ArchiveError, match="not a readable tar"):
        archive.extract(io.BytesIO(bytes(broken)), tmp_path, max_bytes=10**6)


def test_pack_dir_sets_owner_and_keeps_modes(tmp_path: Path) -> None:
    (tmp_path / "PKGBUILD").write_text("pkgname=x")
    (tmp_path / "run.sh").write_text("#!/bin/sh")
    (tmp_path / "run.sh").chmod(0o755)
    (tmp_path / "sub").mkdir()
    os.symlink("../PKGBUILD", tmp_path / "sub" / "link")
    packed = archive.pack_dir(tmp_path, uid=1000, gid=1000, max_bytes=10**6)
    with packed, tarfile.open(fileobj=packed) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"PKGBUILD", "run.sh", "sub", "sub/link"}
    assert all(m.uid == 1000 and m.gid == 1000 for m in members.values())
    assert members["run.sh"].mode & 0o777 == 0o755
    assert members["sub/link"].issym()


def test_pack_dir_refuses_links_out(tmp_path: Path) -> None:
    (tmp_path / "PKGBUILD").write_text("pkgname=x")
    os.symlink("/etc/passwd", tmp_path / "passwd")
    with pytest.raises(ArchiveError, match="points outside"):
        archive.pack_dir(tmp_path, uid=1000, gid=1000, max_bytes=10**6)


def test_pack_dir_size_cap(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 2000)
    with pytest.raises(ArchiveTooLarge):
        archive.pack_dir(tmp_path, uid=1000, gid=1000, max_bytes=1000)


def test_extract_packages_keeps_only_packages(tmp_path: Path) -> None:
    tar = make_tar(
        file("out/demo-1-1-x86_64.pkg.tar.zst", b"pkg"),
        file("out/demo-debug-1-1-x86_64.pkg.tar.zst", b"dbg"),
        file("out/notes.txt", b"no"),
        link("out/link.pkg.tar.zst", "/etc/passwd"),
    )
    stored = archive.extract_packages(tar, tmp_path / "art", max_bytes=1000)
    assert sorted(p.name for p in stored) == [
        "demo-1-1-x86_64.pkg.tar.zst",
        "demo-debug-1-1-x86_64.pkg.tar.zst",
    ]
    assert sorted(p.name for p in (tmp_path / "art").iterdir()) == sorted(p.name for p in stored)


def test_extract_packages_refuses_traversal_and_leaves_nothing(tmp_path: Path) -> None:
    tar = make_tar(file("good.pkg.tar.zst", b"1"), file("../evil.pkg.tar.zst", b"2"))
    with pytest.raises(ArchiveError):
        archive.extract_packages(tar, tmp_path / "art", max_bytes=1000)
    assert list((tmp_path / "art").iterdir()) == []
    assert not (tmp_path / "evil.pkg.tar.zst").exists()


# -- links that leave the folder however they are chained --------------------------------------
#
# The upload's folder sits where the service puts it, beside other jobs' uploads and under the
# data dir that holds every job's finished packages: an escape lands on someone else's files.


@dataclass
class Site:
    root: Path
    dest: Path  # this upload's folder: data/work/<job>
    data: Path
    victim: Path  # another job's finished package, served by the API
    queued: Path  # another job's upload, waiting in the queue

    def outside(self) -> dict[str, str | bytes]:
        """Everything under the test's root except ``dest``: kind and bytes of each entry."""
        seen: dict[str, str | bytes] = {}
        for top, dirs, files in os.walk(self.root):
            here = Path(top)
            dirs[:] = [d for d in dirs if here / d != self.dest]
            for name in dirs + files:
                path = here / name
                rel = str(path.relative_to(self.root))
                if path.is_symlink():
                    seen[rel] = "link:" + os.readlink(path)
                elif path.is_dir():
                    seen[rel] = "dir"
                else:
                    seen[rel] = path.read_bytes()
        return seen


@pytest.fixture
def site(tmp_path: Path) -> Site:
    data = tmp_path / "data"
    victim = data / "artifacts" / "other" / "demo-1-1-x86_64.pkg.tar.zst"
    queued = data / "work" / "other" / "PKGBUILD"
    for path, content in ((victim, b"the real package"), (queued, b"pkgname=other")):
        path.parent.mkdir(parents=True)
        path.write_bytes(content)
    dest = data / "work" / "job"
    return Site(tmp_path, dest, data, victim, queued)


def directory(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, None


VICTIM = "artifacts/other/demo-1-1-x86_64.pkg.tar.zst"
# Each link is inside the folder by the text of its own path; followed, l2 is the folder's parent
# (data/work) and l3 the data dir.
CHAIN = [directory("sub"), link("l1", "sub/.."), link("l2", "l1/.."), link("l3", "l2/..")]

ATTACKS = {
    # The attack: a chain, then files written through its end.
    "chain-write-through": [*CHAIN, file(f"l3/{VICTIM}", b"evil"), file("l3/planted", b"evil")],
    # The chain alone must be refused too: a link out is an escape waiting to be used.
    "chain-alone": CHAIN,
    # A link to a link: d/up is the folder itself, so top is its parent.
    "link-to-link": [directory("d"), link("d/up", ".."), link("top", "d/up/.."), file("top/x")],
    # The link exists (as a link to the folder itself) before the member written through it.
    "link-before-file": [link("a", "."), link("a/a/b", "../.."), file(f"b/{VICTIM}", b"evil")],
    "link-before-file-lexical": [link("evil", "../other"), file("evil/x", b"evil")],
    # x is created first, pointing through l, which a later member makes the folder itself.
    "target-is-a-later-member": [link("x", "l/.."), link("l", ".")],
    "target-is-a-later-member-write-through": [
        link("x", "l/.."),
        link("l", "."),
        file("x/other/PKGBUILD", b"evil"),
    ],
    # A hard link through the chain would share the victim's inode; the duplicate then writes it.
    "hard-link-through-chain": [*CHAIN, link("h", f"l3/{VICTIM}", hard=True), file("h", b"evil")],
    "hard-link-outside": [link("h", f"../../{VICTIM}", hard=True), file("h", b"evil")],
    # A member named like an earlier symlink: writing the file would follow the link.
    "duplicate-replaces-symlink": [*CHAIN, link("x", f"l3/{VICTIM}"), file("x", b"evil")],
    "symlink-replaces-directory": [directory("d"), link("d", "l3"), *CHAIN, file("d/planted")],
    "directory-after-file": [file("a"), directory("a")],
    "file-after-directory": [directory("a"), file("a")],
    "file-then-below-it": [file("a"), file("a/b")],
    "long-component": [file("x" * 300)],
    "long-path": [file("/".join(["d" * 200] * 25))],
    "newline-in-name": [file("a\nb")],
    # Only a pax record carries a NUL through (ustar fields end at one): a long name forces it.
    "nul-in-name": [file("d" * 120 + "\x00b")],
    "absolute-link": [link("x", "/etc")],
    "link-loop": [link("a", "b"), link("b", "a")],
}


@pytest.mark.parametrize("members", ATTACKS.values(), ids=ATTACKS.keys())
def test_hostile_archives_write_nothing(
    site: Site, members: list[tuple[tarfile.TarInfo, bytes | None]]
) -> None:
    before = site.outside()
    with pytest.raises(ArchiveError):
        archive.extract(make_tar(*members, pax=True), site.dest, max_bytes=10**6)
    assert site.victim.read_bytes() == b"the real package"
    assert site.queued.read_bytes() == b"pkgname=other"
    assert site.outside() == before
    # Everything is vetted against the whole archive before the first byte is written.
    assert list(site.dest.iterdir()) == []


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (ATTACKS["chain-alone"], "'l2' links to 'l1/..'.*outside"),
        (ATTACKS["link-before-file-lexical"], "'evil' links to '../other'.*outside"),
        (ATTACKS["target-is-a-later-member"], "'x' links to 'l/..'.*outside"),
        (ATTACKS["file-then-below-it"], "'a/b'.*'a' is a file"),
        (ATTACKS["long-component"], "longer than 255 bytes"),
        (ATTACKS["duplicate-replaces-symlink"], "'x' appears twice"),
        (ATTACKS["link-loop"], "loop"),
    ],
)
def test_refusals_name_the_member(
    site: Site, members: list[tuple[tarfile.TarInfo, bytes | None]], message: str
) -> None:
    with pytest.raises(ArchiveError, match=message):
        archive.extract(make_tar(*members, pax=True), site.dest, max_bytes=10**6)


@pytest.mark.parametrize(
    "members",
    [
        [file("planted/x", b"evil")],  # a folder on the way is a link
        [file("victim", b"evil")],  # the file itself is a link
        [link("y", "planted/..")],  # fine by the archive alone, outside on this disk
    ],
    ids=["through-folder", "onto-link", "link-via-disk"],
)
def test_links_already_on_disk_are_never_followed(
    site: Site, members: list[tuple[tarfile.TarInfo, bytes | None]]
) -> None:
    """The plan knows only the archive; the writes themselves must not trust the disk."""
    site.dest.mkdir(parents=True)
    os.symlink("../..", site.dest / "planted")
    os.symlink(site.victim, site.dest / "victim")
    before = site.outside()
    with pytest.raises(ArchiveError, match=r"cannot be written here|outside the directory"):
        archive.extract(make_tar(*members), site.dest, max_bytes=1000)
    assert site.victim.read_bytes() == b"the real package"
    assert site.outside() == before
    assert not (site.dest / "y").is_symlink()


def test_a_build_dir_as_tar_makes_it(tmp_path: Path) -> None:
    """What ``tar -c -C DIR .`` makes: a ``./`` member for the folder itself, then ``./``
    prefixes, links inside (also to links, and to members that come later)."""
    tar = make_tar(
        directory("./", mode=0o700),
        link("./first", "src/later.c"),
        file("./src/later.c", b"int x;"),
        link("./src/alias", "../first"),
        link("./latest", "src"),
        directory("./src/"),
        link("./self", "."),
    )
    archive.extract(tar, tmp_path / "out", max_bytes=1000)
    out = tmp_path / "out"
    assert (out / "src" / "alias").read_bytes() == b"int x;"
    assert (out / "latest").is_symlink() and (out / "latest" / "later.c").is_file()
    assert os.readlink(out / "first") == "src/later.c"
    assert (out / "self").resolve() == out.resolve()


def test_a_repeated_file_takes_the_last_copy(tmp_path: Path) -> None:
    # What `tar -r` (append) makes: the later member wins, as tar itself does.
    tar = make_tar(file("a", b"old"), file("a", b"new"))
    archive.extract(tar, tmp_path, max_bytes=1000)
    assert (tmp_path / "a").read_bytes() == b"new"


def test_a_hard_link_becomes_a_copy_of_an_earlier_file(tmp_path: Path) -> None:
    tar = make_tar(file("src/a", b"data"), link("b", "src/a", hard=True))
    archive.extract(tar, tmp_path, max_bytes=1000)
    assert (tmp_path / "b").read_bytes() == b"data"
    # A copy, not a shared inode: nothing written to one name can reach another.
    assert os.stat(tmp_path / "b").st_ino != os.stat(tmp_path / "src" / "a").st_ino


@pytest.mark.parametrize(
    "members",
    [
        [link("b", "a", hard=True), file("a")],  # the target comes later
        [directory("d"), link("b", "d", hard=True)],
        [file("a"), link("s", "a"), link("b", "s", hard=True)],
    ],
    ids=["later", "directory", "symlink"],
)
def test_a_hard_link_to_anything_but_an_earlier_file_is_refused(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]
) -> None:
    with pytest.raises(ArchiveError, match="'b'"):
        archive.extract(make_tar(*members), tmp_path, max_bytes=1000)


def test_hard_link_copies_count_towards_the_size_cap(tmp_path: Path) -> None:
    tar = make_tar(file("a", b"x" * 600), link("b", "a", hard=True))
    with pytest.raises(ArchiveTooLarge):
        archive.extract(tar, tmp_path, max_bytes=1000)


def test_modes_keep_exec_bits_and_stay_ours(tmp_path: Path) -> None:
    unreadable, _ = file("secret")
    unreadable.mode = 0o000
    tool, _ = file("tool")
    tool.mode = 0o6775  # setuid, setgid, group write
    sticky = directory("locked", mode=0o1555)
    tar = make_tar((unreadable, b"1"), (tool, b"2"), sticky, file("locked/x"))
    archive.extract(tar, tmp_path, max_bytes=1000)
    mode = lambda name: (tmp_path / name).stat().st_mode & 0o7777  # noqa: E731
    # We must read every file (to copy it into the container) and remove every folder.
    assert mode("secret") == 0o600
    assert mode("tool") == 0o755
    assert mode("locked") == 0o755


def test_a_header_claiming_a_huge_size_is_not_read_into_memory(tmp_path: Path) -> None:
    """A pax header's own size is read in one piece: 64 MiB of it compresses to 64 KiB."""
    info, data = file("PKGBUILD")
    info.pax_headers = {"comment": "x" * (64 * 1024 * 1024)}
    tar = make_tar((info, data), gz=True, pax=True)
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveError):
            archive.extract(tar, tmp_path, max_bytes=10**6)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak_bytes < 16 * 1024 * 1024


def test_decompression_stops_at_the_cap(tmp_path: Path) -> None:
    """A gzip bomb made of headers (no member data to count): decompression stops near the cap
    instead of inflating the whole stream."""
    members = []
    for n in range(200):
        info, data = file(f"f{n}", b"")
        info.pax_headers = {"comment": "x" * 50_000}
        members.append((info, data))
    tar = make_tar(*members, gz=True, pax=True)
    with pytest.raises(ArchiveError):
        archive.extract(tar, tmp_path, max_bytes=1000, max_members=100)
    assert list(tmp_path.iterdir()) == []


def test_headers_that_make_tarfile_backtrack_are_refused_at_once(tmp_path: Path) -> None:
    """Python before 3.11.10 searches pax headers with a regex that is quadratic in a run of
    digits (CVE-2024-6232): 48 KB of them cost it seconds, of CPU and of the GIL."""
    members = []
    for n in range(10):
        info, data = file(f"f{n}")
        info.pax_headers = {"comment": "9" * 48_000}
        members.append((info, data))
    tar = make_tar(*members, gz=True, pax=True)
    started = time.monotonic()
    with pytest.raises(ArchiveError):
        archive.extract(tar, tmp_path, max_bytes=10**6)
    assert time.monotonic() - started < 3


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar to make a sparse member")
def test_sparse_members_count_their_real_size(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with (src / "holes").open("wb") as fh:
        fh.truncate(4 * 1024 * 1024)
        fh.write(b"start")
    packed = tmp_path / "sparse.tar"
    subprocess.run(["tar", "-S", "-cf", str(packed), "-C", str(src), "holes"], check=True)
    with packed.open("rb") as fh, pytest.raises(ArchiveTooLarge):
        archive.extract(fh, tmp_path / "small", max_bytes=1024 * 1024)
    with packed.open("rb") as fh:
        archive.extract(fh, tmp_path / "big", max_bytes=8 * 1024 * 1024)
    assert (tmp_path / "big" / "holes").read_bytes() == (src / "holes").read_bytes()


def test_extract_packages_refuses_unwritable_and_repeated_names(tmp_path: Path) -> None:
    long = make_tar(file("out/" + "x" * 300 + ".pkg.tar.zst"))
    with pytest.raises(ArchiveError, match="longer than 255 bytes"):
        archive.extract_packages(long, tmp_path / "a", max_bytes=1000)
    twice = make_tar(file("out/a.pkg.tar.zst", b"1"), file("other/a.pkg.tar.zst", b"2"))
    with pytest.raises(ArchiveError, match="two packages named"):
        archive.extract_packages(twice, tmp_path / "b", max_bytes=1000)
    assert list((tmp_path / "b").iterdir()) == []


def test_extract_packages_never_writes_through_a_link(tmp_path: Path) -> None:
    """A build controls what its package folder holds: links named like packages are skipped,
    and a package already in the artifact dir as a link is replaced, never written through."""
    outside = tmp_path / "outside"
    outside.write_bytes(b"keep")
    art = tmp_path / "art"
    art.mkdir()
    os.symlink(outside, art / "demo.pkg.tar.zst")
    tar = make_tar(link("out/x.pkg.tar.zst", str(outside)), file("demo.pkg.tar.zst", b"pkg"))
    stored = archive.extract_packages(tar, art, max_bytes=1000)
    assert [p.name for p in stored] == ["demo.pkg.tar.zst"]
    assert not (art / "demo.pkg.tar.zst").is_symlink()
    assert (art / "demo.pkg.tar.zst").read_bytes() == b"pkg"
    assert outside.read_bytes() == b"keep"


def test_an_archive_of_links_to_long_chains_is_refused_quickly(tmp_path: Path) -> None:
    # 5 000 links, each to a 2 040-step path through `a -> .`: tiny gzipped, and minutes of
    # CPU if every link were followed (found by a hostile review).
    deep = "/".join(["a"] * 2040) + "/PKGBUILD"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("PKGBUILD")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"x\n"))
        link = tarfile.TarInfo("a")
        link.type, link.linkname = tarfile.SYMTYPE, "."
        tar.addfile(link)
        for i in range(5000):
            link = tarfile.TarInfo(f"l{i}")
            link.type, link.linkname = tarfile.SYMTYPE, deep
            tar.addfile(link)
    out.seek(0)
    # CPU time, not wall time: what is measured is the work, whatever else the machine runs.
    began = time.process_time()
    with pytest.raises(ArchiveError, match="path components in all"):
        archive.extract(out, tmp_path / "dest", max_bytes=1 << 20)
    assert time.process_time() - began < 10
