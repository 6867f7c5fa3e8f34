"""The HTTP service over the real engine and daemon: builds, SSE, cancel, errors, restart."""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import docker
import pytest
from aiohttp.test_utils import TestClient

from orchestrator import Settings
from orchestrator.api import InsecureBind, check_bind
from orchestrator.web import is_dashboard_route

from .conftest import BACKENDS, job_containers, serve
from .service import Sse, has_line, read_sse, submit, wait_status
from .test_engine import container_events, marked_processes

pytestmark = pytest.mark.docker


def assert_contiguous(sse: Sse, first: int = 1) -> None:
    assert sse.ids == list(range(first, first + len(sse.ids)))
    seqs = {e["seq"] for e in sse.events} | {s["seq"] for s in sse.samples}
    assert sorted(seqs) == sse.ids


@BACKENDS
async def test_build_streams_narration_and_returns_the_package(
    client: TestClient,
    settings: Settings,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    created = await submit(client, build_dir("hello-c"))
    job_id = created["job_id"]
    assert created["status"] == "queued"
    assert created["sse_url"] == f"/v1/jobs/{job_id}/stream"

    sse = await read_sse(client, job_id)
    assert_contiguous(sse)
    assert sse.done and sse.end is not None
    assert sse.end["status"] == "succeeded"
    actions = sse.actions()
    for expected in (
        "queued",
        "container_created",
        "sources_copied",
        "build_started",
        "phase",
        "artifact_stored",
        "succeeded",
    ):
        assert expected in actions
    assert sse.messages()[-1].startswith("✅ Build succeeded")
    # The narration names what the engine made: a swarm build is a service, not a container.
    sandbox = "Service" if settings.backend == "swarm" else "Container"
    said = {e["action"]: e["message"] for e in sse.events}
    assert said["container_created"].startswith(f"{sandbox} "), said["container_created"]
    assert said["container_removed"].startswith(f"{sandbox} "), said["container_removed"]
    event = sse.events[0]
    assert set(event) >= {"seq", "ts", "job_id", "action", "level", "message"}
    assert any(e.get("stream") == "stdout" for e in sse.events)

    job = await (await client.get(f"/v1/jobs/{job_id}")).json()
    assert (job["status"], job["pkgname"], job["pkgver"], job["exit_code"]) == (
        "succeeded",
        "hello-c",
        "1.0.0-1",
        0,
    )
    assert job["started_at"] and job["finished_at"]
    [artifact] = (await (await client.get(f"/v1/jobs/{job_id}/artifacts")).json())["artifacts"]
    download = await client.get(artifact["url"])
    assert download.status == 200
    data = await download.read()
    assert len(data) == artifact["size_bytes"]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert "usr/bin/hello" in tar.getnames()
    assert job_containers(docker_client, job_id) == []


async def test_a_job_runs_with_nobody_watching(
    client: TestClient, build_dir: Callable[..., Path]
) -> None:
    job_id = (await submit(client, build_dir("slow-printer")))["job_id"]
    job = await wait_status(client, job_id, {"succeeded", "failed"})
    assert job["status"] == "succeeded"


@BACKENDS
async def test_sse_replay_resume_and_many_subscribers(
    client: TestClient, build_dir: Callable[..., Path]
) -> None:
    job_id = (await submit(client, build_dir("slow-printer")))["job_id"]
    first = asyncio.create_task(read_sse(client, job_id))
    await read_sse(client, job_id, until=has_line("tick 2"))
    late, by_header, by_query = await asyncio.gather(
        read_sse(client, job_id),
        read_sse(client, job_id, headers={"Last-Event-ID": "5"}),
        read_sse(client, job_id, params={"last_event_id": "7"}),
    )
    early = await first
    assert_contiguous(early)
    assert late.ids == early.ids  # the late one got everything so far, then live
    assert by_header.ids == early.ids[5:]
    assert by_query.ids == early.ids[7:]
    for sse in (early, late, by_header, by_query):
        assert sse.done and sse.end == early.end
    ticks = [m for m in early.messages() if m.startswith("tick")]
    assert ticks == [f"tick {i}" for i in range(1, 7)]

    # After the end: a new subscriber gets the whole replay and the end markers.
    replay = await read_sse(client, job_id)
    assert replay.events == early.events and replay.done
    resumed_at_end = await read_sse(client, job_id, headers={"Last-Event-ID": str(early.ids[-1])})
    assert resumed_at_end.events == [] and resumed_at_end.done


@BACKENDS
async def test_a_stalled_subscriber_blocks_nothing_and_no_line_is_lost(
    client: TestClient, build_dir: Callable[..., Path]
) -> None:
    count = 200_000
    job_id = (await submit(client, build_dir("flood", lines=count)))["job_id"]
    # Opens the stream and never reads it.
    stalled = await client.get(f"/v1/jobs/{job_id}/stream")
    try:
        sse = await read_sse(client, job_id, timeout_s=180)
        assert sse.end is not None and sse.end["status"] == "succeeded"
        assert_contiguous(sse)
        output = [e for e in sse.events if e["action"] == "output" and e["stream"] == "stdout"]
        assert all(e["lines"] == e["message"].count("\n") + 1 for e in output)
        numbers = [line for e in output for line in e["message"].split("\n") if line.isdigit()]
        assert numbers == [str(i) for i in range(1, count + 1)]
    finally:
        stalled.close()


@BACKENDS
async def test_cancel_mid_build_leaves_nothing(
    client: TestClient,
    settings: Settings,
    build_dir: Callable[..., Path],
    docker_client: docker.DockerClient,
) -> None:
    marker = f"orch-api-{uuid.uuid4().hex}"
    job_id = (await submit(client, build_dir("forker", marker=marker)))["job_id"]
    watcher = asyncio.create_task(read_sse(client, job_id))
    await read_sse(client, job_id, until=has_line("children started"))
    assert job_containers(docker_client, job_id) != []

    response = await client.post(f"/v1/jobs/{job_id}/cancel")
    body = await response.json()
    assert response.status == 200, body
    assert body["status"] == "cancelled"
    assert body["cancel_reason"] == "user"
    # The answer comes once the container is dead and gone.
    assert job_containers(docker_client, job_id) == []
    assert marked_processes(marker) == []
    assert not (settings.work_dir / job_id).exists()

    sse = await watcher
    assert sse.end is not None and sse.end["status"] == "cancelled"
    assert "❌ Build cancelled by user" in sse.messages()
    again = await client.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status == 409
    assert (await again.json())["status"] == "cancelled"


async def test_cancel_of_a_queued_job_means_it_never_starts(
    settings: Settings, build_dir: Callable[..., Path], docker_client: docker.DockerClient
) -> None:
    settings = settings.model_copy(update={"max_concurrent_builds": 1})
    async with serve(settings) as client:
        t0 = time.time()
        blocker = (await submit(client, build_dir("forker", marker=uuid.uuid4().hex)))["job_id"]
        queued = (await submit(client, build_dir("hello-c")))["job_id"]
        assert (await (await client.get(f"/v1/jobs/{queued}")).json())["status"] == "queued"
        response = await client.post(f"/v1/jobs/{queued}/cancel")
        assert response.status == 200
        assert (await response.json())["status"] == "cancelled"
        sse = await read_sse(client, queued)
        assert sse.end is not None and sse.end["status"] == "cancelled"
        assert "container_created" not in sse.actions()
        assert (await client.post(f"/v1/jobs/{blocker}/cancel")).status == 200
        assert container_events(docker_client, queued, t0) == []


@BACKENDS
async def test_timeout_ends_the_job_as_timed_out(
    client: TestClient, build_dir: Callable[..., Path], docker_client: docker.DockerClient
) -> None:
    job_id = (await submit(client, build_dir("forker", marker=uuid.uuid4().hex), timeout_s=2))[
        "job_id"
    ]
    job = await wait_status(client, job_id, {"timed_out", "failed", "cancelled"})
    assert (job["status"], job["cancel_reason"]) == ("timed_out", "timeout")
    assert job_containers(docker_client, job_id) == []


async def test_error_paths(
    settings: Settings, build_dir: Callable[..., Path], tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"max_upload_bytes": 64 * 1024})
    async with serve(settings) as client:
        unknown = uuid.uuid4().hex
        for method, path in (
            ("GET", f"/v1/jobs/{unknown}"),
            ("POST", f"/v1/jobs/{unknown}/cancel"),
            ("GET", f"/v1/jobs/{unknown}/stream"),
            ("GET", f"/v1/jobs/{unknown}/artifacts"),
        ):
            response = await client.request(method, path)
            assert response.status == 404, path
            assert (await response.json())["error"] == "not_found"

        metal = await submit(client, build_dir("hello-c"), variant="metal", expect=422)
        assert "macOS" in metal["message"] and metal["suggestion"]
        assert (await submit(client, build_dir("hello-c"), variant="rocm", expect=422))["error"]

        src = build_dir("hello-c")
        (src / "PKGBUILD").write_text(
            "pkgname=x\npkgver=1\npkgrel=1\nsource=('missing.c')\npackage() { true; }\n"
        )
        bad = await submit(client, src, expect=422)
        assert bad["problems"] == ["local source 'missing.c' is not in the upload"]

        big = tmp_path / "big"
        big.mkdir()
        (big / "PKGBUILD").write_text("pkgname=x\npkgver=1\npkgrel=1\npackage() { true; }\n")
        (big / "blob").write_bytes(os.urandom(200_000))  # incompressible
        assert (await submit(client, big, expect=413))["limit_bytes"] == 64 * 1024

        evil = io.BytesIO()
        with tarfile.open(fileobj=evil, mode="w") as tar:
            info = tarfile.TarInfo("../escape")
            tar.addfile(info, io.BytesIO(b""))
        response = await client.post(
            "/v1/builds", data=evil.getvalue(), headers={"Content-Type": "application/x-tar"}
        )
        assert response.status == 400
        assert "escapes" in (await response.json())["message"]

        garbage = await client.post(
            "/v1/builds", data=b"not a tar" * 100, headers={"Content-Type": "application/x-tar"}
        )
        assert garbage.status == 400
        wrong_type = await client.post("/v1/builds", json={"x": 1})
        assert wrong_type.status == 415
        assert await submit(client, build_dir("hello-c"), timeout_s="soon", expect=400)
        assert (await client.get("/v1/jobs", params={"status": "nope"})).status == 400
        nothing = await client.get("/no/such/route")
        assert nothing.status == 404
        assert (await nothing.json())["error"] == "not_found"
        # Every refusal cleaned up after itself: its sources, and the upload kept for reproduce.
        for folder in (settings.work_dir, settings.artifacts_dir):
            assert (list(folder.iterdir()) if folder.exists() else []) == [], folder


