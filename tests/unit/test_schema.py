"""One declaration of an event's fields: the stored row, the stream's JSON and the API's model
are all made from it, so none of them can name a field the others do not."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest

from orchestrator.api.openapi import document
from orchestrator.api.wire import Event as WireEvent
from orchestrator.narration.events import Action, Event, Level
from orchestrator.narration.schema import FIELDS, KEPT, NO_DEFAULT, EventField, numbered
from orchestrator.narration.sse import Parser, event_frame
from orchestrator.storage._sqlite import column_sql
from orchestrator.storage.store import Store

NAMES = [f.name for f in FIELDS]


def test_every_field_is_declared_once_with_its_meaning() -> None:
    assert len(set(NAMES)) == len(NAMES)
    assert all(f.meaning for f in FIELDS)
    produced = [f.name for f in dataclasses.fields(Event)]
    assert [f.name for f in FIELDS if f.given_by == "producer"] == sorted(produced, key=NAMES.index)
    assert {f.name for f in FIELDS if f.given_by == "store"} == {"job_id", "seq"}
    assert [f.name for f in FIELDS if not f.kept] == ["lines"]


async def test_the_stored_row_has_a_column_for_every_kept_field(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite3"
    await (await Store.open(db)).close()
    conn = sqlite3.connect(db)
    columns = {row[1]: row[2] for row in conn.execute("PRAGMA table_info(events)")}
    conn.close()
    assert set(columns) == {f.name for f in KEPT}
    assert all(columns[f.name] == column_sql(f).split()[0] for f in KEPT if f.optional)


def test_the_streams_json_has_the_fields_in_their_order() -> None:
    event = numbered(Event(Action.OUTPUT, "a\nb", Level.WARNING, "stderr", 2.5), "j", 3)
    [message] = Parser().feed(event_frame(event))
    data = json.loads(message.data)
    assert message.event == "message"
    assert list(data) == [name for name in NAMES if name in data]
    assert data == {
        "seq": 3,
        "ts": 2.5,
        "job_id": "j",
        "action": "output",
        "level": "warning",
        "message": "a\nb",
        "stream": "stderr",
        "lines": 2,
    }
    # Optional fields are left out, never null.
    bare = json.loads(
        Parser().feed(event_frame(numbered(Event(Action.QUEUED, "q"), "j", 4)))[0].data
    )
    assert list(bare) == [f.name for f in FIELDS if not f.optional]


def test_a_sample_is_its_own_event_type_with_every_figure() -> None:
    figures = dict(
        elapsed_s=5.0,
        cpu_seconds=9.5,
        cpu_percent=190.0,
        memory_bytes=1 << 30,
        peak_memory_bytes=2 << 30,
        memory_limit_bytes=4 << 30,
        pids=12,
        disk_bytes=1000,
        net_rx_bytes=7,
        net_tx_bytes=8,
    )
    sample = Event(Action.SAMPLE, "CPU 190%, 1.0 GiB", ts=1.0, **figures)
    [message] = Parser().feed(event_frame(numbered(sample, "j", 9)))
    data = json.loads(message.data)
    assert (message.event, message.id) == ("sample", "9")
    assert list(data) == [name for name in NAMES if name in data]
    assert {name: data[name] for name in figures} == figures


def test_the_api_model_and_its_document_are_the_fields() -> None:
    assert list(WireEvent.model_fields) == NAMES
    schema = document()["components"]["schemas"]["Event"]
    assert list(schema["properties"]) == NAMES
    assert schema["required"] == [f.name for f in FIELDS if not f.optional]
    assert {name: p["description"] for name, p in schema["properties"].items()} == {
        f.name: f.meaning for f in FIELDS
    }
    assert schema["properties"]["stream"]["enum"] == ["stdout", "stderr"]
    assert schema["properties"]["action"]["$ref"].endswith("/Action")


def test_a_field_added_later_gets_a_column_its_old_rows_can_hold() -> None:
    def field(optional: bool, default: object = NO_DEFAULT) -> EventField:
        return EventField("host", str, "where it ran", "producer", optional, default)

    assert column_sql(field(optional=True)) == "TEXT"
    assert column_sql(field(optional=False, default="here")) == "TEXT NOT NULL DEFAULT 'here'"
    with pytest.raises(TypeError, match="needs a default"):
        column_sql(field(optional=False))
