"""Every route's real answers, checked against the OpenAPI document the service serves.

The whole app runs on the fake backend behind aiohttp's TestServer on 127.0.0.1. Each answer's
status must be documented for its route, its Content-Type must be one the document names, and a
JSON body must validate against the schema documented for that status; the stream's events and
its end marker against ``Event`` and ``StreamEnd``. The walk must reach every route.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from orchestrator import Settings
from orchestrator.api import create_app
from orchestrator.api.builds import ACCEPTED_TYPES
from orchestrator.api.openapi import document
from orchestrator.api.routes import ROUTES
from orchestrator.backend.fake import FakeBackend, Script
from orchestrator.build.variants import Variant
from orchestrator.narration import sse

from .. import waiting
from ..conftest import PKGBUILDS
from ..integration.service import tar_dir

TOKEN = "s3cret-token"
FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def is_utc_time(value: object) -> bool:
    # RFC 3339 as the service writes it (jsonschema checks date-time only with an extra package).
    if isinstance(value, str):
        if not value.endswith("Z") or "T" not in value:
            raise ValueError(f"{value!r} is not an RFC 3339 time in UTC")
        datetime.fromisoformat(value.removesuffix("Z") + "+00:00")
    return True


def validator(schema: dict[str, Any], doc: dict[str, Any]) -> jsonschema.Draft202012Validator:
    # The document's components sit at the root, so its "#/components/..." references resolve.
    return jsonschema.Draft202012Validator(
        {**schema, "components": doc["components"]}, format_checker=FORMATS
    )


def component(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


class Checker:
    """Holds answers to the document the app serves, and remembers what it has seen."""

    def __init__(self, client: TestClient, doc: dict[str, Any]) -> None:
        self.client = client
        self.doc = doc
        self.seen: set[tuple[str, str, int]] = set()

    async def call(
        self,
        method: str,
        route: str,
        *,
        expect: int,
        data: bytes | None = None,
        json: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        **path: str,
    ) -> Any:
        """``method`` on ``route`` with its ``{...}`` filled from ``path``: the answer must be
        ``expect`` and conform. Returns the JSON body (or the text)."""
        url = route.format(**path)
        response = await self.client.request(
            method, url, data=data, json=json, params=params, headers=headers
        )
        body = await self.conforms(response, method, route)
        assert response.status == expect, (method, url, response.status, body)
        return body

    async def conforms(self, response: ClientResponse, method: str, route: str) -> Any:
        operation = self.doc["paths"][route][method.lower()]
        documented = operation["responses"].get(str(response.status))
        text = (await response.read()).decode(errors="replace")  # packages are binary
        assert documented is not None, (
            f"{method} {route}: {response.status} is undocumented: {text}"
        )
        self.seen.add((method, route, response.status))
        for header in documented.get("headers", {}):
            assert header in response.headers, (method, route, header)
        content = documented.get("content")
        if content is None:
            assert text == "", (method, route, text)
            return None
        assert response.content_type in content, (method, route, response.content_type)
        if response.content_type != "application/json":
            return text
        body = json.loads(text)
        schema = content["application/json"]["schema"]
        errors = [e.message for e in validator(schema, self.doc).iter_errors(body)]
        assert errors == [], (method, route, response.status, errors, body)
        return body

    async def stream(self, job_id: str) -> list[sse.Message]:
        route = "/v1/jobs/{job_id}/stream"
        response = await self.client.get(f"/v1/jobs/{job_id}/stream")
        assert response.status == 200
        operation = self.doc["paths"][route]["get"]
        assert response.content_type in operation["responses"]["200"]["content"]
        self.seen.add(("GET", route, 200))
        event = validator(component("Event"), self.doc)
        end = validator(component("StreamEnd"), self.doc)
        messages = [m async for m in sse.messages(response.content.iter_any())]
        for message in messages:
            if not message.is_done:
                (end if message.is_end else event).validate(message.json())
        assert messages[-1].is_done and messages[-2].is_end
        return messages

    async def wait(self, job_id: str, statuses: set[str]) -> dict[str, Any]:
        async def job() -> dict[str, Any]:
            return dict(await self.call("GET", JOB, job_id=job_id, expect=200))

        return await waiting.until(
            job, lambda j: j["status"] in statuses, timeout_s=10, what=f"job {job_id}"
        )


@asynccontextmanager
async def serve(settings: Settings, backend: FakeBackend) -> AsyncIterator[Checker]:
    app = create_app(settings, backend=backend)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        doc = await (await client.get("/openapi.json")).json()
        assert doc == json.loads(json.dumps(document()))  # served as generated
        yield Checker(client, doc)


def package_with(path: str, *, pkginfo: bytes | None = None) -> bytes:
    """A package (a gzipped tar) holding one executable file at ``path`` (and a .PKGINFO)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        if pkginfo is not None:
            entry = tarfile.TarInfo(".PKGINFO")
            entry.size = len(pkginfo)
            tar.addfile(entry, io.BytesIO(pkginfo))
        info = tarfile.TarInfo(path)
        data = b"#!/bin/sh\necho hello\n"
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