async def test_bearer_token(settings: Settings, build_dir: Callable[..., Path]) -> None:
    settings = Settings(
        data_dir=settings.data_dir, instance_id=settings.instance_id, api_token="s3cret"
    )
    async with serve(settings) as client:
        assert (await client.get("/v1/jobs")).status == 401
        wrong = await client.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        assert wrong.headers["WWW-Authenticate"] == "Bearer"
        ok = await client.get("/v1/jobs", headers={"Authorization": "Bearer s3cret"})
        assert ok.status == 200
        assert (await client.get("/health")).status == 200  # probes need no token


def test_refuses_to_bind_beyond_loopback_without_a_token() -> None:
    with pytest.raises(InsecureBind, match="ORCHESTRATOR_API_TOKEN"):
        check_bind(Settings(host="0.0.0.0"))
    check_bind(Settings(host="127.0.0.1"))
    check_bind(Settings(host="::1"))
    check_bind(Settings.model_validate({"host": "0.0.0.0", "api_token": "t"}))


async def test_jobs_list_newest_first_with_filter_and_pages(
    client: TestClient, build_dir: Callable[..., Path]
) -> None:
    ids = [(await submit(client, build_dir("hello-c")))["job_id"] for _ in range(3)]
    for job_id in ids:
        await wait_status(client, job_id, {"succeeded"})
    page = await (await client.get("/v1/jobs", params={"limit": "2"})).json()
    assert [j["job_id"] for j in page["jobs"]] == ids[::-1][:2]
    assert page["total"] == 3
    rest = await (await client.get("/v1/jobs", params={"limit": "2", "offset": "2"})).json()
    assert [j["job_id"] for j in rest["jobs"]] == [ids[0]]
    none = await (await client.get("/v1/jobs", params={"status": "failed"})).json()
    assert none["jobs"] == [] and none["total"] == 0


