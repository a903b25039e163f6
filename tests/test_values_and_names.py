"""Values and variable names: what is stored, what is refused, and how."""

from __future__ import annotations

import json

import pytest
from conftest import PATIENT
from memcached import MemcachedServer

from webapp2_sessions import MemcacheStore, Session, SessionConfig


def new_session(server: MemcachedServer, **settings) -> Session:
    config = SessionConfig.from_mapping(
        {"memcache_servers": [server.address], **PATIENT, **settings}
    )
    return Session(config, MemcacheStore([server.address], **PATIENT), None)


def reopen(session: Session) -> Session:
    return Session(session.config, session.store, session.session_id)


@pytest.mark.parametrize(
    "value",
    ["text", "ünïcødé ✓", 0, -7, 2**60, 1.5, True, False, None, [1, "a", None], {"k": {"n": [1]}}],
)
def test_json_values_round_trip_through_memcached(memcached, value):
    session = new_session(memcached)
    session["v"] = value
    session.save()
    assert reopen(session)["v"] == value


def test_unserialisable_value_raises_type_error_naming_the_variable(memcached):
    session = new_session(memcached)
    with pytest.raises(TypeError, match="'when'"):
        session["when"] = object()
    with pytest.raises(TypeError, match="'nan'"):
        session["nan"] = float("nan")
    assert not session.modified


def test_refused_value_sends_nothing(memcached):
    before = memcached.stats()["cmd_set"]
    session = new_session(memcached)
    session["ok"] = 1
    with pytest.raises(TypeError):
        session["bad"] = {1, 2}
    session.save()
    assert memcached.stats()["cmd_set"] == before + 2  # the record and 'ok' only
    assert "bad" not in reopen(session)


def test_value_over_the_item_limit_raises_value_error_before_sending(memcached):
    before = memcached.stats()["cmd_set"]
    session = new_session(memcached)
    with pytest.raises(ValueError, match=r"'big'.*item_size_max=1048576"):
        session["big"] = "x" * (1024 * 1024 + 1)
    session.save()
    assert memcached.stats()["cmd_set"] == before


def test_largest_accepted_value_is_stored_by_a_default_memcached(memcached):
    session = new_session(memcached)
    room = session.config.item_size_max - 300
    session["big"] = "x" * (room - 2)  # two bytes of JSON quotes
    session.save()
    assert len(reopen(session)["big"]) == room - 2


def test_item_size_max_follows_a_server_started_with_a_larger_limit():
    server = MemcachedServer(item_size_max="2m").start()
    try:
        session = new_session(server, item_size_max=2 * 1024 * 1024)
        session["big"] = "y" * 1_500_000
        session.save()
        assert len(reopen(session)["big"]) == 1_500_000
    finally:
        server.stop()


def test_deeply_nested_value_is_refused_with_type_error(memcached):
    session = new_session(memcached)
    value: list = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(TypeError, match="'deep'"):
        session["deep"] = value


@pytest.mark.parametrize(
    "name",
    ["with space", "line\r\nbreak", "get x\r\nflush_all", "naïve", "名前", "n" * 1000, "~x", "-"],
)
def test_odd_names_round_trip_through_memcached(memcached, name):
    session = new_session(memcached)
    session[name] = name
    session.save()
    assert reopen(session)[name] == name


def test_names_differing_after_the_250th_byte_stay_apart(memcached):
    session = new_session(memcached)
    a, b = "p" * 300 + "a", "p" * 300 + "b"
    session[a], session[b] = 1, 2
    session.save()
    again = reopen(session)
    assert (again[a], again[b]) == (1, 2)


@pytest.mark.parametrize("name", [None, 5, b"bytes", ("t",)])
def test_non_str_names_raise_type_error(memcached, name):
    session = new_session(memcached)
    with pytest.raises(TypeError):
        session[name] = 1
    with pytest.raises(TypeError):
        session.get(name)


def test_empty_name_raises_value_error(memcached):
    session = new_session(memcached)
    with pytest.raises(ValueError):
        session[""] = 1


def test_foreign_value_under_a_session_key_reads_as_missing(memcached, caplog):
    import pickle

    session = new_session(memcached)
    session["v"] = "mine"
    session.save()
    memcached.set(f"{session.session_id}-v", pickle.dumps({"evil": 1}), flags=1)
    with caplog.at_level("WARNING", logger="webapp2_sessions"):
        assert reopen(session).get("v", "default") == "default"
    assert "not ours" in caplog.text
    assert session.session_id not in caplog.text


def test_pickle_serializer_is_opt_in_and_stores_python_objects(memcached):
    import datetime

    session = new_session(memcached, serializer="pickle")
    when = datetime.datetime(2020, 1, 2, 3, 4)
    session["when"] = when
    session.save()
    assert reopen(session)["when"] == when


def test_json_session_never_unpickles_a_pickle_written_with_pickle_flags(memcached):
    from webapp2_sessions.serializers import FLAGS_PICKLE

    session = new_session(memcached)
    session["v"] = 1
    session.save()
    payload = b"cos\nsystem\n(S'echo pwned'\ntR."
    memcached.set(f"{session.session_id}-v", payload, flags=FLAGS_PICKLE)
    assert reopen(session).get("v") is None


def test_tuples_come_back_as_lists(memcached):
    session = new_session(memcached)
    session["t"] = (1, 2)
    session.save()
    assert reopen(session)["t"] == [1, 2]
    assert json.loads(memcached.mg(f"{session.session_id}-t")[0]) == [1, 2]


def test_a_lone_surrogate_is_refused_at_set_time(memcached):
    session = new_session(memcached)
    with pytest.raises(TypeError, match=r"'s'.*surrogate"):
        session["s"] = "\ud800"


def test_flashes_survive_the_pickle_serializer(memcached):
    session = new_session(memcached, serializer="pickle")
    message = "0123456789"  # pickles with a newline byte in its length prefix
    session.add_flash(message, "info")
    session.add_flash({"obj": (1, 2)})
    session.save()
    assert reopen(session).get_flashes() == [(message, "info"), ({"obj": (1, 2)}, None)]