GZ = {"Content-Type": "application/gzip"}
JSON = {"Content-Type": "application/json"}
SLOW = Script([("stdout", "started", 0), ("stdout", "never printed", 60)])
HELLO = tar_dir(PKGBUILDS / "hello-c")
BUILDS, JOBS, JOB, CANCEL = (
    "/v1/builds",
    "/v1/jobs",
    "/v1/jobs/{job_id}",
    "/v1/jobs/{job_id}/cancel",
)
STREAM, ARTIFACTS = "/v1/jobs/{job_id}/stream", "/v1/jobs/{job_id}/artifacts"
ARTIFACT = "/v1/jobs/{job_id}/artifacts/{name}"
PROVENANCE = "/v1/jobs/{job_id}/provenance"
REPRODUCE = "/v1/jobs/{job_id}/reproduce"
CACHES, CACHE = "/v1/caches", "/v1/caches/{key}"
CATALOG, ENTRY = "/v1/catalog/workers", "/v1/catalog/workers/{worker_id}"
PKGBUILD = "/v1/catalog/workers/{worker_id}/pkgbuild"
WORKERS, WORKER = "/v1/workers", "/v1/workers/{worker_id}"
MODELS, MODEL = "/v1/models", "/v1/models/{name}"
REPOS, REPO = "/v1/repo", "/v1/repo/{variant}"
REPO_PACKAGE = "/v1/repo/{variant}/packages/{pkgname}"
REPO_FILE = "/repo/{variant}/{arch}/{name}"
INSTALL = {"operation": "worker_install", "worker_id": "hello-c"}


