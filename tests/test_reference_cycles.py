"""A request's session goes when the request ends, by reference counting alone.

A reference cycle among a request's objects (a session whose lifecycle holds
a bound method of the session, say) leaves the session and every value it
read for the cyclic garbage collector: memory held past the request, and
collector work on every request that follows.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
import webapp2
import webtest
from conftest import PATIENT, SECRET, Handler

from webapp2_sessions import SessionMiddleware, get_current_session


@pytest.fixture
def saved_garbage() -> Iterator[list[Any]]:
    """``gc.garbage`` filled by the next ``gc.collect()``; the collector is off meanwhile."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()


def ours(garbage: list[Any]) -> list[str]:
    """The types of the package's objects among ``garbage``."""
    return sorted(
        {
            type(o).__qualname__
            for o in garbage
            if type(o).__module__.startswith("webapp2_sessions")
        }
    )


def browser(memcached: Any, **settings: Any) -> webtest.TestApp:
    config = {
        "memcache_servers": [memcached.address],
        "cookie_name": "sid",
        "secret_key": SECRET,
        **settings,
    }
    app = webapp2.WSGIApplication(
        [("/", Handler)], config={"webapp2_sessions": {**config, **PATIENT}}
    )
    return webtest.TestApp(app)


@pytest.mark.parametrize(
    "query",
    [
        {"get": ["a", "b"]},
        {"get": "a", "set": "a", "value": "2"},
        {"incr": "n"},
        {"regen": "1", "get": "a"},
        {"flash": "hi", "flashes": "1"},
        {"destroy": "1"},
    ],
    ids=["read", "read-write", "incr", "regenerate", "flashes", "logout"],
)
def test_a_request_leaves_no_session_object_for_the_cyclic_collector(
    memcached, saved_garbage, query
):
    visitor = browser(memcached)
    visitor.get("/", {"set": ["a", "b"], "value": ["1", "[2]"]})  # a stored session
    gc.collect()
    saved_garbage.clear()

    for _ in range(3):
        visitor.get("/", query)
    gc.collect()

    assert ours(saved_garbage) == []


def test_a_new_visitor_through_the_middleware_leaves_nothing_either(memcached, saved_garbage):
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        session = get_current_session()
        session["visits"] = session.get("visits", 0) + 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    config = {"memcache_servers": [memcached.address], "secret_key": SECRET, **PATIENT}
    visitor = webtest.TestApp(SessionMiddleware(app, config=config))
    visitor.get("/")
    gc.collect()
    saved_garbage.clear()

    for _ in range(3):
        visitor.get("/")
    gc.collect()

    assert ours(saved_garbage) == []


def test_writes_on_the_database_tier_leave_nothing_either(memcached, engine, saved_garbage):
    visitor = browser(memcached, database=engine)
    visitor.get("/", {"set": ["a", "b"], "value": ["1", "[2]"]})
    gc.collect()
    saved_garbage.clear()

    for query in ({"get": "a", "set": "a", "value": "2"}, {"incr": "n"}, {"get": ["a", "b"]}):
        visitor.get("/", query)
    gc.collect()

    assert ours(saved_garbage) == []