async def test_health_metrics_and_openapi(
    client: TestClient, settings: Settings, build_dir: Callable[..., Path]
) -> None:
    health = await client.get("/health")
    body = await health.json()
    assert health.status == 200 and body["docker"] is True and body["images"]["cpu"] is True

    job_id = (await submit(client, build_dir("hello-c")))["job_id"]
    await wait_status(client, job_id, {"succeeded"})
    metrics = await (await client.get("/metrics")).text()
    assert 'orchestrator_jobs{status="succeeded"} 1.0' in metrics
    duration = 'orchestrator_build_duration_seconds_count{status="succeeded",variant="cpu"} 1.0'
    assert duration in metrics, metrics

    spec = await (await client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    documented = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    served = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()  # type: ignore[union-attr]
        if route.method != "HEAD"
        and route.resource is not None
        and not is_dashboard_route(route.resource.canonical)  # pages, not the API
    }
    assert documented == served


async def test_health_says_when_the_image_is_missing(settings: Settings) -> None:
    settings = settings.model_copy(update={"image_cpu": "orchestrator/build:absent"})
    async with serve(settings) as client:
        health = await client.get("/health")
        assert health.status == 503
        assert "images/bootstrap" in (await health.json())["error"]


async def test_restart_keeps_history_and_interrupts_what_was_running(
    settings: Settings, build_dir: Callable[..., Path], docker_client: docker.DockerClient
) -> None:
    async with serve(settings) as client:
        done_id = (await submit(client, build_dir("hello-c")))["job_id"]
        before = await read_sse(client, done_id)
        running_id = (await submit(client, build_dir("forker", marker=uuid.uuid4().hex)))["job_id"]
        await read_sse(client, running_id, until=has_line("children started"))
    # The app stopped (as on SIGTERM): the running build was stopped, its container removed.
    assert job_containers(docker_client, running_id) == []

    async with serve(settings) as client:
        after = await read_sse(client, done_id)
        assert after.events == before.events and after.end == before.end
        job = await (await client.get(f"/v1/jobs/{running_id}")).json()
        assert (job["status"], job["cancel_reason"]) == ("interrupted", "shutdown")
        sse = await read_sse(client, running_id)
        assert "children started" in sse.messages()
        assert sse.end is not None and sse.end["status"] == "interrupted"