async def builds_and_jobs(api: Checker) -> str:
    """A dry run, refusals, and a build that succeeds: its job, stream and packages."""
    dry = await api.call(
        "POST", BUILDS, data=HELLO, headers=GZ, params={"dry_run": "1"}, expect=200
    )
    assert dry["pkgbase"] == "hello-c" and dry["problems"] == []
    await api.call("POST", BUILDS, data=b"not a tar", headers=GZ, expect=400)
    await api.call("POST", BUILDS, data=HELLO, headers=GZ, params={"timeout_s": "x"}, expect=400)
    await api.call("POST", BUILDS, data=HELLO, headers={"Content-Type": "text/plain"}, expect=415)
    await api.call("POST", BUILDS, data=b"x" * 300_000, headers=GZ, expect=413)
    for variant in ("metal", "rocm"):
        await api.call(
            "POST", BUILDS, data=HELLO, headers=GZ, params={"variant": variant}, expect=422
        )
    cross_site = {**GZ, "Sec-Fetch-Site": "cross-site"}
    await api.call("POST", BUILDS, data=HELLO, headers=cross_site, expect=403)
    job_id = (await api.call("POST", BUILDS, data=HELLO, headers=GZ, expect=201))["job_id"]
    job = await api.wait(job_id, {"succeeded"})
    assert job["last_seq"] > 0 and job["artifacts"]

    await api.call("GET", JOBS, expect=200)
    await api.call("GET", JOBS, params={"status": "bogus"}, expect=400)
    await api.call("GET", JOBS, params={"limit": "9999"}, expect=400)
    await api.call("GET", JOB, job_id="nope", expect=404)
    messages = await api.stream(job_id)
    assert int(messages[-3].id) == job["last_seq"]
    await api.call("GET", STREAM, job_id=job_id, params={"last_event_id": "x"}, expect=400)
    await api.call("GET", STREAM, job_id="nope", expect=404)
    await api.call("POST", CANCEL, job_id=job_id, expect=409)
    await api.call("POST", CANCEL, job_id="nope", expect=404)
    listed = await api.call("GET", ARTIFACTS, job_id=job_id, expect=200)
    await api.call("GET", ARTIFACTS, job_id="nope", expect=404)
    name = listed["artifacts"][0]["name"]
    await api.call("GET", ARTIFACT, job_id=job_id, name=name, expect=200)
    await api.call("GET", ARTIFACT, job_id=job_id, name="nope", expect=404)
    proven = await api.call("GET", PROVENANCE, job_id=job_id, expect=200)
    assert proven["payloadType"] == "application/vnd.in-toto+json"
    # The job names its provenance; it was not asked to publish, so it says it was not.
    assert job["provenance_url"] == f"/v1/jobs/{job_id}/provenance"
    assert job["published"] is None
    await api.call("GET", PROVENANCE, job_id="nope", expect=404)
    return str(job_id)


async def caches(api: Checker, backend: FakeBackend) -> None:
    """The build's cache; busy while a build runs, which a cancel ends."""
    [cache] = (await api.call("GET", CACHES, expect=200))["caches"]
    key = cache["key"]
    await api.call("GET", CACHE, key=key, expect=200)
    await api.call("GET", CACHE, key="nope:cpu", expect=404)
    backend.script = SLOW
    job_id = (await api.call("POST", BUILDS, data=HELLO, headers=GZ, expect=201))["job_id"]
    await api.wait(job_id, {"running"})
    # The build has its cache once its container is there.
    await waiting.until(
        lambda: api.call("GET", CACHE, key=key, expect=200), lambda c: c["in_use"], what="in use"
    )
    await api.call("DELETE", CACHE, key=key, expect=409)
    cancelled = await api.call("POST", CANCEL, job_id=job_id, expect=200)
    assert cancelled["status"] == "cancelled" and cancelled["cancel_reason"] == "user"
    await api.stream(job_id)
    await api.call("DELETE", CACHE, key=key, expect=204)
    await api.call("DELETE", CACHE, key=key, expect=404)


