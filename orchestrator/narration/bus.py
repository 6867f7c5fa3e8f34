"""Per-job fan-out of narration: replay from the store, then live, for any number of subscribers.

Subscribers hold no queues. Each keeps a cursor (the last ``seq`` it delivered) and pulls: from a
small in-memory ring of the job's newest events when its cursor is inside it, from the store when
it has fallen behind. So a slow subscriber costs nothing but its cursor and the one batch it is
sending, never blocks the build or the other subscribers, and memory stays bounded whatever
subscribers do. A batch holds at most ``BATCH_MAX_BYTES`` (or one event, if that is bigger):
a client that stops reading pins one batch, not the ring's whole backlog or a page of the store.

What travels is a ``Frame``: the event already encoded as Server-Sent Event bytes (``sse.py``),
made once when it is published, so 500 subscribers cost one JSON encoding per event, not 500.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter

from ..storage.store import Store
from ..timeouts import BUS_RETRY_S
from .schema import StoredEvent
from .sse import event_frame

_RING_EVENTS = 16384
_RING_BYTES = 16 * 1024 * 1024  # an output event can be 64 KiB: bound the bytes as well
_STORE_PAGE = 4000
BATCH_MAX_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Frame:
    seq: int
    data: bytes  # "id: <seq>\ndata: <json>\n\n"

    @classmethod
    def of(cls, event: StoredEvent) -> Frame:
        return cls(event.seq, event_frame(event))


def _within(max_bytes: int, frames: Iterable[Frame]) -> list[Frame]:
    """The first of ``frames`` up to ``max_bytes`` (at least one)."""
    batch: list[Frame] = []
    size = 0
    for frame in frames:
        size += len(frame.data)
        if batch and size > max_bytes:
            break
        batch.append(frame)
    return batch


class _Channel:
    def __init__(self) -> None:
        self.ring: deque[Frame] = deque(maxlen=_RING_EVENTS)
        self.ring_bytes = 0
        self.last_seq = 0
        self.closed = False
        self.changed = asyncio.Event()

    def take(self, cursor: int, max_bytes: int) -> list[Frame] | None:
        """The ring's events after ``cursor``, up to ``max_bytes`` (at least one): [] when
        caught up, None when the ring cannot say (the cursor is behind it: then the store)."""
        if not self.ring:
            return None
        if cursor >= self.ring[-1].seq:
            return []
        start = cursor + 1 - self.ring[0].seq
        if start < 0 or start >= len(self.ring) or self.ring[start].seq != cursor + 1:
            return None
        return _within(max_bytes, itertools.islice(self.ring, start, None))

    def wake(self) -> None:
        # Each waiter swaps in a fresh event after waking; setting the old one wakes them all.
        self.changed.set()
        self.changed = asyncio.Event()


class Bus:
    """Fans out what the store has committed (see ``Store.on_commit``), never anything sooner."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._channels: dict[str, _Channel] = {}
        self._closing = False
        store.on_commit(self._committed)

    def _committed(self, batch: Sequence[StoredEvent]) -> None:
        for job_id, events in itertools.groupby(batch, key=attrgetter("job_id")):
            self._publish(job_id, list(events))

    def open(self, job_id: str) -> None:
        """Start live fan-out for a job that is about to produce events."""
        self._channels.setdefault(job_id, _Channel())

    def _publish(self, job_id: str, events: Sequence[StoredEvent]) -> None:
        channel = self._channels.get(job_id)
        if channel is None or not events:
            return
        for event in map(Frame.of, events):
            # The ring must stay gapless for cursor lookups. Should a batch ever be committed
            # unheard (the store failed in between), the ring starts afresh: the store has
            # every committed event, so subscribers lose nothing.
            if channel.ring and event.seq != channel.ring[-1].seq + 1:
                channel.ring.clear()
                channel.ring_bytes = 0
            if len(channel.ring) == _RING_EVENTS:
                channel.ring_bytes -= len(channel.ring[0].data)  # about to fall off
            channel.ring.append(event)
            channel.ring_bytes += len(event.data)
            while channel.ring_bytes > _RING_BYTES and len(channel.ring) > 1:
                channel.ring_bytes -= len(channel.ring.popleft().data)
            channel.last_seq = max(channel.last_seq, event.seq)
        channel.wake()

    def close(self, job_id: str) -> None:
        """The job has ended: subscribers drain what is left and stop."""
        channel = self._channels.pop(job_id, None)
        if channel is not None:
            channel.closed = True
            channel.wake()

    def shutdown(self) -> None:
        """End every subscription (the service is stopping)."""
        self._closing = True
        for job_id in list(self._channels):
            self.close(job_id)

    async def _page(self, job_id: str, cursor: int) -> list[Frame]:
        stored = await self._store.events(
            job_id, after_seq=cursor, limit=_STORE_PAGE, max_bytes=BATCH_MAX_BYTES
        )
        return _within(BATCH_MAX_BYTES, map(Frame.of, stored))

    async def subscribe(self, job_id: str, after_seq: int = 0) -> AsyncGenerator[list[Frame], None]:
        """Batches of events with ``seq > after_seq``, in order, until the job's channel closes.

        For a job with no open channel (finished, or unknown to this process) the stored
        events are replayed and the subscription ends.
        """
        cursor = after_seq
        while True:
            channel = self._channels.get(job_id)
            batch = channel.take(cursor, BATCH_MAX_BYTES) if channel is not None else None
            if batch is None:
                batch = await self._page(job_id, cursor)  # behind the ring, or not live
            if batch:
                cursor = batch[-1].seq
                # Handed over, not kept: while the caller's client stalls, the caller's is
                # the only reference, and it lets go once the batch is written.
                handover = [batch]
                del batch
                yield handover.pop()
                continue
            channel = self._channels.get(job_id)
            if channel is None or channel.closed or self._closing:
                return
            if cursor < channel.last_seq:
                # Published but not yet readable anywhere: should not happen; never spin.
                await asyncio.sleep(BUS_RETRY_S)
                continue
            await channel.changed.wait()