async def test_restart_after_a_crash_interrupts_what_lost_its_container_and_reaps_the_rest(
    settings: Settings, build_dir: Callable[..., Path], docker_client: docker.DockerClient
) -> None:
    from orchestrator.build.runner import INSTANCE_LABEL, JOB_LABEL
    from orchestrator.jobs.status import JobStatus
    from orchestrator.narration.events import Action, Event
    from orchestrator.storage.store import JobRecord, Store

    # What a killed process leaves: a job marked running with its log, whose container went
    # meanwhile, and a build container that no running job claims.
    job_id, unclaimed = uuid.uuid4().hex, uuid.uuid4().hex
    store = await Store.open(settings.data_dir / "orchestrator.db")
    await store.create_job(
        JobRecord(
            id=job_id,
            operation="build",
            status=JobStatus.RUNNING,
            variant="cpu",
            pkgname="x",
            pkgver="1-1",
            started_at=time.time(),
        )
    )
    made = Event(Action.CONTAINER_CREATED, "Container made")  # it ran: a container existed
    await store.append(job_id, [made, Event(Action.OUTPUT, "half-way", stream="stdout")])
    await store.close()
    orphan = docker_client.containers.create(
        settings.image_cpu,
        ["sleep", "300"],
        labels={INSTANCE_LABEL: settings.instance_id, JOB_LABEL: unclaimed},
    )
    orphan.start()

    async with serve(settings) as client:
        assert job_containers(docker_client, unclaimed) == []
        job = await (await client.get(f"/v1/jobs/{job_id}")).json()
        assert job["status"] == "interrupted"
        assert "container is gone" in job["reason"]
        sse = await read_sse(client, job_id)
        assert sse.messages()[:2] == ["Container made", "half-way"]
        assert "interrupted" in sse.messages()[-1]
        assert sse.end is not None and sse.end["status"] == "interrupted"
