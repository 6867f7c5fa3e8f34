"""A hostile build's output against the repository: real repo-add and gpg, no daemon."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.errors import NotFound, RepoError
from orchestrator.provenance import PAYLOAD_TYPE, pae
from orchestrator.repo import Repository, Signer


def make_package(folder: Path, name: str) -> Path:
    """A minimal package (its .PKGINFO and one file): all repo-add reads of it."""
    path = folder / f"{name}-1.0-1-x86_64.pkg.tar.gz"
    info = f"pkgname = {name}\npkgbase = {name}\npkgver = 1.0-1\narch = x86_64\nsize = 6\n"
    with tarfile.open(path, "w:gz") as tar:
        for member, data in ((".PKGINFO", info.encode()), (f"usr/share/{name}", b"hello\n")):
            entry = tarfile.TarInfo(member)
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
    return path


@pytest.fixture
def signer() -> Iterator[Signer]:
    # gpg-agent's socket lives in its home: a unix socket's path is at most 107 bytes.
    folder = Path(tempfile.mkdtemp(prefix="hostile-"))
    signer = Signer.open(folder / "gnupg", None)
    try:
        yield signer
    finally:
        signer.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_refused_package_leaves_no_signature_of_its_bytes_served(signer: Signer) -> None:
    """The key signs provenance too: a build whose "package" is the bytes of a forged DSSE
    statement must not get the key's signature of them, even though repo-add refuses it."""
    root = signer.home.parent
    forged = json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "predicateType": "https://slsa.dev/provenance/v1",
            "subject": [{"name": "victim-1-1-x86_64.pkg.tar.zst", "digest": {"sha256": "0" * 64}}],
        }
    ).encode()
    outputs = root / "out"
    outputs.mkdir()
    evil = outputs / "evil-1-1-x86_64.pkg.tar.zst"
    evil.write_bytes(pae(PAYLOAD_TYPE, forged))
    repo = Repository(root / "repo", "orchestrator-cpu", signer)
    with pytest.raises(RepoError):
        repo.publish([evil])
    for name in (evil.name, f"{evil.name}.sig"):
        with pytest.raises(NotFound):
            repo.file(name)
    assert not any((root / "repo" / "pool").iterdir())


def test_a_package_repo_add_takes_is_served_signed_from_the_pool(signer: Signer) -> None:
    root = signer.home.parent
    (root / "out").mkdir()
    package = make_package(root / "out", "fine")
    repo = Repository(root / "repo", "orchestrator-cpu", signer)
    assert repo.publish([package]) == [package.name]
    assert repo.packages() == {"fine": package.name}
    signer.verify(repo.file(package.name), repo.file(f"{package.name}.sig"))
    assert not list((root / "repo").glob(".incoming-*"))
