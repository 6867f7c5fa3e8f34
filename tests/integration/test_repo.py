"""The signed package repositories, with real builds, real repo-add, gpg and pacman.

One service and one real build (hello-c) serve the whole flow: publish, the build's signed
provenance (checked by ``orchestrator verify``), install into a scratch root with
``SigLevel = Required`` over HTTP with the token, a flipped byte refused, concurrent publishes
(of small packages made here: the same code path, without more builds), removal.
A full disk is a tmpfs under the repository alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from orchestrator import Settings
from orchestrator.api.keys import REPOS
from orchestrator.cli import main
from orchestrator.cli.client import EXIT_OK
from orchestrator.cli.verify import EXIT_BAD_PROVENANCE, EXIT_BAD_SIGNATURE, EXIT_NOT_SUBJECT
from orchestrator.errors import RepoError
from orchestrator.provenance import Keyring, opened, subjects
from orchestrator.provenance import envelope as dsse
from orchestrator.repo import Repository, Signer

from ..conftest import PKGBUILDS
from ..repos import make_package, short_folder
from ..waiting import until
from .conftest import serve
from .service import submit

pytestmark = pytest.mark.docker

TOKEN = "repo-test-token"
MiB = 1024**2


async def _json(answer: Awaitable[ClientResponse]) -> Any:
    return await (await answer).json()


class Pacman:
    """pacman into a scratch root, trusting the repository's key as the README says."""

    def __init__(self, folder: Path, url: str, key: str) -> None:
        self.folder = folder
        self.gpgdir = folder / "gnupg"
        (folder / "key.asc").write_text(key)
        conf = folder / "pacman.conf"
        conf.write_text(
            "[options]\nArchitecture = x86_64\nSigLevel = Required\n\n"
            f"[orchestrator-cpu]\nServer = {url}/repo/cpu/$arch\n"
        )
        self._pacman_key("--init")
        self._pacman_key("--add", str(folder / "key.asc"))
        shown = subprocess.run(
            ["gpg", "--with-colons", "--show-keys", str(folder / "key.asc")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        fingerprint = next(ln.split(":")[9] for ln in shown.splitlines() if ln.startswith("fpr"))
        self._pacman_key("--lsign-key", fingerprint)

    def _pacman_key(self, *args: str) -> None:
        subprocess.run(
            ["pacman-key", "--gpgdir", str(self.gpgdir), *args], check=True, capture_output=True
        )

    def install(self, pkgname: str) -> subprocess.CompletedProcess[str]:
        """``pacman -Sy pkgname`` into a new root, with an empty package cache."""
        root = self.folder / "root"
        shutil.rmtree(root, ignore_errors=True)
        (root / "var/lib/pacman").mkdir(parents=True)
        cache = self.folder / "cache"
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir()
        command = ["pacman", "--config", str(self.folder / "pacman.conf"), "--root", str(root)]
        command += ["--dbpath", str(root / "var/lib/pacman"), "--gpgdir", str(self.gpgdir)]
        command += ["--cachedir", str(cache), "--noconfirm", "--noprogressbar", "-Sy", pkgname]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.gpgdir), "--kill", "all"], check=False)


@pytest.fixture
def scratch() -> Iterator[Path]:
    with short_folder("repo-") as folder:
        yield folder


