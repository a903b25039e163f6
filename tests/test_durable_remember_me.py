"""``set_expiry`` on the durable tier: a lifetime set or dropped in a request
that changes nothing else reaches the database too."""

from __future__ import annotations

import json
import time
from typing import Any

import webapp2
import webtest
from conftest import Handler
from test_durable import app_with, session_row, sid_of


class Remember(Handler):
    def get(self) -> None:
        q = self.request.GET
        if "expiry" in q:
            self.session.set_expiry(json.loads(q["expiry"]))
        if "set" in q:
            self.session[q["set"]] = 1
        self.response.content_type = "application/json"
        self.response.write(json.dumps({"expiry": self.session.expiry}))


def build(memcached: Any, engine: Any) -> webapp2.WSGIApplication:
    return app_with([("/", Remember)], memcached, engine)


def test_set_expiry_alone_is_kept_by_the_database(memcached, engine):
    browser = webtest.TestApp(build(memcached, engine))
    browser.get("/", {"set": "user"})  # a stored session, without a lifetime
    sid = sid_of(browser)
    assert browser.get("/", {"expiry": "2592000"}).json == {"expiry": 2592000}
    assert browser.get("/").json == {"expiry": 2592000}  # memcached's record has it
    row = session_row(engine, sid)
    # The row must outlive the idle window (a day) now, or a sweep purges it.
    outlives = row.expires > time.time() + 2592000 - 3600
    memcached.raw(b"flush_all\r\n")  # a restart: the record comes back from the row
    after = browser.get("/").json
    assert (row.expiry, outlives, after) == (2592000, True, {"expiry": 2592000})


def test_forgetting_the_lifetime_alone_is_kept_by_the_database(memcached, engine):
    browser = webtest.TestApp(build(memcached, engine))
    browser.get("/", {"set": "user", "expiry": "2592000"})  # remembered, written with a var
    sid = sid_of(browser)
    assert session_row(engine, sid).expiry == 2592000
    # "Forget me": the lifetime goes, alone.
    assert browser.get("/", {"expiry": "null"}).json == {"expiry": None}
    memcached.raw(b"flush_all\r\n")
    assert (session_row(engine, sid).expiry, browser.get("/").json) == (None, {"expiry": None})


class RemembersOnAsk(Handler):
    """The shared test handler (``?set``, ``?get``...), plus ``?remember=1``: a month."""

    def get(self) -> None:
        if "remember" in self.request.GET:
            self.set_session_expiry(30 * 24 * 3600)
        super().get()


def test_a_variable_read_back_from_the_database_keeps_the_remembered_lifetime(memcached, engine):
    month = 30 * 24 * 3600
    app = app_with([("/", RemembersOnAsk)], memcached, engine, ttl=600)
    browser = webtest.TestApp(app)
    browser.get("/", {"set": "user", "value": '"ann"', "remember": "1"})
    key = f"{sid_of(browser)}-user"
    assert memcached.mg(key)[1] > month - 60  # written with the lifetime
    memcached.raw(f"md {key}\r\n".encode())  # evicted
    assert browser.get("/", {"get": "user"}).json == {"user": "ann"}  # from the database
    assert memcached.mg(key)[1] > month - 60  # put back with the lifetime, not 600 s
