"""The durable tier when the database's commit fails after memcached ran the
write's batch: memcached forgets everything the batch touched, so both tiers
read as the database kept them (nothing of the write), and the record stays
unless the batch changed its index, so quick variables survive."""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
import webtest
from test_durable import build, rows, sid_of

from webapp2_sessions.sql import Database


def test_a_commit_that_fails_after_the_memcached_batch_leaves_memcached_as_before(
    memcached, tmp_path
):
    path = tmp_path / "sessions.db"
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.3})
    try:
        browser = webtest.TestApp(build(memcached, engine, dead_retry=0.1))
        browser.get("/", {"set": ["a", "b"], "value": ["1", "2"]})
        sid = sid_of(browser)
        # A reader in a transaction (a backup, a report) holds SQLite's SHARED
        # lock: the write's statements run, its COMMIT finds the file locked.
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM webapp2_sessions").fetchall()
        try:
            browser.get("/", {"set": "a", "value": "3", "delete": "b"})
        finally:
            reader.execute("COMMIT")
            reader.close()
        time.sleep(0.3)  # past dead_retry: the database answers again
        in_db = rows(engine, sid)
        seen = browser.get("/", {"get": ["a", "b"]}).json
        assert (in_db, seen) == ({"a": b"1", "b": b"2"}, {"a": 1, "b": 2})
    finally:
        engine.dispose()


def test_a_failed_commit_keeps_the_quick_variables_of_the_session(memcached, engine, monkeypatch):
    app = build(memcached, engine)
    browser = webtest.TestApp(app)
    browser.get("/quick", {"set": ["visits", "user"], "value": ["5", '"ann"']})
    sid = sid_of(browser)
    assert rows(engine, sid) == {"user": b'"ann"'}  # visits is quick: memcached only

    original = Database.update
    fail = [True]

    @contextmanager
    def update(self: Database, session_id: str, expires: float) -> Any:
        with original(self, session_id, expires) as writer:
            yield writer
            if fail:
                fail.clear()  # the commit fails once (connection lost), as the driver says
                raise engine.dialect.loaded_dbapi.OperationalError("connection lost")

    monkeypatch.setattr(Database, "update", update)
    browser.get("/quick", {"set": "user", "value": '"bob"'})  # not saved: reported
    for value in app.registry.values():  # the database answers again
        db = getattr(getattr(value, "durable", None), "database", None)
        if db is not None:
            db._down = False
            db._down_until = 0.0
    got = browser.get("/quick", {"get": ["user", "visits"]}).json
    assert got == {"user": "ann", "visits": 5}
