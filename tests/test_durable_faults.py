"""The durable tier while its database fails for a moment, on real servers.

The database is made unavailable as it happens in production: a SQLite file
locked by another writer (a migration, a backup), or a PostgreSQL server killed.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
import webapp2
import webtest
from conftest import Handler
from test_durable import app_with, rows, session_row, sid_of

from webapp2_sessions.sql import Database, RollBack, SessionGone, StoredSession, sessions_table

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
    return app_with(
        [("/", Handler), ("/required", Required)], memcached, engine, dead_retry=DEAD_RETRY
    )


def with_a_secret(app: webapp2.WSGIApplication) -> tuple[webtest.TestApp, str, str]:
    """A visitor who stored "secret": their browser, a copy of their cookie, their id."""
    browser = webtest.TestApp(app)
    browser.get("/", {"set": "secret", "value": '"s"'})
    return browser, browser.cookies["sid"], sid_of(browser)


def secret_seen_with(cookie: str, app: webapp2.WSGIApplication) -> Any:
    """What a visitor presenting ``cookie`` (a stolen copy, say) reads as "secret"."""
    thief = webtest.TestApp(app)
    thief.set_cookie("sid", cookie)
    return thief.get("/", {"get": "secret"}).json["secret"]


def test_a_logout_while_the_database_is_down_never_comes_back_and_its_rows_go_later(
    memcached, outage
):
    engine, down = outage
    app = build(memcached, engine)
    browser, stolen, sid = with_a_secret(app)
    with down():
        browser.get("/", {"destroy": "1"})
    assert session_row(engine, sid) is not None  # the database could not delete them yet
    time.sleep(DEAD_RETRY * 1.5)  # the database is tried again from here on
    memcached.raw(b"flush_all\r\n")  # the dead mark is gone with everything else
    assert secret_seen_with(stolen, app) is None
    # The next request that uses the database deletes the rows first.
    webtest.TestApp(app).get("/", {"set": "other", "value": "1"})
    assert session_row(engine, sid) is None and rows(engine, sid) == {}
    memcached.raw(b"flush_all\r\n")
    assert secret_seen_with(stolen, app) is None


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
    from webapp2_sessions import SessionUnavailableError, sql, sql_owed

    monkeypatch.setattr(sql_owed, "MAX_OWED", 2)
    database = sql.Database(sqlite_url, dead_retry=3600)
    database._mark_down(sa.exc.OperationalError("stopped", {}, Exception()))
    for sid in ("a" * 32, "b" * 32, "c" * 32):
        with pytest.raises(SessionUnavailableError):
            database.delete(sid)
    assert [database.owes(s * 32) for s in "abc"] == [False, True, True]
    assert "1 owed deletion(s) dropped" in caplog.text
    database.close()


def build_impatient(memcached: Any, engine: sa.engine.Engine) -> webapp2.WSGIApplication:
    """``build``, with memcached timeouts short enough to stall it in a test."""
    settings = {"dead_retry": DEAD_RETRY, "timeout": 0.3, "connect_timeout": 0.3}
    return app_with([("/", Handler)], memcached, engine, **settings)


def test_a_logout_while_memcached_and_the_database_both_fail_holds_after_the_rows_go(
    memcached, outage
):
    engine, down = outage
    app = build_impatient(memcached, engine)
    browser, stolen, sid = with_a_secret(app)
    with memcached.paused(), down():
        browser.get("/", {"destroy": "1"})
    time.sleep(DEAD_RETRY * 3)  # both are tried again from here on
    assert secret_seen_with(stolen, app) is None
    webtest.TestApp(app).get("/", {"set": "other", "value": "1"})  # settles what is owed
    assert session_row(engine, sid) is None
    # No longer owed: what memcached holds for the id must read as ended by itself.
    assert secret_seen_with(stolen, app) is None


def test_a_copy_another_process_refilled_while_a_deletion_was_owed_ends_with_the_rows(
    memcached, outage
):
    engine, down = outage
    here, there = build(memcached, engine), build(memcached, engine)  # two processes
    browser, stolen, sid = with_a_secret(here)
    with down():
        browser.get("/", {"destroy": "1"})
    time.sleep(DEAD_RETRY * 1.5)
    memcached.raw(b"flush_all\r\n")  # the dead mark is gone with everything else
    # The window the README states: another process reads the rows back ...
    assert secret_seen_with(stolen, there) == "s"
    # ... but not this one, which owes the deletion, though memcached now has a live record.
    assert secret_seen_with(stolen, here) is None
    webtest.TestApp(here).get("/", {"set": "other", "value": "1"})  # settles
    assert session_row(engine, sid) is None
    assert secret_seen_with(stolen, here) is None
    assert secret_seen_with(stolen, there) is None


def test_an_owed_deletion_makes_the_database_read_the_session_as_gone_though_its_rows_remain(
    outage,
):
    from webapp2_sessions import SessionUnavailableError
    from webapp2_sessions.sql import Database, StoredSession

    engine, down = outage
    database = Database(engine, dead_retry=DEAD_RETRY)
    sid, now = "d" * 32, time.time()
    with database.create(sid, StoredSession(now, now + 600, None, None)) as writer:
        writer.set({"user": b'"ann"'}, 0)
    with down(), pytest.raises(SessionUnavailableError):
        database.delete(sid)
    time.sleep(DEAD_RETRY * 1.5)
    assert session_row(engine, sid) is not None  # only a write settles it
    assert database.load(sid, time.time()) is None
    assert database.load_variables(sid, ["user"]) == {}


def test_a_deletion_owed_never_makes_reads_wait_for_the_lock_it_needs(memcached, tmp_path):
    path = tmp_path / "sessions.db"
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.3})
    app = build(memcached, engine)
    ann, bob = webtest.TestApp(app), webtest.TestApp(app)
    ann.get("/", {"set": "user", "value": '"ann"'})
    bob.get("/", {"set": "user", "value": '"bob"'})
    a = sid_of(ann)
    writer = sqlite3.connect(path)  # another process's long write (a batch job, a migration)
    writer.execute("BEGIN IMMEDIATE")
    try:
        # Reads beside that writer work: an evicted variable is read back.
        assert memcached.raw(f"delete {a}-user\r\n".encode()) == b"DELETED\r\n"
        assert ann.get("/required").json == {"user": "ann", "available": True}
        bob.get("/", {"destroy": "1"})  # cannot take the lock: the deletion is owed
        time.sleep(DEAD_RETRY * 1.5)
        assert memcached.raw(f"delete {a}-user\r\n".encode()) == b"DELETED\r\n"
        assert ann.get("/required").json == {"user": "ann", "available": True}
    finally:
        writer.rollback()
        writer.close()
        engine.dispose()


def stored_with_a(database: Any, sid: str, now: float) -> None:
    """Session ``sid`` in the database alone, holding a = 1 for an hour from ``now``."""
    with database.create(sid, StoredSession(now, now + 3600, None, None)) as writer:
        writer.set({"a": b"1"}, 0)


def checkouts(engine: sa.engine.Engine) -> list[Any]:
    """The driver connection of each checkout from ``engine``'s pool, from now on."""
    used: list[Any] = []
    sa.event.listen(engine, "checkout", lambda dbapi_conn, *args: used.append(dbapi_conn))
    return used


