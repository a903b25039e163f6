"""Variable names that try to smuggle memcached commands (CRLF, spaces, control bytes)
or to collide with other keys (past 250 bytes, or mimicking hashed and internal keys).

Every name round-trips, and maps to a distinct, valid key under its session's own id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest
import webtest
from conftest import PATIENT
from hostile import Scene, assert_gone, assert_valid_key, keys_of, live_keys
from hypothesis import given, settings
from hypothesis import strategies as st
from memcached import MemcachedServer

from webapp2_sessions import MemcacheStore, Session, SessionConfig

HOSTILE_NAMES = [
    pytest.param("a\r\nflush_all", id="crlf-flush_all"),
    pytest.param("x 0 0 1\r\nZ\r\nset canary 0 0 4\r\nEVIL", id="crlf-set-canary"),
    pytest.param("v\r\nmg canary v\r\nmd canary", id="crlf-meta-commands"),
    pytest.param("n" * 1000, id="1000-characters"),
    pytest.param("\u540d\u524d", id="cjk"),
    pytest.param("caf\u00e9 \u2603", id="accents-and-space"),
    pytest.param("\x00\x01\x7f", id="control-characters"),
    pytest.param(" ", id="single-space"),
    pytest.param("~" + hashlib.sha256(b"x").hexdigest(), id="looks-hashed"),
    pytest.param("!flashes", id="looks-internal"),
    pytest.param("../../etc/passwd", id="path"),
    pytest.param("%0d%0aflush_all", id="percent-encoded"),
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_variable_name_round_trips_and_maps_to_a_valid_key(memcached, name):
    scene = Scene(memcached)
    browser = webtest.TestApp(scene.app)
    browser.get("/", {"set": name, "value": json.dumps(name)}, status=200)
    sid = scene.track(browser)
    assert browser.get("/", {"get": name}, status=200).json == {name: name}
    own = keys_of(memcached, sid)
    assert len(own) == 2  # the record and the variable
    for key in own:
        assert_valid_key(key)
    scene.assert_intact()
    browser.get("/", {"destroy": "1"}, status=200)
    assert_gone(memcached, sid, [name])
    scene.assert_intact()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param("p" * 300 + "a", "p" * 300 + "b", id="ascii"),
        pytest.param("\u00e9" * 200 + "a", "\u00e9" * 200 + "b", id="two-byte-characters"),
        pytest.param("k" * 249 + "\r", "k" * 249 + "\n", id="control-after-249"),
    ],
)
def test_names_that_differ_only_after_the_250th_byte_do_not_collide(memcached, first, second):
    scene = Scene(memcached)
    browser = webtest.TestApp(scene.app)
    browser.get("/", {"set": [first, second], "value": ['"one"', '"two"']}, status=200)
    sid = scene.track(browser)
    assert browser.get("/", {"get": [first, second]}).json == {first: "one", second: "two"}
    assert len(keys_of(memcached, sid)) == 3
    scene.assert_intact()


def test_names_that_mimic_hashed_or_internal_keys_do_not_collide(memcached):
    long_name = "q" * 300
    mimic = "~" + hashlib.sha256(long_name.encode()).hexdigest()
    scene = Scene(memcached)
    browser = webtest.TestApp(scene.app)
    browser.get(
        "/",
        {"set": [long_name, mimic, "!flashes"], "value": ["1", "2", "3"], "flash": "hi"},
        status=200,
    )
    body = browser.get("/", {"get": [long_name, mimic, "!flashes"], "flashes": "1"}).json
    assert body == {long_name: 1, mimic: 2, "!flashes": 3, "flashes": [["hi", "info"]]}


# --------------------------------------------------------------------------- properties


@pytest.fixture(scope="module")
def shared_store(shared_server: MemcachedServer) -> Iterator[MemcacheStore]:
    store = MemcacheStore([shared_server.address], **PATIENT)
    try:
        yield store
    finally:
        store.close()


@settings(max_examples=150, deadline=None)
@given(
    names=st.lists(st.text(min_size=1, max_size=300), min_size=1, max_size=4, unique=True),
    prefix=st.sampled_from(["", "app:", "p" * 120]),
)
def test_arbitrary_variable_names_round_trip_to_distinct_valid_keys(
    shared_server, shared_store, names, prefix
):
    config = SessionConfig.from_mapping(
        {"memcache_servers": [shared_server.address], "key_prefix": prefix}
    )
    session = Session(config, shared_store, None)
    for index, name in enumerate(names):
        session[name] = [index, name]
    session.save()
    sid = session.session_id
    again = Session(config, shared_store, sid)
    for index, name in enumerate(names):
        assert again[name] == [index, name]
    own = [key for key in live_keys(shared_server) if key.startswith((prefix + sid).encode())]
    assert len(own) == len(names) + 1
    for key in own:
        assert_valid_key(key)
