"""Counters and flashes on memcached and the embedded store: a counter stays a
counter when its session moves to a new id, under any serializer, and a
request that asks for its flashes twice gets them once."""

from __future__ import annotations

from webapp2_sessions import Session, SessionConfig


def test_a_counter_stays_a_counter_under_pickle_when_the_session_gets_a_new_id(store):
    config = SessionConfig.from_mapping({"serializer": "pickle"})
    s = Session(config, store, None)
    assert s.incr("n", 5) == 5
    sid = s.session_id
    # next request: reads the counter, then regenerates (login)
    s = Session(config, store, sid)
    assert s.get("n") == 5
    s.regenerate_id()
    new = s.session_id
    assert new != sid
    s.save()
    s = Session(config, store, new)
    assert s.get("n") == 5


def test_a_counter_incremented_then_moved_in_one_request_can_be_incremented_again(store):
    config = SessionConfig.from_mapping({"serializer": "pickle"})
    s = Session(config, store, None)
    s.incr("n", 5)
    s.regenerate_id()
    s.save()
    assert s.incr("n") == 6


def test_flashes_asked_for_twice_in_one_request_are_handed_out_once(store):
    config = SessionConfig.from_mapping({})
    s = Session(config, store, None)
    s.add_flash("hello")
    s.save()
    sid = s.session_id
    s = Session(config, store, sid)
    assert s.get_flashes() == [("hello", None)]
    assert s.get_flashes() == []
