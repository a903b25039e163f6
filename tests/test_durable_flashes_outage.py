"""Flashes read back from a database that fails: an outage of the session
(strict mode raises), never an empty list passed off as the truth."""

from __future__ import annotations

import json
from typing import Any

import webapp2
import webtest
from conftest import Handler, capture_errors
from test_durable import app_with, sid_of
from test_durable_faults import DEAD_RETRY, outage  # noqa: F401  (the fixture)


class Flashes(Handler):
    def get(self) -> None:
        if "flash" in self.request.GET:
            self.add_flash("a")
            return
        shown = self.get_flashes()
        self.response.content_type = "application/json"
        self.response.write(json.dumps({"shown": shown, "available": self.session.available}))


def build(memcached: Any, engine: Any, **settings: Any) -> webapp2.WSGIApplication:
    return app_with([("/", Flashes)], memcached, engine, dead_retry=DEAD_RETRY, **settings)


def test_flashes_the_database_cannot_read_back_make_the_session_unavailable(memcached, outage):  # noqa: F811
    engine, down = outage
    app = build(memcached, engine, strict=True)
    errors = capture_errors(app, 503)
    browser = webtest.TestApp(app)
    browser.get("/", {"flash": "1"})
    sid = sid_of(browser)
    memcached.raw(f"delete {sid}-!flashes\r\n".encode())  # expired / evicted
    with down():
        response = browser.get("/", expect_errors=True)
    # strict: SessionUnavailableError (here answered 503); at the least, not "available"
    assert response.status_int == 503 or response.json["available"] is False, (
        response.status_int,
        response.text,
        errors,
    )
