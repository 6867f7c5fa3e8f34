"""Job kinds: looked up by name; the registry applies the time limit, the busy guard and the
endings, the same for every kind (a fake kind here, no backend)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel

from orchestrator import Settings
from orchestrator.api import create_app
from orchestrator.backend.fake import FakeBackend
from orchestrator.errors import InvalidInput, JobStateConflict, UnknownOperation
from orchestrator.jobs import (
    Job,
    JobResult,
    Plan,
    Sink,
    Submission,
    cancel_result,
    ending_event,
    parse_timeout,
)
from orchestrator.jobs.cancel import CancelReason, CancelToken
from orchestrator.jobs.registry import Registry
from orchestrator.jobs.status import JobStatus
from orchestrator.metrics import Metrics
from orchestrator.narration.bus import Bus
from orchestrator.narration.events import Action, Event, Level
from orchestrator.storage.store import JobRecord, Store

from .. import waiting


@dataclass
class NapKind:
    """Sleeps ``nap_s`` unless stopped; one nap per sleeper at a time."""

    name: str = "nap"
    noun: str = "Nap"
    upload: bool = False
    nap_s: float = 30.0
    runs: int = 0
    request: type[BaseModel] = BaseModel

    async def parse(self, submission: Submission) -> Plan:
        return Plan(message="📥 Queued a nap", pkgname=str(submission.body.get("who", "me")))

    def subject(self, record: JobRecord) -> str | None:
        return f"nap:{record.pkgname}"

    async def job(self, record: JobRecord) -> Job:
        async def work(sink: Sink, token: CancelToken) -> JobResult:
            self.runs += 1
            await sink([Event(Action.PHASE, "napping")])
            try:
                await asyncio.wait_for(token.wait(), self.nap_s)
            except TimeoutError:
                return JobResult(JobStatus.SUCCEEDED, "slept")
            return cancel_result(token, self.noun)

        return Job(work)

    resume = job


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", instance_id="unit", max_concurrent_builds=1)


@asynccontextmanager
async def open_registry(settings: Settings, kind: NapKind) -> AsyncIterator[tuple[Registry, Store]]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await Store.open(settings.data_dir / "orchestrator.db")
    registry = Registry(settings, store, Bus(store), Metrics())
    registry.register(kind)
    await registry.start()
    try:
        yield registry, store
    finally:
        await registry.shutdown()
        await store.close()


async def nap(registry: Registry, **body: object) -> str:
    submission = Submission(registry.new_job_id(), {"operation": "nap", **body})
    return (await registry.submit("nap", submission)).record.id


async def until_status(registry: Registry, job_id: str, status: JobStatus) -> JobRecord:
    return await waiting.until(
        lambda: registry.get(job_id), lambda r: r.status is status, what=f"job {job_id}"
    )


async def test_kinds_are_looked_up_by_name(settings: Settings) -> None:
    kind = NapKind()
    async with open_registry(settings, kind) as (registry, _store):
        assert registry.kind("nap") is kind
        with pytest.raises(UnknownOperation) as unknown:
            registry.kind("snooze")
        assert unknown.value.known == ("nap",)
        with pytest.raises(UnknownOperation) as upload:  # a JSON kind is not an upload's
            registry.kind("nap", upload=True)
        assert upload.value.known == ()


async def test_a_job_past_its_timeout_ends_timed_out_and_says_so_once(settings: Settings) -> None:
    kind = NapKind()
    async with open_registry(settings, kind) as (registry, store):
        job_id = await nap(registry, timeout_s=0.2)
        record = await until_status(registry, job_id, JobStatus.TIMED_OUT)
        assert record.reason == "⏱️ Nap timed out after 0.2 s"
        assert record.cancel_reason == "timeout"
        assert record.timeout_s == 0.2
        events = await store.events(job_id)
        endings = [e for e in events if e.action == Action.TIMED_OUT.value]
        assert [e.message for e in endings] == ["⏱️ Nap timed out after 0.2 s"]
        assert events[-1] == endings[0] and endings[0].level == Level.ERROR.value
        assert kind.runs == 1


async def test_a_job_within_its_timeout_ends_as_its_work_says(settings: Settings) -> None:
    async with open_registry(settings, NapKind(nap_s=0.05)) as (registry, store):
        job_id = await nap(registry, timeout_s=5)
        record = await until_status(registry, job_id, JobStatus.SUCCEEDED)
        assert (record.reason, record.cancel_reason) == ("slept", None)
        assert (await store.events(job_id))[-1].message == "✅ Nap succeeded: slept"


async def test_one_unfinished_job_per_subject(settings: Settings) -> None:
    async with open_registry(settings, NapKind()) as (registry, _store):
        first = await nap(registry, who="a")
        with pytest.raises(JobStateConflict, match="nap:a is busy"):
            await nap(registry, who="a")
        with pytest.raises(JobStateConflict):
            registry.ensure_idle("nap:a")
        assert registry.busy_with("nap:a") == first
        other = await nap(registry, who="b")  # queued behind the first: a subject of its own
        cancelled = await registry.cancel(other)
        assert cancelled.reason == "❌ Nap cancelled by user before it started"
        await until_status(registry, first, JobStatus.RUNNING)
        await registry.cancel(first)
        assert registry.busy_with("nap:a") is None
        await nap(registry, who="a")


async def test_the_timeout_is_parsed_the_same_from_a_query_or_json(settings: Settings) -> None:
    async with open_registry(settings, NapKind()) as (registry, _store):
        for raw in ("soon", -1, 0, True, settings.max_timeout_s + 1, "nan"):
            with pytest.raises(InvalidInput, match="timeout_s must be"):
                await nap(registry, timeout_s=raw)
        assert parse_timeout(None, 60, 100) == 60
        assert parse_timeout("2.5", 60, 100) == parse_timeout(2.5, 60, 100) == 2.5


@pytest.mark.parametrize("noun", ["Build", "Install", "Download"])
def test_the_endings_are_worded_with_the_kinds_noun(noun: str) -> None:
    endings = {
        CancelReason.USER: (JobStatus.CANCELLED, f"❌ {noun} cancelled by user"),
        CancelReason.TIMEOUT: (JobStatus.TIMED_OUT, f"⏱️ {noun} timed out after 3 s"),
        CancelReason.SHUTDOWN: (
            JobStatus.INTERRUPTED,
            f"⚠️ {noun} interrupted: the service is shutting down",
        ),
        CancelReason.DISK_FULL: (JobStatus.FAILED, "stopped: the data disk is full (/data)"),
    }
    for reason, (status, message) in endings.items():
        token = CancelToken()
        detail = "/data" if reason is CancelReason.DISK_FULL else None
        token.cancel(reason, detail, after_s=3 if reason is CancelReason.TIMEOUT else None)
        result = cancel_result(token, noun)
        assert (result.status, result.reason) == (status, message)
        assert cancel_result(reason, noun, after_s=3, detail=detail) == result
    succeeded = ending_event(JobResult(JobStatus.SUCCEEDED, "done"), noun)
    assert (succeeded.action, succeeded.message) == (Action.SUCCEEDED, f"✅ {noun} succeeded: done")
    failed = ending_event(JobResult(JobStatus.FAILED, "boom"), noun)
    assert (failed.action, failed.message) == (Action.FAILED, f"❌ {noun} failed: boom")
    timed_out = ending_event(cancel_result(CancelReason.TIMEOUT, noun), noun)
    assert (timed_out.action, timed_out.message) == (Action.TIMED_OUT, f"⏱️ {noun} timed out")
    told = JobResult(JobStatus.SUCCEEDED, "installed", ending="✅ Worker x 1 installed")
    assert ending_event(told, noun).message == "✅ Worker x 1 installed"


async def test_post_jobs_answers_an_unknown_kind_with_the_known_ones(settings: Settings) -> None:
    app = create_app(settings, backend=FakeBackend())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        for operation in ("nap", "build", None):  # "build" takes an upload, at /v1/builds
            answer = await client.post("/v1/jobs", json={"operation": operation})
            assert answer.status == 422
            body = await answer.json()
            assert body["error"] == "unknown_operation"
            assert body["operations"] == ["worker_install", "model_download", "reproduce"]
        bad = await client.post("/v1/jobs", json={"operation": "model_download", "timeout_s": 0})
        assert bad.status == 400
        assert "timeout_s must be" in (await bad.json())["message"]


def test_the_operation_union_is_the_json_kinds_requests() -> None:
    from orchestrator import kinds
    from orchestrator.api import wire

    assert kinds.names() == ["worker_install", "model_download", "reproduce"]
    assert kinds.names(upload=True) == ["build"]
    schema = wire.Operation.model_json_schema()
    assert sorted(schema["discriminator"]["mapping"]) == sorted(kinds.names())
    parsed = wire.Operation.model_validate({"operation": "worker_install", "worker_id": "w"})
    assert isinstance(parsed.root, kinds.WorkerInstall)


async def test_a_body_the_kinds_model_refuses_is_a_400_naming_the_field(
    settings: Settings,
) -> None:
    app = create_app(settings, backend=FakeBackend())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        for body, says in (
            ({"operation": "worker_install"}, "'worker_id' is required"),
            ({"operation": "worker_install", "worker_id": 3}, "'worker_id' is required"),
            (
                {"operation": "model_download", "url": "http://x/m", "name": "m", "sha256": "z"},
                "sha256 must be 64 hex digits",
            ),
        ):
            answer = await client.post("/v1/jobs", json=body)
            assert answer.status == 400
            refusal = await answer.json()
            assert refusal["error"] == "bad_request" and says in refusal["message"], refusal
