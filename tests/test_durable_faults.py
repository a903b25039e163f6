"""The durable tier while its database fails for a moment, on real servers.

The database is made unavailable as it happens in production: a SQLite file
locked by another writer (a migration, a backup), or a PostgreSQL server killed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
import webapp2
import webtest
from conftest import PATIENT, SECRET, Handler
from test_durable import rows, session_row, sid_of

DEAD_RETRY = 0.2

Outage = tuple[sa.engine.Engine, Callable[[], AbstractContextManager[None]]]


@pytest.fixture(params=["sqlite", "postgresql"])
def outage(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Outage]:
    """An engine, and a context manager during which its database fails."""
    if request.param == "sqlite":
        path = tmp_path / "sessions.db"
        engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.2})

        @contextmanager
        def down() -> Iterator[None]:
            lock = sqlite3.connect(path)
            lock.execute("BEGIN EXCLUSIVE")
            try:
                yield
            finally:
                lock.rollback()
                lock.close()

    else:
        postgres = request.getfixturevalue("postgres")
        url = request.getfixturevalue("pg_url")
        engine = sa.create_engine(url, connect_args={"connect_timeout": 2}, pool_pre_ping=True)

        @contextmanager
        def down() -> Iterator[None]:
            # The fixture's server commits without waiting for its WAL: a
            # checkpoint first, so the crash loses nothing committed.
            with postgres.connect() as conn:
                conn.execute("CHECKPOINT")
            postgres.kill()
            try:
                yield
            finally:
                postgres.ensure_running()

    try:
        yield engine, down
    finally:
        engine.dispose()


class Required(Handler):
    session_required = ("user",)

    def get(self) -> None:
        out = {"user": self.get_session_var("user"), "available": self.session.available}
        self.response.content_type = "application/json"
        self.response.write(json.dumps(out))


def build(memcached: Any, engine: sa.engine.Engine) -> webapp2.WSGIApplication:
    config = {
        "memcache_servers": [memcached.address],
        "cookie_name": "sid",
        "secret_key": SECRET,
        "database": engine,
        "sweep_percent": 0,
        "dead_retry": DEAD_RETRY,
        **PATIENT,
    }
    return webapp2.WSGIApplication(
        [("/", Handler), ("/required", Required)], config={"webapp2_sessions": config}
    )


def test_a_logout_while_the_database_is_down_never_comes_back_and_its_rows_go_later(
    memcached, outage
):
    engine, down = outage
    app = build(memcached, engine)
    browser = webtest.TestApp(app)
    browser.get("/", {"set": "secret", "value": '"s"'})
    stolen, sid = browser.cookies["sid"], sid_of(browser)
    with down():
        browser.get("/", {"destroy": "1"})
    assert session_row(engine, sid) is not None  # the database could not delete them yet
    time.sleep(DEAD_RETRY * 1.5)  # the database is tried again from here on
    memcached.raw(b"flush_all\r\n")  # the dead mark is gone with everything else
    thief = webtest.TestApp(app)
    thief.set_cookie("sid", stolen)
    assert thief.get("/", {"get": "secret"}).json == {"secret": None}
    # The next request that uses the database deletes the rows first.
    webtest.TestApp(app).get("/", {"set": "other", "value": "1"})
    assert session_row(engine, sid) is None and rows(engine, sid) == {}
    memcached.raw(b"flush_all\r\n")
    thief = webtest.TestApp(app)
    thief.set_cookie("sid", stolen)
    assert thief.get("/", {"get": "secret"}).json == {"secret": None}


def test_a_required_variable_evicted_while_the_database_is_down_keeps_the_session(
    memcached, outage
):
    engine, down = outage
    app = build(memcached, engine)
    browser = webtest.TestApp(app)
    browser.get("/", {"set": "user", "value": '"ann"'})
    sid = sid_of(browser)
    assert memcached.raw(f"delete {sid}-user\r\n".encode()) == b"DELETED\r\n"
    with down():
        during = browser.get("/required")
    # Unreadable this request, not lost: the session is kept, and says it is not available.
    assert during.json == {"user": None, "available": False}
    assert "sid=" not in during.headers.get("Set-Cookie", "")
    assert session_row(engine, sid) is not None
    time.sleep(DEAD_RETRY * 1.5)
    assert browser.get("/required").json == {"user": "ann", "available": True}
    assert sid_of(browser) == sid


def test_deletions_owed_are_bounded_and_the_oldest_is_dropped_with_a_log_line(
    sqlite_url, monkeypatch, caplog
):
    from webapp2_sessions import SessionUnavailableError, sql

    monkeypatch.setattr(sql, "MAX_OWED", 2)
    database = sql.Database(sqlite_url, dead_retry=3600)
    database._mark_down(sa.exc.OperationalError("stopped", {}, Exception()))
    for sid in ("a" * 32, "b" * 32, "c" * 32):
        with pytest.raises(SessionUnavailableError):
            database.delete(sid)
    assert [database.owes(s * 32) for s in "abc"] == [False, True, True]
    assert "1 owed deletion(s) dropped" in caplog.text
    database.close()
