"""The Server-Sent Events wire: how a job's stream is written, and the one reader of it.

A job's stream (``GET /v1/jobs/{id}/stream``) is, per event, ``id: <seq>`` and ``data: <event
JSON>``; ``: keep-alive`` comments while nothing happens; and, once the job has ended, ``event:
end`` with how it ended, then ``data: [DONE]``. The JSON's shapes are ``Event`` and ``StreamEnd``
in ``api/wire.py``; the event's is made from the same fields as ``event_frame`` (``schema.py``).

Writing and reading live together so that they cannot drift apart, and outside ``api/`` because
the bus renders (each event once, shared by every subscriber) and the CLI, the bench and the
tests read: none of them may import the app. Nothing here needs more than the standard library.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from typing import Any, NamedTuple

from .events import Action
from .schema import FIELDS, EventField, StoredEvent

END_EVENT = "end"  # the event type of the end marker
DONE = "[DONE]"  # the data of the stream's very last message
HEARTBEAT = b": keep-alive\n\n"

_quote = json.encoder.encode_basestring  # C-accelerated; non-ASCII stays as it is


def _text(f: EventField, value: str) -> str:
    """An f-string piece writing the field's ``value`` (an expression) as JSON."""
    if f.base in (int, float):
        return f"{{{value}!r}}"  # a finite number: repr is JSON's spelling
    if f.base is not str:  # a bool's repr (True) or a dict's is not JSON: say so at import
        raise TypeError(f"the stream cannot send {f.name}: {f.base.__name__} is not str/int/float")
    if f.words:
        return f'"{{{value}}}"'  # one of our own words: nothing to escape
    return f"{{_quote({value})}}"


# Events a client reading log lines does not want get an SSE type of their own, so a browser's
# ``onmessage`` never sees them and a reader that wants them listens for the type.
_TYPES = {Action.SAMPLE: f"event: {Action.SAMPLE}\n"}


def _compile() -> Callable[[StoredEvent], bytes]:
    """``event_frame``, written out for the fields as declared (as dataclasses writes an
    ``__init__``): it runs once per event, and a loop over the fields took twice as long
    (measured: 5 µs an event against 2)."""
    if FIELDS[0].optional:
        raise TypeError(f"the stream's first field, {FIELDS[0].name}, must always be there")
    scope: dict[str, Any] = {"_quote": _quote, "_types": _TYPES}
    body = ["s = _types.get(e.action, '')"]
    run = "id: {e.seq}\ndata: {{"  # an f-string of the fields that are always there
    for place, f in enumerate(FIELDS):
        value = f"e.{f.name}"
        if f.derive is not None:
            scope[f"_{f.name}"] = f.derive
            value = f"_{f.name}(e)"
        piece = f'{", " if place else ""}"{f.name}": '
        if not f.optional:
            run += piece + _text(f, value)
            continue
        body.append(f"s += f{run!r}")
        run = ""
        body += [f"v = {value}", f"if v is not None: s += f{piece + _text(f, 'v')!r}"]
    body.append(f"return (s + f{run + '}}' + chr(10) * 2!r}).encode()")
    source = "def event_frame(e):\n" + "".join(f"    {line}\n" for line in body)
    exec(source, scope)  # made above from the schema's own names, nothing from outside
    frame: Callable[[StoredEvent], bytes] = scope["event_frame"]
    frame.__doc__ = """``id: <seq>`` (after ``event: sample`` for a sample) and the event as
    JSON: what ``json.dumps`` makes of its fields (``FIELDS``, in their order), leaving out
    those that are None."""
    return frame


event_frame = _compile()


def end_frame(end: Mapping[str, Any]) -> bytes:
    """The end marker (``end``: a ``StreamEnd``), then ``[DONE]``."""
    return f"event: {END_EVENT}\ndata: {json.dumps(end)}\n\ndata: {DONE}\n\n".encode()


# -- reading ---------------------------------------------------------------------------------


class Message(NamedTuple):
    """One dispatched Server-Sent Event."""

    event: str  # "message" unless the server named its type
    data: str  # its data lines, joined by "\n"
    id: str  # the last event id the stream has set ("" before any)

    @property
    def is_end(self) -> bool:
        return self.event == END_EVENT

    @property
    def is_done(self) -> bool:
        return self.data == DONE

    def json(self) -> Any:
        return json.loads(self.data)


class Parser:
    """The WHATWG event-stream rules, fed bytes as they arrive (cut anywhere).

    Lines end in CRLF, LF or CR; a line without a colon is a field with an empty value; one space
    after the colon is dropped; comments and unknown fields are ignored; an event is dispatched
    at a blank line, and only if it has data, so an event cut short by a dropped connection is
    never seen.
    """

    def __init__(self) -> None:
        self._partial: list[bytes] = []  # the pieces of an unfinished line
        self._after_cr = False  # a line ended in CR: an LF starting the next chunk is its end
        self._first = True  # a UTF-8 byte order mark may start the stream
        self._event = b""
        self._data: list[bytes] = []
        self._id = ""

    def feed(self, chunk: bytes) -> list[Message]:
        # Fields stay bytes until an event is dispatched: this runs for every line of a flood.
        if self._after_cr:
            self._after_cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        if b"\n" not in chunk and b"\r" not in chunk:  # part of a long line: no rescanning it
            if chunk:
                self._partial.append(chunk)
            return []
        if self._partial:
            chunk = b"".join([*self._partial, chunk])
            self._partial = []
        lines = chunk.splitlines(keepends=True)
        if not lines[-1].endswith((b"\n", b"\r")):
            self._partial.append(lines.pop())
        elif lines[-1].endswith(b"\r"):
            self._after_cr = True
        if self._first:
            self._first = False
            lines[0] = lines[0].removeprefix(b"\xef\xbb\xbf")
        messages: list[Message] = []
        for raw in lines:
            line = raw.rstrip(b"\r\n")
            if not line:
                if self._data:
                    messages.append(self._dispatch())
                self._event = b""
                continue
            name, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"event":
                self._event = value
            elif name == b"id" and b"\0" not in value:
                self._id = value.decode("utf-8", errors="replace")
            # Anything else is a comment (no name) or a field we do not use.
        return messages

    def _dispatch(self) -> Message:
        data = b"\n".join(self._data).decode("utf-8", errors="replace")
        self._data = []
        event = self._event.decode("utf-8", errors="replace") if self._event else "message"
        return Message(event, data, self._id)


async def messages(chunks: AsyncIterable[bytes]) -> AsyncIterator[Message]:
    """The messages of a stream read as ``chunks``, e.g. aiohttp's ``content.iter_any()``: as
    they arrive rather than a line at a time (a line can be hundreds of KB, and an await costs
    as much as parsing a few lines)."""
    parser = Parser()
    async for chunk in chunks:
        for message in parser.feed(chunk):
            yield message
