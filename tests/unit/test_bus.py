"""The bus's cursor logic over a real (temporary) store: no gaps, no repeats, no spinning."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator.bus import Bus
from orchestrator.events import Action, Event
from orchestrator.status import JobStatus
from orchestrator.store import JobRecord, Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(tmp_path / "db.sqlite")
    await store.create_job(JobRecord(id="j", operation="build", status=JobStatus.RUNNING))
    yield store
    await store.close()


@pytest.fixture
def bus(store: Store) -> Bus:
    bus = Bus(store)
    bus.open("j")
    return bus


async def collect(bus: Bus, job_id: str, after: int = 0) -> list[int]:
    seqs: list[int] = []
    async for batch in bus.subscribe(job_id, after):
        seqs.extend(e.seq for e in batch)
    return seqs


def lines(*texts: str) -> list[Event]:
    return [Event(Action.OUTPUT, text, stream="stdout") for text in texts]


async def test_replay_then_live_then_end(store: Store, bus: Bus) -> None:
    bus.publish("j", await store.append("j", lines("a", "b")))
    early = asyncio.create_task(collect(bus, "j"))
    resumed = asyncio.create_task(collect(bus, "j", after=1))
    await asyncio.sleep(0.05)
    bus.publish("j", await store.append("j", lines("c", "d")))
    bus.close("j")
    assert await asyncio.wait_for(early, 5) == [1, 2, 3, 4]
    assert await asyncio.wait_for(resumed, 5) == [2, 3, 4]
    assert await collect(bus, "j") == [1, 2, 3, 4]  # after the end: from the store


async def test_a_gap_in_what_was_published_is_filled_from_the_store(store: Store, bus: Bus) -> None:
    bus.publish("j", await store.append("j", lines("1", "2", "3")))
    await store.append("j", lines("4"))  # stored, never published (a cancelled append)
    bus.publish("j", await store.append("j", lines("5", "6")))
    live = asyncio.create_task(collect(bus, "j"))
    near_end = asyncio.create_task(collect(bus, "j", after=5))
    await asyncio.sleep(0.05)
    bus.close("j")
    assert await asyncio.wait_for(live, 5) == [1, 2, 3, 4, 5, 6]
    assert await asyncio.wait_for(near_end, 5) == [6]


async def test_shutdown_ends_waiting_subscribers(bus: Bus) -> None:
    waiting = asyncio.create_task(collect(bus, "j"))
    await asyncio.sleep(0.05)
    bus.shutdown()
    assert await asyncio.wait_for(waiting, 5) == []


@pytest.mark.parametrize("stream", [None, "stdout"])
def test_a_frame_is_the_events_json(stream: str | None) -> None:
    from orchestrator.bus import Frame
    from orchestrator.store import StoredEvent

    event = StoredEvent("j1", 7, 1795614715.0943747, "output", "info", 'a "q" \\ ü \x00 ✅', stream)
    frame = Frame.of(event)
    head, _, rest = frame.data.decode().partition("\n")
    assert head == "id: 7"
    assert rest.startswith("data: ") and rest.endswith("\n\n")
    assert json.loads(rest[6:]) == event.to_dict()
