"""An event's fields, declared once, and what is made from them.

The declaration is the ``Event`` dataclass (what a producer says: ``events.py``), the store's
``StoredEvent`` below (the job and the number it adds) and ``lines`` (worked out for clients).
Each field has its name, its type and its meaning there. From ``FIELDS`` come: the stored row's
columns and the migration that adds a missing one (``storage/_sqlite.py``, ``_eventrows.py``),
the stream's JSON (``sse.event_frame``) and the API's ``Event`` model (``api/wire.py``), whose
JSON schema is the OpenAPI document's. So a new field is one line in ``Event`` plus whatever
sets it; a test holds every derived list to ``FIELDS``.

Nothing here needs more than the standard library: the CLI reads streams without the service.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter
from typing import Any, Literal

from .events import Action, Event, about, line_count

Given = Literal["producer", "store", "reader"]
NO_DEFAULT: Any = dataclasses.MISSING  # a field whose rows stored before it cannot be filled in


@dataclass(frozen=True, slots=True)
class StoredEvent(Event):
    """An event as the store keeps it: numbered within its job's narration."""

    job_id: str = field(kw_only=True, metadata=about("the job whose narration it is"))
    seq: int = field(
        kw_only=True,
        metadata=about("its place in the job's narration: 1, 2, 3... without gaps; the SSE `id`"),
    )


def _lines(event: StoredEvent) -> int | None:
    return line_count(event.message) if event.action == Action.OUTPUT else None


@dataclass(frozen=True, slots=True)
class EventField:
    name: str
    type: Any  # of its value, None aside: str, int, float, a StrEnum or a Literal of strings
    meaning: str  # for people, with its unit: the API's description of it
    given_by: Given  # the producer (Event), the store (StoredEvent), or worked out for readers
    optional: bool  # may be None: the stream's JSON leaves it out, its column takes NULL
    # What rows stored before the field existed hold: its default (NULL for an optional field;
    # NO_DEFAULT: nothing, so the field cannot be added to a table that has rows).
    default: Any = field(default_factory=lambda: NO_DEFAULT)
    derive: Callable[[StoredEvent], Any] | None = None  # a reader's field: how it is worked out

    @property
    def kept(self) -> bool:
        """A column of the stored row (a reader's field is worked out from the others)."""
        return self.derive is None

    @property
    def words(self) -> bool:
        """Its values are words of ours (an enum's, a Literal's), never anything to escape."""
        return typing.get_origin(self.type) is Literal or (
            isinstance(self.type, type) and issubclass(self.type, StrEnum)
        )

    @property
    def base(self) -> type:
        """The plain type its values are stored and sent as: str, int or float."""
        if typing.get_origin(self.type) is Literal:
            return type(typing.get_args(self.type)[0])
        return str if issubclass(self.type, str) else typing.cast(type, self.type)


# Fields worked out from the others for readers; never stored.
_DERIVED = (
    EventField(
        "lines", int, "`output` events only: how many lines `message` holds", "reader", True,
        derive=_lines,
    ),
)  # fmt: skip

# The order clients have always seen the JSON's keys in; fields added later follow, in the
# order they are declared.
_WIRE_ORDER = ("seq", "ts", "job_id", "action", "level", "message", "stream", "lines")


def _declared() -> list[EventField]:
    hints = typing.get_type_hints(StoredEvent)
    produced = {f.name for f in dataclasses.fields(Event)}
    declared = []
    for f in dataclasses.fields(StoredEvent):
        hint = hints[f.name]
        args = typing.get_args(hint)
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and (
            type(None) in args
        )
        if optional:
            (hint,) = [arg for arg in args if arg is not type(None)]
        declared.append(
            EventField(
                f.name,
                hint,
                f.metadata["meaning"],
                "producer" if f.name in produced else "store",
                optional,
                None if optional else f.default,
            )
        )
    return declared


def _in_wire_order(fields: list[EventField]) -> tuple[EventField, ...]:
    known = {name: place for place, name in enumerate(_WIRE_ORDER)}
    return tuple(sorted(fields, key=lambda f: known.get(f.name, len(known))))


FIELDS: tuple[EventField, ...] = _in_wire_order([*_declared(), *_DERIVED])
KEPT: tuple[EventField, ...] = tuple(f for f in FIELDS if f.kept)

# StoredEvent's own order: a row selected in it is the dataclass's arguments.
COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(StoredEvent))
_POSITIONAL = sum(1 for f in dataclasses.fields(StoredEvent) if not f.kw_only)
_KEYWORDS = COLUMNS[_POSITIONAL:]
_produced = attrgetter(*(f.name for f in dataclasses.fields(Event)))
row_of: Callable[[StoredEvent], tuple[Any, ...]] = attrgetter(*COLUMNS)


def numbered(event: Event, job_id: str, seq: int) -> StoredEvent:
    return StoredEvent(*_produced(event), job_id=job_id, seq=seq)


def _reader(f: EventField) -> Callable[[Any], Any] | None:
    if isinstance(f.type, type) and issubclass(f.type, StrEnum):
        # A value this program does not know (written by a newer one) stays a plain string:
        # its narration is still shown, rather than failing to load.
        members = f.type._value2member_map_
        return lambda value: members.get(value, value)
    return None


_READERS = [_reader(next(k for k in KEPT if k.name == name)) for name in COLUMNS]


def from_row(row: tuple[Any, ...]) -> StoredEvent:
    """A stored row, its columns in ``COLUMNS`` order, as the event."""
    values = [
        value if read is None else read(value) for read, value in zip(_READERS, row, strict=True)
    ]
    keywords = dict(zip(_KEYWORDS, values[_POSITIONAL:], strict=True))
    return StoredEvent(*values[:_POSITIONAL], **keywords)
