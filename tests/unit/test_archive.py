"""Safe tar in and out: hostile archives fail clearly and write nothing."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from orchestrator import archive
from orchestrator.errors import ArchiveError, ArchiveTooLarge


@pytest.fixture(autouse=True, params=[True, False], ids=["filters", "no-filters"])
def filters(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run every test with and without tarfile's extraction filters (absent before 3.11.4)."""
    if request.param and not archive._HAS_FILTERS:
        pytest.skip("this Python has no tarfile extraction filters")
    monkeypatch.setattr(archive, "_HAS_FILTERS", request.param)
    return bool(request.param)


def make_tar(*members: tuple[tarfile.TarInfo, bytes | None], gz: bool = False) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if gz else "w") as tar:
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