async def catalog_and_workers(api: Checker, backend: FakeBackend) -> None:
    """The catalog, refused operations, and a worker installed from it (the fake build makes
    its package)."""
    await api.call("GET", CATALOG, expect=200)
    await api.call("GET", ENTRY, worker_id="hello-c", expect=200)
    await api.call("GET", ENTRY, worker_id="nope", expect=404)
    assert "package()" in await api.call("GET", PKGBUILD, worker_id="hello-c", expect=200)
    await api.call("GET", PKGBUILD, worker_id="nope", expect=404)

    await api.call("POST", JOBS, data=b"{", headers=JSON, expect=400)
    await api.call("POST", JOBS, json={"operation": "nap"}, expect=422)
    await api.call("POST", JOBS, json={"operation": "worker_install"}, expect=400)
    await api.call("POST", JOBS, json={**INSTALL, "worker_id": "nope"}, expect=404)
    await api.call("POST", JOBS, json={**INSTALL, "worker_id": "metal-hello"}, expect=422)
    await api.call("POST", JOBS, data=json.dumps(INSTALL).encode(), expect=415)
    download = {"operation": "model_download", "url": "ftp://x", "name": "m"}
    await api.call("POST", JOBS, json=download, expect=400)

    backend.script = SLOW
    running = await api.call("POST", JOBS, json=INSTALL, expect=201)
    await api.call("POST", JOBS, json=INSTALL, expect=409)
    await api.call("DELETE", WORKER, worker_id="hello-c", expect=409)
    await api.call("POST", CANCEL, job_id=running["job_id"], expect=200)
    package = package_with("usr/bin/hello-worker-c")
    backend.script = Script(packages={"hello-c-1.0.0-1-x86_64.pkg.tar.gz": package})
    installing = await api.call("POST", JOBS, json=INSTALL, expect=201)
    await api.wait(installing["job_id"], {"succeeded"})
    workers = await api.call("GET", WORKERS, expect=200)
    assert [w["id"] for w in workers["workers"]] == ["hello-c"]
    await api.call("GET", WORKER, worker_id="hello-c", expect=200)
    await api.call("GET", WORKER, worker_id="nope", expect=404)
    await api.call("GET", WORKER, worker_id=".x", expect=400)
    await api.call("DELETE", WORKER, worker_id="hello-c", expect=200)
    await api.call("DELETE", WORKER, worker_id="hello-c", expect=404)


async def repositories(api: Checker, backend: FakeBackend) -> None:
    """A build published (real repo-add and gpg), its repository's files, key and removal."""
    name = "hello-c-1.0.0-1-x86_64.pkg.tar.gz"
    info = b"pkgname = hello-c\npkgbase = hello-c\npkgver = 1.0.0-1\narch = x86_64\n"
    backend.script = Script(packages={name: package_with("usr/bin/hello", pkginfo=info)})
    params = {"publish": "true"}
    built = await api.call("POST", BUILDS, data=HELLO, headers=GZ, params=params, expect=201)
    await api.wait(built["job_id"], {"succeeded"})
    said = [m.json().get("message") for m in await api.stream(built["job_id"]) if not m.is_done]
    assert f"📚 Published {name} to orchestrator-cpu" in said
    listed = await api.call("GET", REPO, variant="cpu", expect=200)
    sha256 = hashlib.sha256(backend.script.packages[name]).hexdigest()
    assert listed["packages"] == [{"name": "hello-c", "filename": name, "sha256": sha256}]
    await api.call("GET", REPO, variant="metal", expect=404)
    # The job says where it went and which key signed it; the listing, where pacman finds it.
    repos = await api.call("GET", REPOS, expect=200)
    job = await api.call("GET", JOB, job_id=built["job_id"], expect=200)
    assert job["published"] == {
        "repository": "orchestrator-cpu",
        "variant": "cpu",
        "fingerprint": repos["fingerprint"],
        "repo_url": "/v1/repo/cpu",
    }
    origin = str(api.client.make_url(""))
    assert repos["key_url"] == f"{origin}/repo/key"
    assert [(r["repository"], r["server"]) for r in repos["repositories"]] == [
        ("orchestrator-cpu", f"{origin}/repo/cpu/x86_64"),
        ("orchestrator-cuda", f"{origin}/repo/cuda/x86_64"),
    ]
    assert len(repos["fingerprint"]) == 40
    assert "PUBLIC KEY" in await api.call("GET", "/repo/key", expect=200)
    for served in ("orchestrator-cpu.db", "orchestrator-cpu.files.sig", name, f"{name}.sig"):
        await api.call("GET", REPO_FILE, variant="cpu", arch="x86_64", name=served, expect=200)
    for absent in ("nope", "..", "current"):
        await api.call("GET", REPO_FILE, variant="cpu", arch="x86_64", name=absent, expect=404)
    await api.call("GET", REPO_FILE, variant="cpu", arch="aarch64", name=name, expect=404)
    await api.call("DELETE", REPO_PACKAGE, variant="cpu", pkgname="hello-c", expect=200)
    await api.call("DELETE", REPO_PACKAGE, variant="cpu", pkgname="hello-c", expect=404)
    # A catalog install asked to publish lands there too.
    worker = package_with("usr/bin/hello-worker-c", pkginfo=info)
    backend.script = Script(packages={name: worker})
    installing = await api.call("POST", JOBS, json={**INSTALL, "publish": True}, expect=201)
    await api.wait(installing["job_id"], {"succeeded"})
    listed = await api.call("GET", REPO, variant="cpu", expect=200)
    assert [(p["name"], p["filename"]) for p in listed["packages"]] == [("hello-c", name)]