class Interrupted(Exception):
    """What a per-request time limit raises from its signal handler."""


@contextmanager
def one_pooled_connection(
    pg_url: str, reset: str | None
) -> Iterator[tuple[sa.engine.Engine, sa.engine.Engine, list[Any]]]:
    """An engine with one pooled connection (one handed back is the next one
    used; ``reset``: its ``pool_reset_on_return``), another engine on the same
    database, and the driver connection of each checkout of the first."""
    engine = sa.create_engine(pg_url, pool_size=1, max_overflow=0, pool_reset_on_return=reset)
    other = sa.create_engine(pg_url)
    try:
        yield engine, other, checkouts(engine)
    finally:
        engine.dispose()
        other.dispose()


@contextmanager
def interrupted_in_a_second(other: sa.engine.Engine, sid: str) -> Iterator[None]:
    """Hold session ``sid``'s row in a transaction of ``other`` while the block
    runs, and interrupt the block (``Interrupted``, from SIGALRM) a second in:
    a statement of the block that needs the row is then waiting on the server."""

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with other.connect() as holder, holder.begin():
            locked = sa.select(sessions_table.c.id).where(sessions_table.c.id == sid)
            holder.execute(locked.with_for_update()).all()
            signal.setitimer(signal.ITIMER_REAL, 1.0)
            try:
                yield
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, previous)


# The pool's own rollback on return would also catch this one; without it
# (pool_reset_on_return=None, a setting some apps use), only the durable tier does.
@pytest.mark.parametrize("reset", ["rollback", None])
def test_an_interrupt_in_the_middle_of_a_write_statement_closes_that_database_connection(
    pg_url, reset
):
    with one_pooled_connection(pg_url, reset) as (engine, other, used):
        database = Database(engine)
        sid, now = "1" * 32, time.time()
        stored_with_a(database, sid, now)

        # The write's first statement waits for the row, and the server's reply.
        with (
            interrupted_in_a_second(other, sid),
            pytest.raises(Interrupted),
            database.update(sid, now + 7200) as writer,
        ):
            writer.set({"a": b"2"}, 0)
        interrupted = used[-1]
        assert interrupted.closed  # closed, not handed back to the pool
        with database.update(sid, now + 7200) as writer:
            writer.set({"a": b"3"}, 0)
        assert used[-1] is not interrupted
        assert rows(engine, sid) == {"a": b"3"}
        assert not database._down  # an interrupt is not an outage


