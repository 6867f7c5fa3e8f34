"""The provenance's statement, DSSE's encoding and the envelope: their logic, and one round trip
through real gpg (a key made here, checked in a throwaway home as ``orchestrator verify`` does)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.errors import ProvenanceError
from orchestrator.provenance import (
    BUILD_TYPE,
    PAYLOAD_TYPE,
    Facts,
    Keyring,
    declared_sources,
    envelope,
    opened,
    pae,
    statement,
    subjects,
)
from orchestrator.repo import Signer

FACTS = Facts(
    job_id="job-1",
    builder_id="instance-a",
    version="0.1.0",
    variant="cpu",
    parameters={"cache": True, "publish": False},
    submitted={"PKGBUILD": "aa" * 32, "hello.c": "bb" * 32},
    sources=[{"uri": "https://example.invalid/x.tar.gz", "name": "x.tar.gz", "digest": {}}],
    image="orchestrator/build:cpu",
    image_labels={"recipe": "r1"},
    packages={"hello-1-1-x86_64.pkg.tar.zst": "cc" * 32},
    exit_code=0,
    started_s=0.0,
    finished_s=61.0,
    cache={"used": True},
)

SECRET = b"k"


def _sign(data: bytes) -> bytes:
    return hmac.digest(SECRET, data, hashlib.sha256)


def _verify(data: bytes, sig: bytes) -> str:
    if not hmac.compare_digest(_sign(data), sig):
        raise ProvenanceError("bad signature")
    return "FPR"


def test_pae_is_dsse_s_encoding() -> None:
    # The example of DSSE's protocol document.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_the_statement_names_packages_as_subjects_and_inputs_as_dependencies() -> None:
    stmt = statement(FACTS)
    assert stmt["_type"] == "https://in-toto.io/Statement/v1"
    assert stmt["predicateType"] == "https://slsa.dev/provenance/v1"
    assert subjects(stmt) == dict(FACTS.packages)
    build = stmt["predicate"]["buildDefinition"]
    assert build["buildType"] == BUILD_TYPE
    assert build["externalParameters"] == {"variant": "cpu", "cache": True, "publish": False}
    assert build["internalParameters"]["image"] == "orchestrator/build:cpu"
    deps = build["resolvedDependencies"]
    assert deps[:2] == [
        {"name": "PKGBUILD", "digest": {"sha256": "aa" * 32}},
        {"name": "hello.c", "digest": {"sha256": "bb" * 32}},
    ]
    assert deps[2]["uri"] == "https://example.invalid/x.tar.gz"
    run = stmt["predicate"]["runDetails"]
    assert run["metadata"] == {
        "invocationId": "job-1",
        "startedOn": "1970-01-01T00:00:00Z",
        "finishedOn": "1970-01-01T00:01:01Z",
    }
    assert "instance-a" in run["builder"]["id"]
    exit_code = next(b for b in run["byproducts"] if b["name"] == "exitCode")
    assert json.loads(base64.b64decode(exit_code["content"])) == 0


def test_declared_sources_carry_the_pkgbuild_s_checksums_skip_none() -> None:
    found = declared_sources(
        [("a.tar.gz", "https://h.invalid/a.tar.gz"), ("local.patch", None), ("r", "git+https://h")],
        {"sha256sums": ["11" * 32, "22" * 32, "SKIP"], "b2sums": ["33", "44", "SKIP"]},
    )
    assert found == [
        {
            "uri": "https://h.invalid/a.tar.gz",
            "name": "a.tar.gz",
            "digest": {"sha256": "11" * 32, "blake2b": "33"},
        },
        {"uri": "git+https://h", "name": "r", "digest": {}},
    ]


def test_an_envelope_opens_only_as_signed() -> None:
    env = envelope(statement(FACTS), "FPR", _sign)
    assert env["payloadType"] == PAYLOAD_TYPE
    assert env["signatures"][0]["keyid"] == "FPR"
    assert opened(env, _verify) == statement(FACTS)

    other = statement(FACTS)
    other["subject"][0]["digest"]["sha256"] = "dd" * 32
    forged = {**env, "payload": base64.b64encode(json.dumps(other).encode()).decode()}
    with pytest.raises(ProvenanceError, match="no signature"):
        opened(forged, _verify)
    with pytest.raises(ProvenanceError, match="not an in-toto"):
        opened({**env, "payloadType": "text/plain"}, _verify)
    with pytest.raises(ProvenanceError, match="not a DSSE envelope"):
        opened({"payload": "!!"}, _verify)


@pytest.fixture
def home() -> Iterator[Path]:
    # gpg-agent's socket lives in its home: a unix socket's path is at most 107 bytes.
    folder = Path(tempfile.mkdtemp(prefix="prov-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_gpg_signed_envelope_verifies_with_the_public_key_alone(home: Path) -> None:
    signer = Signer.open(home / "service", None)
    other = Signer.open(home / "other", None)
    try:
        env = envelope(statement(FACTS), signer.fingerprint, signer.sign_bytes)
        with Keyring.of(signer.public_key()) as ring:
            assert subjects(opened(env, ring.verify)) == dict(FACTS.packages)
        with Keyring.of(other.public_key()) as ring, pytest.raises(ProvenanceError):
            opened(env, ring.verify)
    finally:
        signer.close()
        other.close()