async def test_publish_install_tamper_concurrent_remove(
    settings: Settings, scratch: Path, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"api_token": SecretStr(TOKEN)})
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with serve(settings) as client:
        job = await submit(client, PKGBUILDS / "hello-c", headers=auth, publish="true")
        done = await until(
            lambda: _json(client.get(f"/v1/jobs/{job['job_id']}", headers=auth)),
            lambda j: j["status"] in ("succeeded", "failed"),
            timeout_s=300,
            interval_s=0.2,
            what="the build to end",
        )
        assert done["status"] == "succeeded", done
        package = done["artifacts"][0]["name"]
        listed = await (await client.get("/v1/repo/cpu", headers=auth)).json()
        built = f"/v1/jobs/{job['job_id']}/artifacts/{package}"
        sha256 = hashlib.sha256(await (await client.get(built, headers=auth)).read()).hexdigest()
        assert listed["packages"] == [{"name": "hello-c", "filename": package, "sha256": sha256}]

        assert (await client.get("/repo/key")).status == 401
        assert (await client.get("/repo/cpu/x86_64/orchestrator-cpu.db")).status == 401
        key = await (await client.get("/repo/key", headers=auth)).text()
        assert key.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
        assert "PRIVATE" not in key
        for name in ("../../../orchestrator.db", ".lock", "current", "nothing.pkg.tar.gz"):
            answer = await client.get(f"/repo/cpu/x86_64/{name}", headers=auth)
            assert answer.status == 404, name

        url = f"http://user:{TOKEN}@127.0.0.1:{client.port}"
        pacman = Pacman(scratch, url, key)
        try:
            installed = await asyncio.to_thread(pacman.install, "hello-c")
            assert installed.returncode == 0, installed.stderr
            assert (scratch / "root/usr/bin/hello").is_file()

            await _provenance_holds(client, job["job_id"], package, key, scratch)
            await _tampered_is_refused(settings, package, pacman)
            await _concurrent_publishes(client, settings, tmp_path)

            removed = await client.delete("/v1/repo/cpu/packages/hello-c", headers=auth)
            assert (await removed.json()) == {"removed": package}
            gone = await client.delete("/v1/repo/cpu/packages/hello-c", headers=auth)
            assert gone.status == 404
            assert (await client.get(f"/repo/cpu/x86_64/{package}", headers=auth)).status == 404
            refused = await asyncio.to_thread(pacman.install, "hello-c")
            assert refused.returncode != 0 and "target not found" in refused.stderr
        finally:
            pacman.close()