async def reproductions(api: Checker, backend: FakeBackend, settings: Settings) -> None:
    """A build reproduced (the fake makes the same package twice), and every refusal."""
    info = b"pkgname = hello-c\npkgver = 1.0.0-1\nbuilddate = 1700000000\n"
    name = "hello-c-1.0.0-1-x86_64.pkg.tar.gz"
    backend.script = Script(packages={name: package_with("usr/bin/hello", pkginfo=info)})
    built = await api.call("POST", BUILDS, data=HELLO, headers=GZ, expect=201)
    await api.wait(built["job_id"], {"succeeded"})
    # Its upload is kept as submitted, beside its packages (not one of its artifacts).
    assert (settings.artifacts_dir / built["job_id"] / "inputs.tar").read_bytes() == HELLO
    asked = await api.call("POST", REPRODUCE, job_id=built["job_id"], expect=202)
    rebuild = await api.wait(asked["job_id"], {"succeeded"})
    assert rebuild["operation"] == "reproduce"
    report = rebuild["reproduction"]
    assert (report["original"], report["rebuild"]) == (built["job_id"], asked["job_id"])
    assert report["state"] == "identical"
    [package] = report["packages"]
    assert package["name"] == name and package["identical"] is True
    assert package["original_sha256"] == package["rebuilt_sha256"]
    original = await api.call("GET", JOB, job_id=built["job_id"], expect=200)
    assert original["reproduction"] == report
    # The fake's step had SOURCE_DATE_EPOCH from the package, and no cache.
    step = list(backend.steps.values())[-1]
    assert step.env["SOURCE_DATE_EPOCH"] == "1700000000" and not step.volumes
    await api.call("POST", REPRODUCE, job_id="nope", expect=404)
    await api.call("POST", REPRODUCE, job_id=asked["job_id"], expect=422)  # not a build
    backend.script = Script(exit_code=1)
    failed = await api.call("POST", BUILDS, data=HELLO, headers=GZ, expect=201)
    await api.wait(failed["job_id"], {"failed"})
    refused = await api.call("POST", REPRODUCE, job_id=failed["job_id"], expect=409)
    assert refused["status"] == "failed"
    (settings.artifacts_dir / built["job_id"] / "inputs.tar").unlink()
    gone = await api.call("POST", REPRODUCE, job_id=built["job_id"], expect=409)
    assert gone["error"] == "no_inputs"


async def models(api: Checker, settings: Settings) -> None:
    """A model on disk as a download leaves it."""
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    (settings.models_dir / "tiny.gguf").write_bytes(b"weights")
    sidecar = {
        "name": "tiny.gguf",
        "size_bytes": 7,
        "sha256": "0" * 64,
        "downloaded_at": "2026-01-02T03:04:05.678901Z",
        "url": "https://example.invalid/tiny.gguf",
    }
    (settings.models_dir / "tiny.gguf.json").write_text(json.dumps(sidecar))
    listed = await api.call("GET", MODELS, expect=200)
    assert [m["name"] for m in listed["models"]] == ["tiny.gguf"]
    await api.call("DELETE", MODEL, name="tiny.gguf", expect=200)
    await api.call("DELETE", MODEL, name="tiny.gguf", expect=404)
    await api.call("DELETE", MODEL, name="x.json", expect=400)


