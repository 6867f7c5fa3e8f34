"""The bus's cursor logic over a real (temporary) store: no gaps, no repeats, no spinning."""

from __future__ import annotations

import asyncio
import json
import threading
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
    await store.append("j", lines("a", "b"))
    early = asyncio.create_task(collect(bus, "j"))
    resumed = asyncio.create_task(collect(bus, "j", after=1))
    await asyncio.sleep(0.05)
    await store.append("j", lines("c", "d"))
    await store.flush()
    bus.close("j")
    assert await asyncio.wait_for(early, 5) == [1, 2, 3, 4]
    assert await asyncio.wait_for(resumed, 5) == [2, 3, 4]
    assert await collect(bus, "j") == [1, 2, 3, 4]  # after the end: from the store


async def test_a_gap_in_what_was_published_is_filled_from_the_store(store: Store, bus: Bus) -> None:
    await store.append("j", lines("1", "2", "3"))
    await store.flush()
    store._listeners.remove(bus._committed)  # 4 is committed but the bus never hears of it
    await store.append("j", lines("4"))
    await store.flush()
    store.on_commit(bus._committed)
    await store.append("j", lines("5", "6"))
    await store.flush()
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


@pytest.mark.parametrize(
    ("action", "stream", "message"),
    [
        ("phase", None, 'a "q" \\ ü \x00 ✅'),
        ("output", "stdout", 'a "q" \\ ü \x00 ✅'),
        ("output", "stderr", "three\nlines\n"),
    ],
)
def test_a_frame_is_the_events_json(action: str, stream: str | None, message: str) -> None:
    from orchestrator.bus import Frame
    from orchestrator.store import StoredEvent

    event = StoredEvent("j1", 7, 1795614715.0943747, action, "info", message, stream)
    frame = Frame.of(event)
    head, _, rest = frame.data.decode().partition("\n")
    assert head == "id: 7"
    assert rest.startswith("data: ") and rest.endswith("\n\n")
    assert json.loads(rest[6:]) == event.to_dict()


async def test_a_caught_up_subscriber_waits_on_the_ring_not_the_store(
    store: Store, bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Going to the store each time a live subscriber caught up cost a flush and a query per
    # batch: tens of milliseconds of latency for every line of output.
    await store.append("j", lines("a"))
    await store.flush()
    reads = 0
    real_events = store.events

    async def counting(*args: object, **kwargs: object) -> object:
        nonlocal reads
        reads += 1
        return await real_events(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "events", counting)
    seen: list[int] = []

    async def follow() -> None:
        async for batch in bus.subscribe("j"):
            seen.extend(e.seq for e in batch)

    task = asyncio.create_task(follow())
    for n in range(2, 12):
        await asyncio.sleep(0.01)
        await store.append("j", lines(str(n)))
    await asyncio.sleep(0.05)
    assert seen == list(range(1, 12))
    assert reads == 0
    bus.close("j")
    await asyncio.wait_for(task, 5)


async def test_subscribers_see_only_what_is_committed(store: Store, bus: Bus) -> None:
    # Shown before its commit, an event could vanish in a crash and its seq be given again.
    stall = threading.Event()
    seen: list[int] = []

    async def follow() -> None:
        async for batch in bus.subscribe("j"):
            seen.extend(e.seq for e in batch)

    task = asyncio.create_task(follow())
    try:
        store._executor.submit(stall.wait)  # the database thread is stuck behind this
        await store.append("j", lines("a", "b"))
        await asyncio.sleep(0.1)
        assert seen == []
        stall.set()
        await store.flush()
        await asyncio.sleep(0.05)
        assert seen == [1, 2]
    finally:
        stall.set()
        bus.close("j")
        await asyncio.wait_for(task, 5)


async def test_the_ring_is_bounded_in_bytes_and_the_rest_comes_from_the_store(
    store: Store, bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("orchestrator.bus._RING_BYTES", 50_000)
    for n in range(20):
        await store.append("j", lines(f"{n} " + "x" * 10_000))
    await store.flush()
    channel = bus._channels["j"]
    assert channel.ring_bytes <= 50_000
    assert channel.ring_bytes == sum(len(frame.data) for frame in channel.ring)
    assert len(channel.ring) < 20
    bus.close("j")
    assert await collect(bus, "j") == list(range(1, 21))
