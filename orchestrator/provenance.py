"""A build's provenance: an in-toto Statement with an SLSA Provenance v1 predicate, in a DSSE
envelope signed with the repositories' OpenPGP key.

Standard library only: the CLI's ``verify`` reads and checks envelopes with it too. DSSE's
signature here is a detached OpenPGP signature (as gpg makes) over DSSE's pre-authentication
encoding, so ``gpg --verify`` with the key from ``/repo/key`` checks it; DSSE tools that expect a
raw key do not.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import ProvenanceError
from .timeouts import GPG_TIMEOUT_S

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
# Ours, and says so: no registry describes this build type; README's "Provenance" does.
BUILD_TYPE = "https://orchestrator.invalid/build/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
FILE_NAME = "provenance.intoto.json"  # beside the job's packages

# The PKGBUILD's checksum arrays, by the name in-toto's digest sets give their algorithm.
_SUMS = {
    "sha256sums": "sha256",
    "sha512sums": "sha512",
    "sha384sums": "sha384",
    "sha224sums": "sha224",
    "sha1sums": "sha1",
    "md5sums": "md5",
    "b2sums": "blake2b",
}


@dataclass(frozen=True, slots=True)
class Facts:
    """What a finished build's provenance says."""

    job_id: str
    builder_id: str  # the service instance
    version: str  # the service's
    variant: str
    parameters: Mapping[str, Any]  # what the submission asked beyond its files
    submitted: Mapping[str, str]  # uploaded file -> sha256
    sources: Sequence[Mapping[str, Any]]  # fetched sources: {uri, digest}
    image: str
    image_labels: Mapping[str, str]
    packages: Mapping[str, str]  # package file -> sha256
    exit_code: int | None
    started_s: float
    finished_s: float
    cache: Mapping[str, Any] | None = None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def declared_sources(
    sources: Sequence[tuple[str, str | None]], sums: Mapping[str, Sequence[str]]
) -> list[dict[str, Any]]:
    """The remote sources (makepkg's name, URL) with the checksums the PKGBUILD declares for
    them: makepkg fetched each and refused the build unless its bytes matched (``SKIP`` is no
    checksum, so such a source has no digest)."""
    found: list[dict[str, Any]] = []
    for index, (name, url) in enumerate(sources):
        if url is None:
            continue  # a local source: it is among the submitted files
        digest = {
            alg: sums[key][index]
            for key, alg in _SUMS.items()
            if index < len(sums.get(key, ())) and sums[key][index] != "SKIP"
        }
        found.append({"uri": url, "name": name, "digest": digest})
    return found


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def statement(facts: Facts) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": _named(facts.packages),
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"variant": facts.variant, **facts.parameters},
                "internalParameters": {
                    "image": facts.image,
                    "imageLabels": dict(facts.image_labels),
                },
                "resolvedDependencies": [*_named(facts.submitted), *facts.sources],
            },
            "runDetails": {
                "builder": {
                    "id": f"https://orchestrator.invalid/instance/{facts.builder_id}",
                    "version": {"orchestrator": facts.version},
                },
                "metadata": {
                    "invocationId": facts.job_id,
                    "startedOn": _iso(facts.started_s),
                    "finishedOn": _iso(facts.finished_s),
                },
                "byproducts": [
                    {"name": "exitCode", "content": _b64(json.dumps(facts.exit_code).encode())},
                    {"name": "cache", "content": _b64(json.dumps(facts.cache).encode())},
                ],
            },
        },
    }


def _named(digests: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"name": name, "digest": {"sha256": sha}} for name, sha in sorted(digests.items())]


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the signature is over."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def envelope(stmt: Mapping[str, Any], keyid: str, sign: Callable[[bytes], bytes]) -> dict[str, Any]:
    payload = json.dumps(stmt, sort_keys=True, separators=(",", ":")).encode()
    sig = sign(pae(PAYLOAD_TYPE, payload))
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": _b64(payload),
        "signatures": [{"keyid": keyid, "sig": _b64(sig)}],
    }


def opened(env: Mapping[str, Any], verify: Callable[[bytes, bytes], str]) -> dict[str, Any]:
    """The statement an envelope carries once one of its signatures verifies (``verify`` takes
    the signed bytes and the signature and returns the signer's fingerprint, or raises)."""
    try:
        payload = base64.b64decode(env["payload"], validate=True)
        signatures = [base64.b64decode(s["sig"], validate=True) for s in env["signatures"]]
        kind = env["payloadType"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ProvenanceError(f"not a DSSE envelope: {exc}") from exc
    if kind != PAYLOAD_TYPE:
        raise ProvenanceError(f"the envelope carries {kind!r}, not an in-toto statement")
    failures = []
    for sig in signatures:
        try:
            verify(pae(kind, payload), sig)
        except ProvenanceError as exc:
            failures.append(str(exc))
            continue
        stmt: dict[str, Any] = json.loads(payload)
        if stmt.get("_type") != STATEMENT_TYPE or stmt.get("predicateType") != PREDICATE_TYPE:
            raise ProvenanceError("the envelope's statement is not SLSA provenance v1")
        return stmt
    raise ProvenanceError("no signature of the provenance verifies: " + "; ".join(failures))


def subjects(stmt: Mapping[str, Any]) -> dict[str, str]:
    """name -> sha256 of each of the statement's subjects."""
    return {s["name"]: s["digest"]["sha256"] for s in stmt.get("subject", ())}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Keyring:
    """A throwaway GnuPG home trusting one public key: what checks the service's signatures."""

    def __init__(self, home: Path) -> None:
        self.home = home

    @classmethod
    @contextlib.contextmanager
    def of(cls, armored_key: str) -> Iterator[Keyring]:
        # gpg-agent's socket lives in its home: a unix socket's path is at most 107 bytes.
        home = Path(tempfile.mkdtemp(prefix="orch-gpg-"))
        try:
            home.chmod(0o700)
            (home / "key.asc").write_text(armored_key)
            ring = cls(home)
            ring._gpg("--import", str(home / "key.asc"))
            yield ring
        finally:
            subprocess.run(
                ["gpgconf", "--homedir", str(home), "--kill", "all"],
                capture_output=True,
                check=False,
                timeout=GPG_TIMEOUT_S,
            )
            shutil.rmtree(home, ignore_errors=True)

    def verify(self, data: bytes, signature: bytes) -> str:
        """The fingerprint of the key whose good signature of ``data`` ``signature`` is."""
        folder = Path(tempfile.mkdtemp(dir=self.home))
        try:
            (folder / "data").write_bytes(data)
            (folder / "sig").write_bytes(signature)
            return self.verify_file(folder / "data", folder / "sig")
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def verify_file(self, path: Path, signature: Path) -> str:
        status = self._gpg(
            "--status-fd", "1", "--verify", str(signature), str(path), check=False
        ).stdout
        for line in status.splitlines():
            if line.startswith("[GNUPG:] VALIDSIG "):
                return line.split()[2]
        raise ProvenanceError(f"{path.name}: no good signature by the service's key")

    def _gpg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["gpg", "--homedir", str(self.home), "--batch", "--no-tty", *args]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=GPG_TIMEOUT_S,
                env={**os.environ, "GNUPGHOME": str(self.home)},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ProvenanceError(f"gpg could not run: {exc}") from exc
        if check and done.returncode != 0:
            raise ProvenanceError(f"gpg failed: {done.stderr.strip()[-300:]}")
        return done
