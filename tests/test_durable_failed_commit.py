"""The durable tier when the database's commit fails after memcached ran the
write's batch: memcached forgets everything the batch touched, so both tiers
read as the database kept them (nothing of the write)."""

from __future__ import annotations

import sqlite3
import time

import sqlalchemy as sa
import webtest
from test_durable import build, rows, sid_of


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
