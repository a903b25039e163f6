"""``session_quick`` variables (memcached only) on the durable tier: a quick
write that finds the record gone from memcached (flush, restart, eviction)
keeps the session, which lives on in the database."""

from __future__ import annotations

import json
from typing import Any

import webapp2
import webtest
from conftest import Handler
from test_durable import app_with, rows, sid_of

FLUSH: list[Any] = []


class QuickFlush(Handler):
    session_quick = ("visits",)

    def get(self) -> None:
        user = self.get_session_var("user")  # the session is loaded from memcached
        for flush in FLUSH:
            flush()  # memcached restarts (or evicts the record) mid-request
        self.set_session_var("visits", 1)  # quick: memcached only
        self.response.content_type = "application/json"
        self.response.write(json.dumps({"user": user}))


def build(memcached: Any, engine: Any) -> webapp2.WSGIApplication:
    return app_with([("/", Handler), ("/quickflush", QuickFlush)], memcached, engine)


def test_a_quick_write_after_memcached_lost_the_record_keeps_the_session(memcached, engine):
    browser = webtest.TestApp(build(memcached, engine))
    browser.get("/", {"set": "user", "value": '"ann"'})
    sid = sid_of(browser)
    FLUSH[:] = [lambda: memcached.raw(b"flush_all\r\n")]
    try:
        response = browser.get("/quickflush")
    finally:
        FLUSH.clear()
    assert response.json == {"user": "ann"}
    assert rows(engine, sid) == {"user": b'"ann"'}  # the database still has the session
    cookie = response.headers.get("Set-Cookie", "")
    after = browser.get("/", {"get": "user"}).json
    assert (cookie, after) == ("", {"user": "ann"})


class DurableFlush(QuickFlush):
    session_quick = ()


def test_the_same_write_of_a_durable_variable_keeps_the_session_too(memcached, engine):
    app = build(memcached, engine)
    app.router.add(webapp2.Route("/durableflush", DurableFlush))
    browser = webtest.TestApp(app)
    browser.get("/", {"set": "user", "value": '"ann"'})
    FLUSH[:] = [lambda: memcached.raw(b"flush_all\r\n")]
    try:
        response = browser.get("/durableflush")
    finally:
        FLUSH.clear()
    assert "Set-Cookie" not in response.headers
    assert browser.get("/", {"get": "user"}).json == {"user": "ann"}
