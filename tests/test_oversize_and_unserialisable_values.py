"""Values memcached or the serializer cannot hold: over one megabyte, unserialisable,
circular or nested too deeply.

Each is refused when it is set, with an error that names the variable, and nothing of it
is stored.
"""

from __future__ import annotations

from typing import Any

import pytest
import webapp2
import webtest
from conftest import PATIENT, Handler, capture_errors
from hostile import NOTHING, Scene, counters, live_keys, spent
from memcached import MemcachedServer

from webapp2_sessions import MemcacheStore, Session, SessionConfig, SessionHandlerMixin

ONE_MB = 1024 * 1024


def new_session(server: MemcachedServer, **settings: Any) -> Session:
    config = SessionConfig.from_mapping(
        {"memcache_servers": [server.address], **PATIENT, **settings}
    )
    return Session(config, MemcacheStore([server.address], **PATIENT), None)


def reopen(session: Session) -> Session:
    return Session(session.config, session.store, session.session_id)


def nested(depth: int, kind: str) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


def test_a_value_over_one_megabyte_raises_value_error_naming_the_variable(memcached):
    memcached.set("canary", b"intact")
    session = new_session(memcached)
    session["small"] = 1
    before = counters(memcached)
    with pytest.raises(ValueError, match="'oversized'"):
        session["oversized"] = "x" * (ONE_MB + 1)
    assert spent(before, counters(memcached)) == NOTHING
    session.save()
    again = reopen(session)
    assert again.get("oversized") is None and again["small"] == 1
    assert memcached.mg("canary")[0] == b"intact"


def test_a_value_over_one_megabyte_set_in_a_request_stores_nothing(memcached):
    class Oversized(SessionHandlerMixin, webapp2.RequestHandler):
        def get(self) -> None:
            self.set_session_var("small", 1)
            self.set_session_var("oversized", "x" * (ONE_MB + 1))

    scene = Scene(memcached, routes=[("/", Handler), ("/big", Oversized)])
    seen = capture_errors(scene.app, 413)
    keys_before = live_keys(memcached)
    before = counters(memcached)
    webtest.TestApp(scene.app).get("/big", status=413)
    assert spent(before, counters(memcached)) == NOTHING
    assert live_keys(memcached) == keys_before
    assert isinstance(seen[0], ValueError) and "'oversized'" in str(seen[0])
    scene.assert_intact()


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(object(), id="object"),
        pytest.param({1, 2}, id="set"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="infinity"),
        pytest.param(lambda: None, id="function"),
        pytest.param({(1, 2): "tuple key"}, id="tuple-key"),
    ],
)
def test_an_unserialisable_value_raises_type_error_naming_the_variable(memcached, value):
    session = new_session(memcached)
    with pytest.raises(TypeError, match="'payload'"):
        session["payload"] = value
    assert not session.modified


def test_a_circular_value_raises_type_error_naming_the_variable(memcached):
    loop: list[Any] = []
    loop.append(loop)
    session = new_session(memcached)
    with pytest.raises(TypeError, match="'loop'"):
        session["loop"] = loop


@pytest.mark.parametrize("serializer", ["json", "pickle"])
@pytest.mark.parametrize("kind", ["list", "dict"])
def test_a_deeply_nested_value_raises_type_error(memcached, serializer, kind):
    session = new_session(memcached, serializer=serializer)
    with pytest.raises(TypeError, match="'deep'"):
        session["deep"] = nested(100_000, kind)
    assert not session.modified
