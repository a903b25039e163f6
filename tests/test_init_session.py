"""init_session() as the original recipe meant it: the session exists at once."""

from __future__ import annotations

import sqlalchemy as sa
import webapp2
import webtest
from conftest import PATIENT

from webapp2_sessions import SessionHandlerMixin
from webapp2_sessions.sql import sessions_table


class Starts(SessionHandlerMixin, webapp2.RequestHandler):
    def get(self) -> None:
        if "init" in self.request.GET:
            self.init_session()
            self.init_session()  # idempotent
        else:
            self.get_session_var("anything")
        self.response.write(self.session_id)


def app_on(memcached) -> webtest.TestApp:
    config = {"memcache_servers": [memcached.address], "cookie_name": "sid", **PATIENT}
    return webtest.TestApp(
        webapp2.WSGIApplication([("/", Starts)], config={"webapp2_sessions": config})
    )


def test_an_explicit_init_session_stores_the_session_and_keeps_its_id(memcached):
    browser = app_on(memcached)
    first = browser.get("/", {"init": "1"})
    sid = first.text
    assert first.headers["Set-Cookie"].startswith(f"sid={sid}")
    assert memcached.mg(sid) is not None  # the record is written
    assert browser.get("/").text == sid
    again = browser.get("/", {"init": "1"})
    assert again.text == sid and "Set-Cookie" not in again.headers  # stored already


def test_implicit_use_stays_lazy_and_stores_nothing(memcached):
    browser = app_on(memcached)
    response = browser.get("/")
    assert "Set-Cookie" not in response.headers
    assert memcached.mg(response.text) is None
    assert browser.get("/").text != response.text  # provisional ids are not kept


def test_init_session_with_the_store_down_renders_and_stores_nothing(memcached):
    browser = app_on(memcached)
    memcached.stop()
    response = browser.get("/", {"init": "1"}, status=200)
    assert "Set-Cookie" not in response.headers


def test_an_explicit_init_session_on_the_database_tier_survives_a_flush(memcached, engine):
    config = {
        "memcache_servers": [memcached.address],
        "cookie_name": "sid",
        "database": engine,
        **PATIENT,
    }
    browser = webtest.TestApp(
        webapp2.WSGIApplication([("/", Starts)], config={"webapp2_sessions": config})
    )
    sid = browser.get("/", {"init": "1"}).text
    with engine.connect() as conn:
        assert conn.execute(
            sa.select(sessions_table.c.id).where(sessions_table.c.id == sid)
        ).first()

    memcached.raw(b"flush_all\r\n")

    again = browser.get("/")
    assert again.text == sid and "Set-Cookie" not in again.headers
