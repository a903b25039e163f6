"""The record format and the protocol planned on it, without any store."""

from __future__ import annotations

import dataclasses

import pytest

from webapp2_sessions.keys import KeyScheme, new_session_id
from webapp2_sessions.record import (
    DEAD_LINE,
    FLAGS_RECORD,
    LoadPlan,
    Record,
    WritePlan,
    deletion_ops,
    index_lines,
    mark_batch,
    merged,
    parse_or_none,
    undo_ops,
)
from webapp2_sessions.stores import Delete, Failed, Get, Item, Set

KEYS = KeyScheme("app:")
SID = new_session_id()
RECORD_KEY = f"app:{SID}"


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


def test_the_load_batch_reads_the_record_the_names_and_the_flashes_renewing_them():
    plan = LoadPlan(KEYS, SID, ["a", "b"], True, record_ttl=60, ttl=90)
    assert plan.ops == [
        Get(RECORD_KEY, 60),
        Get(f"{RECORD_KEY}-a", 90),
        Get(f"{RECORD_KEY}-b", 90),
        Get(f"{RECORD_KEY}-!flashes", 90),
    ]
    got = ["r", "a", "b", "f"]
    assert (got[LoadPlan.RECORD], got[plan.values], got[plan.flashes]) == ("r", ["a", "b"], "f")
    assert LoadPlan(KEYS, SID, [], False, 60, 90).flashes == -1


def plan(record: Record, written=frozenset(), deleted=frozenset(), cas: int = 5) -> WritePlan:
    body = [Set(KEYS.variable(SID, n), b"1") for n in sorted(written)]
    body += [Delete(KEYS.variable(SID, n)) for n in sorted(deleted)]
    return WritePlan(KEYS, SID, record, cas, body, written, deleted, False, 60)


def test_a_guarded_write_lists_new_names_and_reads_the_record_back_last():
    record = Record(created=1.0, names=frozenset({"a"}), listed_ever=frozenset({"a"}))
    write = plan(record, frozenset({"b"}), frozenset({"a"}))
    ops = write.ops
    assert ops[0] == Set(RECORD_KEY, index_lines({"b"}, {"a"}), mode="append")
    assert ops[-1] == Get(RECORD_KEY)
    after = stored(record, index_lines({"b"}, {"a"}))
    outcome = write.outcome([True, True, True, after])
    assert not outcome.ended and outcome.refused is None and outcome.relist == b""
    assert outcome.record.names == {"b"} and outcome.record.listed_ever == {"a", "b"}
    assert list(outcome.body) == [True, True]


def test_a_write_that_adds_no_name_appends_nothing():
    record = Record(created=1.0, names=frozenset({"a"}))
    write = plan(record, frozenset({"a"}))
    assert [type(op) for op in write.ops] == [Set, Get]
    assert write.lines == b""


def test_a_session_that_ended_during_the_write_is_reported_ended():
    record = Record(created=1.0, names=frozenset({"a"}))
    write = plan(record, frozenset({"b"}))
    for readback in (None, stored(record, DEAD_LINE + b"\n")):
        assert write.outcome([True, True, readback]).ended


def test_an_index_the_live_record_refused_is_reported_refused_not_ended():
    record = Record(created=1.0, names=frozenset({"a"}))
    write = plan(record, frozenset({"b"}))
    for answer in (False, Failed("SERVER_ERROR out of memory")):
        outcome = write.outcome([answer, True, stored(record)])
        assert not outcome.ended and isinstance(outcome.refused, Failed)


def test_a_name_another_request_unlisted_meanwhile_is_listed_again():
    record = Record(created=1.0, names=frozenset({"a"}))
    write = plan(record, frozenset({"a"}))
    # Another request deleted "a" after this one read the record.
    readback = stored(record, index_lines(removed={"a"}))
    outcome = write.outcome([True, readback])
    assert outcome.relist == index_lines({"a"}) and "a" in outcome.record.names


def test_a_long_index_is_compacted_only_if_nobody_appended_since_it_was_read():
    names = frozenset({"a"})
    record = Record(created=1.0, names=names, listed_ever=names, lines=100)
    write = plan(record, frozenset({"a"}), cas=41)
    compact = write.ops[write.compact]
    assert isinstance(compact, Set) and compact.cas == 41 and compact.value == record.encode()
    assert write.outcome([True, True, stored(record)]).record.lines == 1
    assert write.outcome([False, True, stored(record)]).record.lines == 100
    assert plan(record, cas=0).compact == -1  # no token: never compacted


def test_undo_takes_back_every_write_but_the_record():
    ops = [
        Set(RECORD_KEY, b"x", mode="append"),
        Set("k1", b"1"),
        Delete("k2"),
        Set("k1", b"2"),
        Get(RECORD_KEY),
    ]
    assert undo_ops(KEYS, SID, ops) == [Delete("k1")]


def test_a_logout_marks_then_deletes_every_name_ever_listed_and_the_flashes():
    batch = mark_batch(KEYS, SID)
    assert batch.ops == [Set(RECORD_KEY, DEAD_LINE + b"\n", mode="append"), Get(RECORD_KEY)]
    known = Record(created=1.0, names=frozenset({"a"}), listed_ever=frozenset({"a", "old"}))
    latest = Record(created=1.0, listed_ever=frozenset({"new"}), flashes=True)
    assert deletion_ops(KEYS, SID, merged(known, latest)) == [
        Delete(RECORD_KEY),
        Delete(f"{RECORD_KEY}-a"),
        Delete(f"{RECORD_KEY}-new"),
        Delete(f"{RECORD_KEY}-old"),
        Delete(f"{RECORD_KEY}-!flashes"),
    ]