async def _provenance_holds(
    client: TestClient, job_id: str, package: str, key: str, folder: Path
) -> None:
    """The build's signed provenance names the served package's bytes and the submitted
    files; ``orchestrator verify`` takes the package and refuses a flipped byte, a provenance
    another key signed and one that names other bytes."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    served = await client.get(f"/v1/jobs/{job_id}/artifacts/{package}", headers=auth)
    data = await served.read()
    envelope = await _json(client.get(f"/v1/jobs/{job_id}/provenance", headers=auth))
    with Keyring.of(key) as ring:
        stmt = await asyncio.to_thread(opened, envelope, ring.verify)
    assert subjects(stmt) == {package: hashlib.sha256(data).hexdigest()}
    build = stmt["predicate"]["buildDefinition"]
    pkgbuild = hashlib.sha256((PKGBUILDS / "hello-c/PKGBUILD").read_bytes()).hexdigest()
    assert {"name": "PKGBUILD", "digest": {"sha256": pkgbuild}} in build["resolvedDependencies"]
    assert stmt["predicate"]["runDetails"]["metadata"]["invocationId"] == job_id

    (folder / package).write_bytes(data)
    base = ["verify", str(folder / package), "--url", f"http://127.0.0.1:{client.port}"]
    base += ["--token", TOKEN]
    assert await asyncio.to_thread(main, [*base, "--job", job_id]) == EXIT_OK
    # Offline: the key, the signature and the provenance as files.
    (folder / "key.asc").write_text(key)
    (folder / "prov.json").write_text(json.dumps(envelope))
    offline = [*base, "--key", str(folder / "key.asc"), "--provenance", str(folder / "prov.json")]
    (folder / f"{package}.sig").write_bytes(
        await (await client.get(f"/repo/cpu/x86_64/{package}.sig", headers=auth)).read()
    )
    assert await asyncio.to_thread(main, offline) == EXIT_OK

    repos = client.app[REPOS]
    other = Signer.open(folder / "other", None)
    try:
        stmt_other = {**stmt, "subject": [{"name": package, "digest": {"sha256": "0" * 64}}]}
        for signer, code in ((other, EXIT_BAD_PROVENANCE), (repos.signer, EXIT_NOT_SUBJECT)):
            wrong = dsse(stmt_other, signer.fingerprint, signer.sign_bytes)
            (folder / "prov.json").write_text(json.dumps(wrong))
            assert await asyncio.to_thread(main, offline) == code
    finally:
        other.close()
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF
    (folder / package).write_bytes(bytes(flipped))
    assert await asyncio.to_thread(main, [*base, "--job", job_id]) == EXIT_BAD_SIGNATURE


async def _tampered_is_refused(settings: Settings, package: str, pacman: Pacman) -> None:
    served = settings.repo_dir / "cpu/x86_64/pool" / package
    original = served.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF
    served.write_bytes(bytes(flipped))
    try:
        refused = await asyncio.to_thread(pacman.install, "hello-c")
        assert refused.returncode != 0
        assert "invalid or corrupted package (PGP signature)" in refused.stderr, refused.stderr
    finally:
        served.write_bytes(original)


async def _concurrent_publishes(client: TestClient, settings: Settings, folder: Path) -> None:
    """Two publishes at once in the service, and one from a second repository object (as a
    second process would make): all land."""
    repos = client.app[REPOS]
    other = Repository(settings.repo_dir / "cpu/x86_64", "orchestrator-cpu", repos.signer)
    made = [make_package(folder, name) for name in ("con-a", "con-b", "con-c")]
    await asyncio.gather(
        repos.publish("cpu", [made[0]]),
        repos.publish("cpu", [made[1]]),
        asyncio.to_thread(other.publish, [made[2]]),
    )
    assert {"hello-c", "con-a", "con-b", "con-c"} <= set(other.packages())


@pytest.fixture
def small_disk(scratch: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = scratch / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_leaves_the_database_serving(small_disk: Path, scratch: Path) -> None:
    """With ever more room left, a publish fails wherever the disk ends (the pool, the copy,
    repo-add's write, its signature) until it fits: each failure leaves the database served
    before whole, signed and served, and nothing half-made beside it."""
    signer = Signer.open(scratch / "gnupg", None)
    repo = Repository(small_disk / "cpu/x86_64", "orchestrator-cpu", signer)
    filler = small_disk / "filler"
    try:
        repo.publish([make_package(scratch, "first")])
        failures = 0
        for free_kib in range(0, 64, 4):
            served = repo.file("orchestrator-cpu.db").read_bytes()
            listed = repo.packages()
            _fill(filler, free_kib * 1024)
            try:
                repo.publish([make_package(scratch, f"second{free_kib}")])
            except RepoError:
                failures += 1
                assert repo.file("orchestrator-cpu.db").read_bytes() == served
                assert repo.packages() == listed
            else:
                assert f"second{free_kib}" in repo.packages()
            db = repo.file("orchestrator-cpu.db")
            signer.verify(db, repo.file("orchestrator-cpu.db.sig"))
            assert [p.name for p in repo.root.glob("db-*")] == [db.resolve().parent.name]
            filler.unlink()
        assert failures >= 2
        assert "first" in repo.packages()
    finally:
        signer.close()


def _fill(filler: Path, free_bytes: int) -> None:
    """Fill the disk, then give back ``free_bytes`` of it."""
    block = bytes(64 * 1024)
    with contextlib.suppress(OSError), filler.open("wb") as fh:
        while True:
            fh.write(block)
            fh.flush()
    os.truncate(filler, max(0, filler.stat().st_size - free_bytes))


def test_a_new_key_signs_the_repository_again(scratch: Path) -> None:
    """Rotation: the service started with another key signs what it serves again."""
    first = Signer.open(scratch / "first", None)
    second = Signer.open(scratch / "second", None)
    try:
        root = scratch / "repo"
        Repository(root, "orchestrator-cpu", first).publish([make_package(scratch, "kept")])
        rotated = Repository(root, "orchestrator-cpu", second)
        assert rotated.resign() is True
        assert rotated.resign() is False  # once
        for name in (
            "orchestrator-cpu.db",
            "orchestrator-cpu.files",
            "kept-1.0-1-x86_64.pkg.tar.gz",
        ):
            second.verify(rotated.file(name), rotated.file(f"{name}.sig"))
        assert set(rotated.packages()) == {"kept"}
    finally:
        first.close()
        second.close()


class _Killed(BaseException):
    """The process dying at that point: nothing after it runs, not even ``except`` clauses
    that catch ``Exception``."""


def _sha256_listed(repo: Repository, filename: str) -> str:
    with tarfile.open(repo.file("orchestrator-cpu.db")) as db:
        for member in db:
            handle = db.extractfile(member) if member.name.endswith("/desc") else None
            text = handle.read().decode() if handle else ""
            if f"%FILENAME%\n{filename}\n" in text:
                return text.split("%SHA256SUM%\n")[1].split("\n")[0]
    raise AssertionError(f"{filename} is not listed")


def test_a_republish_killed_before_the_database_changes_keeps_pool_and_database_agreeing(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same file name built again (other bytes) and the service killed between the pool
    and the database: what the database lists must still be what the pool holds, signed; the
    next change tidies what the killed one left behind."""
    signer = Signer.open(scratch / "gnupg", None)
    repo = Repository(scratch / "repo", "orchestrator-cpu", signer)
    try:
        first = make_package(scratch, "same")
        repo.publish([first])
        rebuilt = scratch / "rebuilt"
        rebuilt.mkdir()
        again = make_package(rebuilt, "same")
        with again.open("ab") as fh:
            fh.write(b"\0" * 1024)  # a rebuild: same name, other bytes
        name = again.name

        def killed(*_args: object) -> None:
            raise _Killed

        monkeypatch.setattr("orchestrator.repo.repository._run", killed)
        with pytest.raises(_Killed):
            repo.publish([again])
        monkeypatch.undo()
        pool = repo.root / "pool"
        listed = _sha256_listed(repo, name)
        assert hashlib.sha256((pool / name).read_bytes()).hexdigest() == listed
        signer.verify(pool / name, pool / f"{name}.sig")

        # A kill -9 also leaves what the killed step made (no finally ran); the next change
        # takes it away.
        (repo.root / "db-killed").mkdir()
        (pool / ".new-other-1.0-1-x86_64.pkg.tar.gz").write_bytes(b"half")
        repo.publish([make_package(scratch, "later")])
        assert not list(pool.glob(".new-*"))
        current = repo.file("orchestrator-cpu.db").resolve().parent.name
        assert [p.name for p in repo.root.glob("db-*")] == [current]
    finally:
        signer.close()


def test_a_start_finishes_a_publish_killed_after_the_swap(
    scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed once the new database is served but before the rebuilt package took its name:
    the next start (``resign``, run on every start) gives it its name."""
    signer = Signer.open(scratch / "gnupg", None)
    repo = Repository(scratch / "repo", "orchestrator-cpu", signer)
    try:
        repo.publish([make_package(scratch, "same")])
        rebuilt = scratch / "rebuilt"
        rebuilt.mkdir()
        again = make_package(rebuilt, "same")
        with again.open("ab") as fh:
            fh.write(b"\0" * 1024)
        recover, calls = Repository._recover, []

        def killed_after_the_swap(self: Repository) -> None:
            calls.append(1)
            if len(calls) == 2:  # the one after repo-add's database is served
                raise _Killed
            recover(self)

        monkeypatch.setattr(Repository, "_recover", killed_after_the_swap)
        with pytest.raises(_Killed):
            repo.publish([again])
        monkeypatch.undo()
        assert Repository(repo.root, repo.name, signer).resign() is False
        pool = repo.root / "pool"
        served = hashlib.sha256((pool / again.name).read_bytes()).hexdigest()
        assert (
            served
            == _sha256_listed(repo, again.name)
            == hashlib.sha256(again.read_bytes()).hexdigest()
        )
        signer.verify(pool / again.name, pool / f"{again.name}.sig")
        assert not list(pool.glob(".new-*"))
    finally:
        signer.close()