async def test_every_route_answers_as_documented(settings: Settings) -> None:
    settings = settings.model_copy(update={"max_upload_bytes": 256 * 1024})
    backend = FakeBackend()
    async with serve(settings, backend) as api:
        await builds_and_jobs(api)
        await caches(api, backend)
        await catalog_and_workers(api, backend)
        await models(api, settings)
        await repositories(api, backend)
        await reproductions(api, backend, settings)
        assert "error" not in await api.call("GET", "/health", expect=200)
        await api.call("GET", "/metrics", expect=200)
        await api.call("GET", "/openapi.json", expect=200)

        documented = {(m.upper(), p) for p, item in api.doc["paths"].items() for m in item}
        assert documented - {(method, route) for method, route, _ in api.seen} == set()


async def test_refusals_before_the_handler_answer_as_documented(settings: Settings) -> None:
    """Without the token every route under /v1/ is a 401; a state change from another origin
    is a 403 whatever the token; both as the document says, the others open."""
    settings = Settings(
        data_dir=settings.data_dir, instance_id=settings.instance_id, api_token=TOKEN
    )
    async with serve(settings, FakeBackend()) as api:
        for path, item in api.doc["paths"].items():
            names = {name: "x" for name in re.findall(r"\{(\w+)\}", path)}
            for method in item:
                expect = 401 if path.startswith(("/v1/", "/repo/")) else 200
                await api.call(method.upper(), path, expect=expect, **names)
                if method != "get":
                    headers = {"Sec-Fetch-Site": "cross-site", "Authorization": f"Bearer {TOKEN}"}
                    await api.call(method.upper(), path, headers=headers, expect=403, **names)


@pytest.mark.parametrize("images", [(), ("orchestrator/build:cuda",)])
async def test_an_unready_service_answers_health_as_documented(
    settings: Settings, images: tuple[str, ...]
) -> None:
    async with serve(settings, FakeBackend(images=images)) as api:
        health = await api.call("GET", "/health", expect=503)
        assert health["status"] == "unavailable" and "images/bootstrap" in health["error"]


@pytest.mark.parametrize("images", [("orchestrator/build:cpu",), ()])
async def test_health_tells_a_caller_without_the_token_nothing_of_the_host(
    settings: Settings, images: tuple[str, ...]
) -> None:
    """A probe needs no token: it gets the status and, when not ok, fixed words; the data
    directory, the image names and the queue are for the token's holders."""
    settings = Settings(
        data_dir=settings.data_dir, instance_id=settings.instance_id, api_token=TOKEN
    )
    expect = 200 if images else 503
    async with serve(settings, FakeBackend(images=images)) as api:
        stranger = await api.call("GET", "/health", expect=expect)
        assert set(stranger) <= {"status", "error"}, stranger
        assert str(settings.data_dir) not in json.dumps(stranger)
        assert "/" not in stranger.get("error", ""), stranger
        assert ("error" in stranger) is (expect == 503)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        holder = await api.call("GET", "/health", headers=headers, expect=expect)
        assert holder["disk"]["path"] == str(settings.data_dir)
        assert "queue_length" in holder and "images" in holder


def test_the_route_table_is_what_the_router_serves_and_the_document_says() -> None:
    app = create_app(Settings(data_dir=Path("/nonexistent")), backend=FakeBackend())
    served = {
        r.name: (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.name is not None and r.resource is not None
    }
    assert {r.operation_id: (r.method, r.path) for r in ROUTES}.items() <= served.items()
    ids = [r.operation_id for r in ROUTES]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[a-z]+(_[a-z]+)*", i) for i in ids)
    doc = document()
    tags = {t["name"] for t in doc["tags"]}
    for path, item in doc["paths"].items():
        for op in item.values():
            assert op["operationId"] in ids and op["tags"][0] in tags, (path, op)
    # What the code takes is what the document says, from the same constants.
    submit = doc["paths"]["/v1/builds"]["post"]
    assert set(submit["requestBody"]["content"]) == ACCEPTED_TYPES
    [variant] = [p for p in submit["parameters"] if p["name"] == "variant"]
    assert variant["schema"]["enum"] == [v.value for v in Variant]
