"""An engine's output bytes → ``OutputChunk`` runs of whole lines: the one splitter every
engine uses, so lines are cut, decoded and bounded the same whichever engine ran the step.

The work per line is done by ``bytes`` methods in C (one ``rfind`` per read, not a split per
line): this path carries about a million lines a second in a burst.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from . import OutputChunk, Stream

MAX_LINE_BYTES = 64 * 1024  # a longer run without a newline is cut, so memory stays bounded


class LineSplitter:
    """Runs of stream bytes → chunks of whole lines; a partial line waits for its stream's rest."""

    def __init__(self) -> None:
        self._partial: dict[Stream, bytes] = {"stdout": b"", "stderr": b""}

    def feed(self, runs: Iterable[tuple[Stream, bytes]], now: float) -> list[OutputChunk]:
        chunks = []
        for stream, data in runs:
            buf = self._partial[stream] + data if self._partial[stream] else data
            cut = buf.rfind(b"\n")
            pieces = [buf[:cut]] if cut >= 0 else []
            rest = buf[cut + 1 :]
            while len(rest) > MAX_LINE_BYTES:
                pieces.append(rest[:MAX_LINE_BYTES])
                rest = rest[MAX_LINE_BYTES:]
            self._partial[stream] = rest
            if pieces:
                chunks.append(OutputChunk(stream, _decode(b"\n".join(pieces)), now))
        return chunks

    def finish(self) -> list[OutputChunk]:
        """Whatever partial lines are left when the stream ends: nothing written is lost."""
        now = time.time()
        chunks = [OutputChunk(s, _decode(b), now) for s, b in self._partial.items() if b]
        self._partial = {"stdout": b"", "stderr": b""}
        return chunks


def _decode(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n").removesuffix("\r")
    return text


def note_ends(ends: dict[Stream, tuple[str, str]], chunks: Iterable[OutputChunk]) -> None:
    """Bring ``ends`` (the first and last line had of each stream) up to ``chunks`` too."""
    for chunk in chunks:
        first = ends[chunk.stream][0] if chunk.stream in ends else chunk.text.split("\n", 1)[0]
        ends[chunk.stream] = (first, chunk.text.rsplit("\n", 1)[-1])
