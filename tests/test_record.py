"""The record format: parsed, encoded and appended to, without any store."""

from __future__ import annotations

import dataclasses

import pytest

from webapp2_sessions.keys import new_session_id
from webapp2_sessions.record import (
    DEAD_LINE,
    FLAGS_RECORD,
    Record,
    index_lines,
    parse_or_none,
)
from webapp2_sessions.stores import Item


def stored(record: Record, *extra: bytes) -> Item:
    return Item(record.encode() + b"".join(extra), FLAGS_RECORD, 7)


def test_a_record_round_trips_through_its_encoding():
    record = Record(created=1700000000.5, names=frozenset({"cart", "user"}), flashes=True)
    parsed = Record.parse(stored(record))
    assert parsed.created == 1700000000.5
    assert parsed.names == parsed.listed_ever == {"cart", "user"}
    assert parsed.flashes and parsed.dead == 0


#: The fields listing() and changed() compute; every other one is carried over.
INDEX_FIELDS = {"names", "listed_ever", "flashes", "lines"}


def every_header_field_set() -> Record:
    """A record with every field away from its default."""
    values = {
        "created": 1700000000.5,
        "user_agent": "a" * 64,
        "remote_addr": "b" * 64,
        "dead": 1,
        "owner": "c" * 64,
        "expiry": 86400,
        "issued": 1700000100.25,
        "to": new_session_id(),
        "moving": ((new_session_id(), 1700000200.0),),
    }
    missing = {f.name for f in dataclasses.fields(Record)} - INDEX_FIELDS - values.keys()
    assert not missing, f"add {missing} here"
    return Record(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "copy",
    [
        lambda r: r.listing(frozenset({"cart"}), True),
        lambda r: r.changed(frozenset({"cart"}), frozenset(), False),
        Record.compacted,
    ],
    ids=["listing", "changed", "compacted"],
)
def test_a_records_copies_keep_every_header_field(copy):
    record = every_header_field_set()
    copied = copy(record)
    for field in dataclasses.fields(Record):
        if field.name not in INDEX_FIELDS:
            assert getattr(copied, field.name) == getattr(record, field.name), field.name


def test_the_last_index_line_for_a_name_wins_and_logout_marks_are_counted():
    record = Record(created=1.0, names=frozenset({"a"}))
    item = stored(record, index_lines({"b"}, {"a"}), index_lines({"a"}), DEAD_LINE + b"\n")
    parsed = Record.parse(item)
    assert parsed.names == {"a", "b"} and parsed.listed_ever == {"a", "b"}
    assert parsed.dead == 1
    assert Record.parse(Item(item.value + DEAD_LINE + b"\n", FLAGS_RECORD)).dead == 2


@pytest.mark.parametrize(
    "value",
    [b"", b"[]\n", b'{"v":1}\n', b'{"c":"x"}\n', b'{"c":1e999}\n', b'{"c":1}\n42\n', b"\xff"],
)
def test_anything_else_is_not_a_record(value):
    assert parse_or_none(Item(value, FLAGS_RECORD)) is None
    assert parse_or_none(Item(b'{"v":1,"c":1}\n', 0)) is None  # foreign flags
    assert parse_or_none(None) is None
