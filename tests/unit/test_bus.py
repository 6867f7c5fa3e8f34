"""The bus's cursor logic over a real (temporary) store: no gaps, no repeats, no spinning."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator.backend import Stream
from orchestrator.jobs.status import JobStatus
from orchestrator.narration.bus import BATCH_MAX_BYTES, Bus
from orchestrator.narration.events import Action, Event, Level
from orchestrator.storage.store import JobRecord, Store

from .. import waiting


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


async def collect(
    bus: Bus, job_id: str, after: int = 0, seqs: list[int] | None = None
) -> list[int]:
    """Every seq the subscription yields, into ``seqs`` as they come (for a test to wait on)."""
    seqs = [] if seqs is None else seqs
    async for batch in bus.subscribe(job_id, after):
        seqs.extend(e.seq for e in batch)
    return seqs


def lines(*texts: str) -> list[Event]:
    return [Event(Action.OUTPUT, text, stream="stdout") for text in texts]


async def test_replay_then_live_then_end(store: Store, bus: Bus) -> None:
    await store.append("j", lines("a", "b"))
    early_seen: list[int] = []
    resumed_seen: list[int] = []
    early = asyncio.create_task(collect(bus, "j", seqs=early_seen))
    resumed = asyncio.create_task(collect(bus, "j", after=1, seqs=resumed_seen))
    await waiting.until(lambda: early_seen == [1, 2] and resumed_seen == [2], what="the replay")
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
    live_seen: list[int] = []
    near_end_seen: list[int] = []
    live = asyncio.create_task(collect(bus, "j", seqs=live_seen))
    near_end = asyncio.create_task(collect(bus, "j", after=5, seqs=near_end_seen))
    await waiting.until(lambda: len(live_seen) == 6 and near_end_seen == [6], what="the replay")
    bus.close("j")
    assert await asyncio.wait_for(live, 5) == [1, 2, 3, 4, 5, 6]
    assert await asyncio.wait_for(near_end, 5) == [6]


async def test_shutdown_ends_waiting_subscribers(store: Store, bus: Bus) -> None:
    seen: list[int] = []
    follower = asyncio.create_task(collect(bus, "j", seqs=seen))
    await store.append("j", lines("a"))
    await store.flush()
    await waiting.until(lambda: seen == [1], what="the live line")  # it waits for more now
    bus.shutdown()
    assert await asyncio.wait_for(follower, 5) == [1]


@pytest.mark.parametrize(
    ("action", "stream", "message"),
    [
        ("phase", None, 'a "q" \\ ü \x00 ✅'),
        ("output", "stdout", 'a "q" \\ ü \x00 ✅'),
        ("output", "stderr", "three\nlines\n"),
    ],
)
def test_a_frame_is_the_events_json(action: str, stream: Stream | None, message: str) -> None:
    from orchestrator.narration.bus import Frame
    from orchestrator.narration.schema import StoredEvent

    event = StoredEvent(
        Action(action), message, Level.INFO, stream, 1795614715.0943747, job_id="j1", seq=7
    )
    frame = Frame.of(event)
    head, _, rest = frame.data.decode().partition("\n")
    assert head == "id: 7"
    assert rest.startswith("data: ") and rest.endswith("\n\n")
    data = json.loads(rest[6:])
    assert (data["seq"], data["job_id"], data["action"], data["message"]) == (
        7,
        "j1",
        action,
        message,
    )
    assert data.get("stream") == stream


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
        # Caught up before each new line: it waits live when the line comes.
        await waiting.until(lambda: seen == list(range(1, n)), what=f"lines before {n}")  # noqa: B023
        await store.append("j", lines(str(n)))
    await waiting.until(lambda: seen == list(range(1, 12)), what="every line")
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
        await waiting.until(lambda: seen == [1, 2], what="the committed lines")
    finally:
        stall.set()
        bus.close("j")
        await asyncio.wait_for(task, 5)


async def test_the_ring_is_bounded_in_bytes_and_the_rest_comes_from_the_store(
    store: Store, bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("orchestrator.narration.bus._RING_BYTES", 50_000)
    for n in range(20):
        await store.append("j", lines(f"{n} " + "x" * 10_000))
    await store.flush()
    channel = bus._channels["j"]
    assert channel.ring_bytes <= 50_000
    assert channel.ring_bytes == sum(len(frame.data) for frame in channel.ring)
    assert len(channel.ring) < 20
    bus.close("j")
    assert await collect(bus, "j") == list(range(1, 21))


async def test_batches_are_bounded_in_bytes_from_the_ring_and_from_the_store(
    store: Store, bus: Bus
) -> None:
    # A subscriber holds a whole batch while its client takes it: one stalled client must not
    # pin megabytes (the ring's whole backlog, or a store page of 4000 big events).
    for n in range(60):
        await store.append("j", lines(f"{n} " + "x" * 10_000))
    await store.append("j", lines("big " + "y" * 3 * BATCH_MAX_BYTES))  # one event, alone
    await store.flush()

    async def batches() -> list[tuple[int, int]]:
        """(events, bytes) of each batch."""
        seen: list[tuple[int, int]] = []
        seqs: list[int] = []
        async for batch in bus.subscribe("j"):
            seen.append((len(batch), sum(len(frame.data) for frame in batch)))
            seqs.extend(frame.seq for frame in batch)
            if seqs[-1] == 61:
                break
        assert seqs == list(range(1, 62))
        return seen

    from_ring = await batches()
    bus.close("j")
    from_store = await batches()
    for seen in (from_ring, from_store):
        assert all(size <= BATCH_MAX_BYTES for _, size in seen[:-1]), seen
        assert seen[-1][0] == 1  # the big one comes whole, on its own


async def test_a_store_page_stops_after_max_bytes(store: Store) -> None:
    await store.append("j", lines(*(f"{n} " + "x" * 998 for n in range(10))))
    await store.append("j", lines("z" * 5000))
    page = await store.events("j", max_bytes=3000)
    assert [e.seq for e in page] == [1, 2, 3]  # the one that reaches the limit still comes
    assert [e.seq for e in await store.events("j", after_seq=10, max_bytes=10)] == [11]
    assert len(await store.events("j", max_bytes=100_000, limit=4)) == 4
    assert len(await store.events("j")) == 11


@pytest.mark.parametrize("source", ["ring", "store"])
async def test_a_waiting_subscription_keeps_nothing_it_handed_over(
    store: Store, bus: Bus, source: str
) -> None:
    # While its client stalls, the handler holds the batch it is sending; the subscription
    # must not hold a second reference to it (or to the store page it came from).
    await store.append("j", lines(*(f"{n} " + "x" * 30_000 for n in range(4))))
    await store.flush()
    if source == "store":
        bus.close("j")
    subscription = bus.subscribe("j")
    batch = await anext(subscription)
    assert [frame.seq for frame in batch] == [1, 2]
    assert sys.getrefcount(batch) == 2  # ours, and getrefcount's argument
    assert subscription.ag_frame is not None
    held = subscription.ag_frame.f_locals.values()
    assert not any(isinstance(value, list) and value for value in held)
    await subscription.aclose()
