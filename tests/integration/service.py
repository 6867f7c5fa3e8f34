"""Helpers for API tests: a real app on 127.0.0.1, tar uploads, and reading a job's stream."""

from __future__ import annotations

import asyncio
import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from orchestrator.narration import sse

from .. import waiting


def tar_dir(path: Path, *, gz: bool = True) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz" if gz else "w") as tar:
        for child in sorted(path.iterdir()):
            tar.add(child, arcname=f"./{child.name}")
    return out.getvalue()


async def submit(
    client: TestClient,
    src: Path,
    *,
    expect: int = 201,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> dict[str, Any]:
    response = await client.post(
        "/v1/builds",
        params={k: str(v) for k, v in params.items()},
        data=tar_dir(src),
        headers={"Content-Type": "application/gzip", **(headers or {})},
    )
    body = await response.json()
    assert response.status == expect, body
    return dict(body)


async def dry_run(client: TestClient, src: Path, expect: int = 200) -> dict[str, Any]:
    """``POST /v1/builds?dry_run=true`` of ``src``: makepkg's reading, no job."""
    response = await client.post(
        "/v1/builds",
        params={"dry_run": "true"},
        data=tar_dir(src),
        headers={"Content-Type": "application/gzip"},
    )
    body = dict(await response.json())
    assert response.status == expect, body
    return body


@dataclass
class Sse:
    events: list[dict[str, Any]] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)  # every message's, samples' too
    samples: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None
    done: bool = False

    def messages(self) -> list[str]:
        """Every narration line (an output event's message holds a run of lines)."""
        return [line for e in self.events for line in e["message"].split("\n")]

    def actions(self) -> list[str]:
        return [e["action"] for e in self.events]


def has_line(text: str) -> Callable[[dict[str, Any]], bool]:
    """An ``until`` for ``read_sse``: the event holds the line ``text``."""
    return lambda event: text in event["message"].split("\n")


async def read_sse(
    client: TestClient,
    job_id: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    until: Any = None,
    timeout_s: float = 120,
    samples: bool = False,
) -> Sse:
    """Read the job's stream to its end (or until ``until(event)`` is true). Resource samples
    (their own SSE type) are left out, as a client wanting only narration leaves them, unless
    ``samples``."""
    result = Sse()

    async def read() -> None:
        response = await client.get(
            f"/v1/jobs/{job_id}/stream", headers=headers or {}, params=params or {}
        )
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        async for message in sse.messages(response.content.iter_any()):
            if message.is_done:
                result.done = True
            elif message.is_end:
                result.end = message.json()
            else:
                event = message.json()
                result.ids.append(int(message.id))
                if message.event == "sample":
                    result.samples.append(event)
                    if not samples:
                        continue
                result.events.append(event)
                if until is not None and until(event):
                    response.close()
                    return

    await asyncio.wait_for(read(), timeout_s)
    return result


async def wait_status(
    client: TestClient, job_id: str, statuses: set[str], timeout_s: float = 120
) -> dict[str, Any]:
    async def job() -> dict[str, Any]:
        return dict(await (await client.get(f"/v1/jobs/{job_id}")).json())

    return await waiting.until(
        job,
        lambda j: j["status"] in statuses,
        timeout_s=timeout_s,
        interval_s=0.1,
        what=f"job {job_id} in {sorted(statuses)}",
    )