# The same for the statements that run through SQLAlchemy (reads, logouts,
# purges): a rollback there would fail on the reply still due, and turn the
# interrupt into an outage of the whole database.
@pytest.mark.parametrize("reset", ["rollback", None])
def test_an_interrupt_in_the_middle_of_a_logout_statement_closes_that_connection_and_is_no_outage(
    pg_url, reset
):
    with one_pooled_connection(pg_url, reset) as (engine, other, used):
        database = Database(engine)
        sid, kept, now = "1" * 32, "2" * 32, time.time()
        stored_with_a(database, sid, now)
        stored_with_a(database, kept, now)

        # The logout's delete waits for the row; the interrupt comes out unchanged.
        with interrupted_in_a_second(other, sid), pytest.raises(Interrupted):
            database.delete(sid)
        interrupted = used[-1]
        assert interrupted.closed  # closed, not handed back to the pool
        assert not database._down  # an interrupt is not an outage
        assert not database.owes(sid)
        assert database.load(kept, time.time()) is not None
        assert used[-1] is not interrupted
        assert database.delete(sid)  # the logout, tried again, goes through
        assert rows(engine, sid) == {}


@pytest.mark.parametrize("reset", ["rollback", None])
def test_a_write_abandoned_between_statements_is_rolled_back_and_keeps_its_connection(
    engine, reset
):
    class Abandoned(RollBack):
        """What the tier raises when memcached shows a logout under way."""

    url = engine.url.render_as_string(hide_password=False)
    # One pooled connection, which the pool may be told not to reset on return.
    pooled = sa.create_engine(url, pool_size=1, max_overflow=0, pool_reset_on_return=reset)
    used = checkouts(pooled)
    try:
        database = Database(pooled)
        sid, other, now = "1" * 32, "2" * 32, time.time()
        for session_id in (sid, other):
            stored_with_a(database, session_id, now)
        with pytest.raises(Abandoned), database.update(sid, now + 7200) as writer:
            writer.set({"a": b"2"}, 0)
            raise Abandoned
        # A logged-out session: no row, so the write is abandoned after its first statement.
        with pytest.raises(SessionGone), database.update("0" * 32, now + 3600) as writer:
            writer.set({"a": b"2"}, 0)
        with database.update(other, now + 7200) as writer:  # commits on that connection
            writer.set({"a": b"3"}, 0)
        assert len(set(map(id, used))) == 1  # one connection all along, not reopened
        assert rows(engine, sid) == {"a": b"1"}  # nothing of the abandoned write
        assert rows(engine, other) == {"a": b"3"} and rows(engine, "0" * 32) == {}
    finally:
        pooled.dispose()


def test_a_write_on_a_driver_connection_in_autocommit_is_still_one_transaction(tmp_path):
    # SQLAlchemy's recipe for pysqlite: the driver in autocommit, BEGIN in an event.
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'sessions.db'}")

    @sa.event.listens_for(engine, "connect")
    def _autocommit(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")

    try:
        database = Database(engine)
        sid, now = "1" * 32, time.time()
        stored_with_a(database, sid, now)
        with pytest.raises(RollBack), database.update(sid, now + 7200) as writer:
            writer.set({"a": b"2", "b": b"2"}, 0)
            raise RollBack
        assert rows(engine, sid) == {"a": b"1"}
        assert session_row(engine, sid).expires == now + 3600
    finally:
        engine.dispose()


def test_an_interrupt_between_a_writes_memcached_batch_and_its_commit_leaves_memcached_behind(
    memcached, engine, monkeypatch
):
    from test_durable import build

    from webapp2_sessions.lifecycle import Lifecycle

    app = build(memcached, engine)
    browser = webtest.TestApp(app)
    browser.get("/", {"set": "x", "value": "1"})
    sid = sid_of(browser)
    real = Lifecycle.cache
    armed = [True]

    def cache(self: Lifecycle, *args: Any, **kwargs: Any) -> Any:
        results = real(self, *args, **kwargs)
        if armed:
            armed.clear()
            raise Interrupted  # memcached ran the batch; the database has not committed
        return results

    monkeypatch.setattr(Lifecycle, "cache", cache)
    browser.get("/", {"set": "x", "value": "2"}, status=500)
    monkeypatch.setattr(Lifecycle, "cache", real)
    assert rows(engine, sid) == {"x": b"1"}  # the write's transaction was not committed
    assert browser.get("/", {"get": "x"}).json == {"x": 1}  # nor is it served from memcached
    assert memcached.mg(f"{sid}-x")[0] == b"1"  # read back from the database
