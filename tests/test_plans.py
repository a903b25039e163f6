"""The batches planned on a session's record, and how their results are read, with no store."""

from __future__ import annotations

from webapp2_sessions.keys import KeyScheme, new_session_id
from webapp2_sessions.plans import (
    LoadPlan,
    WritePlan,
    deletion_ops,
    mark_batch,
    merged,
    undo_ops,
)
from webapp2_sessions.record import DEAD_LINE, FLAGS_RECORD, Record, index_lines
from webapp2_sessions.stores import Delete, Failed, Get, Item, Set

KEYS = KeyScheme("app:")
SID = new_session_id()
RECORD_KEY = f"app:{SID}"


def stored(record: Record, *extra: bytes) -> Item:
    return Item(record.encode() + b"".join(extra), FLAGS_RECORD, 7)


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


def test_an_unchanged_record_read_back_keeps_the_loaded_one_and_relists_nothing():
    item = stored(Record(created=1.0, names=frozenset({"a"})))
    loaded = Record.parse(item)
    write = plan(loaded, frozenset({"a"}))
    outcome = write.outcome([True, Item(item.value, FLAGS_RECORD, 8)])
    assert outcome.record is loaded and outcome.relist == b""
    assert not (outcome.ended or outcome.moved) and outcome.refused is None


def test_a_record_loaded_with_a_moving_mark_reports_the_write_moved_even_unchanged():
    mark = b'{"!":"moving","to":"%s","t":1.000}\n' % new_session_id().encode()
    item = stored(Record(created=1.0, names=frozenset({"a"})), mark)
    write = plan(Record.parse(item), frozenset({"a"}))
    outcome = write.outcome([True, Item(item.value, FLAGS_RECORD, 8)])
    assert outcome.moved and not outcome.ended


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
