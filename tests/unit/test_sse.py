"""The SSE wire: frames as the bus renders them match the API's models, and the one reader
reads them (and any other event stream) however the bytes are cut."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator

import pytest

from orchestrator.api.wire import Event, StreamEnd
from orchestrator.backend import Stream
from orchestrator.jobs.status import JobStatus
from orchestrator.narration import sse
from orchestrator.narration.events import Action, Level
from orchestrator.narration.schema import StoredEvent

MESSAGES = ['a "q" \\ ü \x00 ✅ \u2028', "three\nlines\n", "", "x" * 70_000]


def stored(
    seq: int, message: str, action: str = "output", stream: Stream | None = "stdout"
) -> StoredEvent:
    return StoredEvent(
        Action(action), message, Level.INFO, stream, 1795614715.0943747, job_id="j1", seq=seq
    )


@pytest.mark.parametrize("message", MESSAGES)
@pytest.mark.parametrize(
    ("action", "stream"), [("output", "stderr"), ("phase", "stdout"), ("queued", None)]
)
def test_an_event_frame_is_the_event_model(
    message: str, action: str, stream: Stream | None
) -> None:
    event = stored(7, message, action, stream)
    head, _, rest = sse.event_frame(event).decode().partition("\n")
    assert head == "id: 7"
    data = json.loads(rest.removeprefix("data: ").removesuffix("\n\n"))
    expected = {
        "seq": 7,
        "ts": 1795614715.0943747,
        "job_id": "j1",
        "action": action,
        "level": "info",
        "message": message,
    }
    if stream is not None:
        expected["stream"] = stream
    if action == "output":
        expected["lines"] = message.count("\n") + 1
    assert data == expected
    assert rest.removeprefix("data: ").removesuffix("\n\n") == json.dumps(data, ensure_ascii=False)
    # What the bus renders by hand is exactly what the model would serve.
    assert Event.model_validate(data).model_dump(mode="json", exclude_unset=True) == data


def test_the_end_frame_ends_the_stream() -> None:
    end = StreamEnd(job_id="j1", status=JobStatus.FAILED, reason="exit 2", exit_code=2)
    frame = sse.end_frame(end.model_dump(mode="json"))
    [marker, done] = sse.Parser().feed(frame)
    assert marker.is_end and StreamEnd.model_validate(marker.json()) == end
    assert done.is_done and not done.is_end


def stream_of(messages: list[str]) -> bytes:
    events = [sse.event_frame(stored(seq, m)) for seq, m in enumerate(messages, start=1)]
    end = sse.end_frame({"job_id": "j1", "status": "succeeded", "reason": None, "exit_code": 0})
    return sse.HEARTBEAT + sse.HEARTBEAT.join(events) + end


def read(parser: sse.Parser, pieces: list[bytes]) -> list[sse.Message]:
    return [message for piece in pieces for message in parser.feed(piece)]


@pytest.mark.parametrize("seed", range(20))
def test_what_the_service_writes_reads_back_however_it_is_cut(seed: int) -> None:
    body = stream_of(MESSAGES)
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(body)), 30)) if seed else list(range(1, len(body)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    got = read(sse.Parser(), pieces)
    assert [m.json()["message"] for m in got[:-2]] == MESSAGES
    assert [m.id for m in got[:-2]] == ["1", "2", "3", "4"]
    assert got[-2].is_end and got[-2].json()["status"] == "succeeded"
    assert got[-1].is_done


def test_an_event_cut_short_is_never_seen() -> None:
    body = stream_of(["whole", "cut"])
    cut = body.index(b'"cut"')
    assert [m.json()["message"] for m in read(sse.Parser(), [body[:cut]])] == ["whole"]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_the_standards_rules(newline: bytes) -> None:
    text = [
        "\ufeff: a comment",
        "retry: 10",
        "id: 1",
        "event: custom",
        "data:no space",
        "data:  two spaces",
        "data",
        "",
        "",  # no data: nothing to dispatch, and the type is forgotten
        "data: plain",
        "",
        "id: bad\0id",
        "event: other",
        "",
        "data: after",
        "",
        "data: unterminated",
    ]
    body = newline.join(line.encode() for line in text)
    for pieces in ([body], [body[i : i + 1] for i in range(len(body))]):
        got = read(sse.Parser(), pieces)
        assert got == [
            sse.Message("custom", "no space\n two spaces\n", "1"),
            sse.Message("message", "plain", "1"),
            sse.Message("message", "after", "1"),
        ]


async def test_messages_reads_an_async_stream() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for line in stream_of(["one"]).splitlines(keepends=True):
            yield line

    got = [m async for m in sse.messages(chunks())]
    assert [(m.event, m.is_done) for m in got] == [
        ("message", False),
        ("end", False),
        ("message", True),
    ]
