"""A hostile build's output against the repository: real repo-add and gpg, no daemon."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from orchestrator.errors import NotFound, RepoError
from orchestrator.provenance import PAYLOAD_TYPE, pae
from orchestrator.repo import Repository, Signer

from ..repos import make_package, short_folder


@pytest.fixture
def signer() -> Iterator[Signer]:
    with short_folder("hostile-") as folder:
        signer = Signer.open(folder / "gnupg", None)
        try:
            yield signer
        finally:
            signer.close()


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


def test_a_pkginfo_line_repo_add_would_run_is_refused(signer: Signer) -> None:
    """repo-add ``declare``s each .PKGINFO key as a variable: a key with an array subscript
    runs a command substitution in it, as the service, beside the key's secret."""
    root = signer.home.parent
    (root / "out").mkdir()
    ran = root / "ran"
    info = f"pkgname = evil\npkgver = 1.0-1\nx[$(touch${{IFS:0:1}}{ran})] = 1\n"
    package = make_package(root / "out", "evil", info=info)
    repo = Repository(root / "repo", "orchestrator-cpu", signer)
    with pytest.raises(RepoError, match="PKGINFO"):
        repo.publish([package])
    assert not ran.exists()


@pytest.mark.parametrize(
    "pkgname", ["../../{root}/escaped", "-v", "other"], ids=["dots", "option", "other"]
)
def test_a_pkgname_other_than_the_file_s_is_refused(signer: Signer, pkgname: str) -> None:
    """repo-add makes a folder named after the .PKGINFO's pkgname: ``..`` in it writes outside
    its own, ``-v`` is an option to mkdir; both leave an empty database served (every package
    gone). A package says the name its file says, or is not published."""
    root = signer.home.parent
    (root / "out").mkdir()
    repo = Repository(root / "repo", "orchestrator-cpu", signer)
    kept = make_package(root / "out", "kept")
    repo.publish([kept])
    # repo-add's folder is /tmp/repo-tools.*/db: up twice is /tmp, where this test's root is.
    info = f"pkgname = {pkgname.format(root=root.name)}\npkgver = 1.0-1\narch = x86_64\n"
    with pytest.raises(RepoError, match="PKGINFO"):
        repo.publish([make_package(root / "out", "evil", info=info)])
    assert repo.packages() == {"kept": kept.name}
    assert not list(root.rglob("escaped*"))


@pytest.mark.parametrize("name", ["a" * 300, "orchestrator-cpu." + "a" * 300, "fine.sig\n"])
def test_a_name_no_file_has_is_not_found(signer: Signer, name: str) -> None:
    """Too long for the filesystem (a 500 and a logged traceback before), or with a newline."""
    root = signer.home.parent
    (root / "out").mkdir()
    repo = Repository(root / "repo", "orchestrator-cpu", signer)
    repo.publish([make_package(root / "out", "fine")])
    with pytest.raises(NotFound):
        repo.file(name)
