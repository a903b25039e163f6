"""A refill (``add``) racing a write that finds the record evicted: the write's
values stay in memcached, so the older value read from the database before
the write can never take their place."""

from __future__ import annotations

import threading
from typing import Any

import webapp2
import webtest
from conftest import Handler
from test_durable import app_with, rows, sid_of

from webapp2_sessions.sql import Database

EVICT: list[Any] = []


class EvictingWriter(Handler):
    def get(self) -> None:
        self.get_session_var("other")  # loaded while the record is there
        for evict in EVICT:
            evict()  # the record is evicted (its slab's LRU) before the write
        self.set_session_var("x", 2)
        self.response.write("ok")


def build(memcached: Any, engine: Any) -> webapp2.WSGIApplication:
    return app_with([("/", Handler), ("/write", EvictingWriter)], memcached, engine)


def test_a_refill_racing_a_write_that_found_the_record_evicted_never_serves_the_older_value(
    memcached, engine, monkeypatch
):
    app = build(memcached, engine)
    reader = webtest.TestApp(app)
    reader.get("/", {"set": ["x", "other"], "value": ["1", "0"]})
    sid = sid_of(reader)
    writer = webtest.TestApp(app)
    writer.set_cookie("sid", reader.cookies["sid"])
    memcached.raw(f"delete {sid}-x\r\n".encode())  # x evicted; its row has 1

    original = Database.load_variables
    raced: list[str] = []

    def load_variables(self: Database, session_id: str, names: Any) -> Any:
        found = original(self, session_id, names)  # the reader's snapshot: x = 1
        if not raced:
            raced.append("writer")
            EVICT[:] = [lambda: memcached.raw(f"delete {sid}\r\n".encode())]
            done = threading.Thread(target=writer.get, args=("/write",))
            done.start()  # the writer commits x = 2 and invalidates memcached
            done.join(60)
            EVICT.clear()
        return found

    monkeypatch.setattr(Database, "load_variables", load_variables)
    assert reader.get("/", {"get": "x"}).json == {"x": 1}  # read before the write: fine
    monkeypatch.setattr(Database, "load_variables", original)
    assert raced and rows(engine, sid)["x"] == b"2"
    seen = [reader.get("/", {"get": "x"}).json["x"] for _ in range(3)]
    assert seen == [2, 2, 2]
