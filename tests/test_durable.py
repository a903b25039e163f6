"""The durable tier: sessions in a database behind memcached, on real servers."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
import webapp2
import webtest
from conftest import PATIENT, SECRET, Handler
from sqlcount import counting_engine, tally_of

from webapp2_sessions import ConfigurationError, Session, SessionConfig, SessionHandlerMixin
from webapp2_sessions.durable import DurableTier
from webapp2_sessions.runtime import build_store
from webapp2_sessions.sql import Database, StoredSession, sessions_table, variables_table

HOUR = 3600


class Quick(Handler):
    session_quick = ("visits",)


def app_with(
    routes: list[Any], memcached: Any, database: Any, **settings: Any
) -> webapp2.WSGIApplication:
    """An app on ``routes`` with the settings every durable-tier test starts from."""
    config = {
        "memcache_servers": [memcached.address],
        "cookie_name": "sid",
        "secret_key": SECRET,
        "database": database,
        "sweep_percent": 0,
        **PATIENT,
        **settings,
    }
    return webapp2.WSGIApplication(routes, config={"webapp2_sessions": config})


def build(memcached: Any, database: Any, **settings: Any) -> webapp2.WSGIApplication:
    return app_with([("/", Handler), ("/quick", Quick)], memcached, database, **settings)


def sid_of(browser: webtest.TestApp) -> str:
    return browser.cookies["sid"].split(".")[0]


def rows(engine: sa.engine.Engine, sid: str) -> dict[str, bytes]:
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(variables_table.c.name, variables_table.c.value).where(
                variables_table.c.session_id == sid
            )
        )
        return {row.name: bytes(row.value) for row in found}


def session_row(engine: sa.engine.Engine, sid: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.select(sessions_table).where(sessions_table.c.id == sid)).first()


def test_a_flushed_memcached_logs_no_one_out_and_is_refilled_in_one_query(memcached, engine):
    statements = tally_of(engine)
    browser = webtest.TestApp(build(memcached, engine))
    browser.get("/", {"set": ["cart", "user"], "value": ["[1, 2]", '"ann"'], "flash": "hi"})
    sid = sid_of(browser)
    assert rows(engine, sid) == {"cart": b"[1,2]", "user": b'"ann"', "": rows(engine, sid)[""]}
    memcached.raw(b"flush_all\r\n")
    spent = statements.during(lambda: browser.get("/", {"get": ["cart", "user"]}))
    assert spent == 1  # the session and its variables in one query
    assert browser.cookies["sid"].split(".")[0] == sid
    assert memcached.mg(f"{sid}-cart") is not None  # put back into memcached
    assert statements.during(lambda: browser.get("/", {"get": ["cart", "user"]})) == 0
    body = browser.get("/", {"get": ["cart", "user"], "flashes": "1"}).json
    assert body == {"cart": [1, 2], "user": "ann", "flashes": [["hi", "info"]]}
    memcached.raw(b"flush_all\r\n")
    assert browser.get("/", {"flashes": "1"}).json == {"flashes": []}  # shown once


def test_a_returning_visitor_who_only_reads_costs_no_sql(memcached, engine):
    statements = tally_of(engine)
    browser = webtest.TestApp(build(memcached, engine))
    browser.get("/", {"set": "user", "value": '"ann"'})
    browser.get("/", {"get": "user"})  # the renewal of a read-only visitor, once
    for _ in range(5):
        assert statements.during(lambda: browser.get("/", {"get": "user"})) == 0


def test_a_write_is_one_transaction_in_the_database_before_memcached(memcached, engine):
    statements = tally_of(engine)
    browser = webtest.TestApp(build(memcached, engine))
    browser.get("/", {"set": "a", "value": "1"})
    sid = sid_of(browser)
    spent = statements.during(lambda: browser.get("/", {"set": "b", "value": "2", "delete": "a"}))
    assert spent <= 4  # renew the session row, delete, insert: one transaction
    assert rows(engine, sid) == {"b": b"2"}
    assert memcached.mg(f"{sid}-b")[0] == b"2" and memcached.mg(f"{sid}-a") is None


def test_writing_one_variable_is_one_upsert_beside_the_renewal_and_on_postgresql_one_statement(
    memcached, engine
):
    statements = tally_of(engine)
    browser = webtest.TestApp(build(memcached, engine))
    browser.get("/", {"set": "a", "value": "1"})
    sid = sid_of(browser)
    for value in ("2", "3"):
        spent = statements.during(lambda v=value: browser.get("/", {"set": "a", "value": v}))
        # SQLite: renew the session row, upsert the variable; PostgreSQL: both in one.
        assert spent == (1 if engine.dialect.name == "postgresql" else 2)
    assert rows(engine, sid) == {"a": b"3"}
    assert memcached.mg(f"{sid}-a")[0] == b"3"


def test_a_write_on_a_session_without_a_row_writes_nothing(engine):
    from webapp2_sessions.sql import Database, SessionGone

    database = Database(engine)
    for values in ({"a": b"1"}, {"a": b"1", "b": b"2"}):
        with pytest.raises(SessionGone), database.update("0" * 32, time.time() + 60) as writer:
            writer.set(values, 0)
    assert session_row(engine, "0" * 32) is None and rows(engine, "0" * 32) == {}


def test_a_dialect_without_an_upsert_replaces_a_variable_with_a_delete_and_an_insert(
    memcached, sqlite_url, monkeypatch
):
    from webapp2_sessions import sql_statements

    monkeypatch.setattr(sql_statements, "_upserts", lambda dialect: None)
    engine = counting_engine(sqlite_url)
    try:
        statements = tally_of(engine)
        browser = webtest.TestApp(build(memcached, engine))
        browser.get("/", {"set": ["a", "b"], "value": ["1", "2"]})
        sid = sid_of(browser)
        spent = statements.during(lambda: browser.get("/", {"set": "a", "value": "3"}))
        assert spent == 3  # renew the session row, delete, insert
        browser.get("/", {"incr": "n"})
        browser.get("/", {"incr": "n"})
        assert rows(engine, sid) == {"a": b"3", "b": b"2", "n": b"2"}
    finally:
        engine.dispose()


def test_a_restarted_memcached_costs_nothing_but_a_refill(memcached, engine):
    browser = webtest.TestApp(build(memcached, engine, timeout=5))
    browser.get("/", {"set": "user", "value": '"ann"'})
    memcached.restart()
    assert browser.get("/", {"get": "user"}).json == {"user": "ann"}


def test_a_stalled_node_serves_from_the_database_and_never_serves_older_values_after(
    memcached, engine
):
    # The stall costs one 2 s timeout; the requests after the resume have as long.
    browser = webtest.TestApp(build(memcached, engine, timeout=2, dead_retry=0.5))
    browser.get("/", {"set": "cart", "value": "[1]"})
    memcached.pause()
    try:
        assert browser.get("/", {"get": "cart"}).json == {"cart": [1]}  # from the database
        browser.get("/", {"set": "cart", "value": "[1, 2]"})  # kept by the database
        assert browser.get("/", {"get": "cart"}).json == {"cart": [1, 2]}
    finally:
        memcached.resume()
    time.sleep(0.6)
    # The node still holds [1]; the write's keys are invalidated before it serves.
    assert browser.get("/", {"get": "cart"}).json == {"cart": [1, 2]}
    assert browser.get("/", {"get": "cart"}).json == {"cart": [1, 2]}


def test_logout_deletes_the_rows_first_so_nothing_comes_back_after_a_flush(memcached, engine):
    app = build(memcached, engine)
    browser = webtest.TestApp(app)
    browser.get("/", {"set": "secret", "value": '"s"'})
    stolen, sid = browser.cookies["sid"], sid_of(browser)
    browser.get("/", {"destroy": "1"})
    assert session_row(engine, sid) is None and rows(engine, sid) == {}
    memcached.raw(b"flush_all\r\n")
    thief = webtest.TestApp(app)
    thief.set_cookie("sid", stolen)
    assert thief.get("/", {"get": "secret"}).json == {"secret": None}


def test_counters_are_exact_in_both_tiers_under_concurrent_requests(memcached, engine):
    app = build(memcached, engine, timeout=10)
    browser = webtest.TestApp(app)
    browser.get("/", {"set": "x", "value": "0"})
    cookie = browser.cookies["sid"]
    errors: list[BaseException] = []

    def bump() -> None:
        tab = webtest.TestApp(app)
        tab.set_cookie("sid", cookie)
        try:
            for _ in range(25):
                tab.get("/", {"incr": "n"})
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    sid = cookie.split(".")[0]
    assert rows(engine, sid)["n"] == b"150"
    assert memcached.mg(f"{sid}-n")[0] == b"150"
    memcached.raw(b"flush_all\r\n")
    assert browser.get("/", {"get": "n"}).json == {"n": 150}


def test_update_session_var_runs_once_on_the_databases_value(memcached, engine):
    calls: list[Any] = []

    class Updates(SessionHandlerMixin, webapp2.RequestHandler):
        def get(self) -> None:
            new = self.update_session_var(
                "items", lambda old: calls.append(old) or [*(old or []), len(calls)]
            )
            self.response.write(json.dumps(new))

    config = {
        "memcache_servers": [memcached.address],
        "cookie_name": "sid",
        "database": engine,
    }
    browser = webtest.TestApp(
        webapp2.WSGIApplication([("/", Updates)], config={"webapp2_sessions": config})
    )
    assert json.loads(browser.get("/").text) == [1]
    memcached.raw(b"flush_all\r\n")
    assert json.loads(browser.get("/").text) == [1, 2]
    assert calls == [None, [1]]


def test_quick_variables_stay_in_memcached_only(memcached, engine):
    browser = webtest.TestApp(build(memcached, engine))
    browser.get("/quick", {"set": ["visits", "user"], "value": ["7", '"ann"']})
    sid = sid_of(browser)
    assert rows(engine, sid) == {"user": b'"ann"'}
    memcached.raw(b"flush_all\r\n")
    assert browser.get("/quick", {"get": ["visits", "user"]}).json == {
        "visits": None,
        "user": "ann",
    }


def test_a_read_only_visitor_is_renewed_in_the_database_at_most_once_per_half_window(
    memcached, engine
):
    statements = tally_of(engine)
    browser = webtest.TestApp(build(memcached, engine, idle_timeout=2, ttl=2))
    browser.get("/", {"set": "user", "value": '"ann"'})
    sid = sid_of(browser)
    first = session_row(engine, sid).expires
    spent = 0
    deadline = time.time() + 3.5  # longer than the idle window
    while time.time() < deadline:
        spent += statements.during(lambda: browser.get("/", {"get": "user"}))
        time.sleep(0.25)
    assert session_row(engine, sid).expires > first  # renewed while only read
    assert 1 <= spent <= 4  # not once per request
    assert browser.get("/", {"get": "user"}).json == {"user": "ann"}


def test_requests_of_one_session_arriving_together_renew_it_once(engine):
    database = Database(engine)
    sid, now = "a" * 32, time.time()
    with database.create(sid, StoredSession(now, now + 60, None, None)):
        pass
    tier = DurableTier(database, SessionConfig.from_mapping({"database": engine}))
    touches: list[str] = []
    real_touch = database.touch

    def counting_touch(session_id: str, expires: float) -> None:
        touches.append(session_id)
        real_touch(session_id, expires)

    database.touch = counting_touch  # type: ignore[method-assign]
    # Every thread reaches the renewals' lock before any of them records its
    # renewal: each must check and record under it, or all would renew.
    lock = tier._touched._lock
    lock.acquire()
    threads = [threading.Thread(target=tier.touch_if_due, args=(sid, now, 3600)) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    lock.release()
    for thread in threads:
        thread.join(timeout=30)
    database.close()
    assert touches == [sid]


def test_a_writer_racing_a_logout_does_not_recreate_the_session(memcached, engine):
    app = build(memcached, engine)
    browser = webtest.TestApp(app)
    browser.get("/", {"set": "a", "value": "1"})
    cookie = browser.cookies["sid"]
    sid = cookie.split(".")[0]

    class LogoutThenWrite(Handler):
        def get(self) -> None:
            self.session.load("a")
            other = webtest.TestApp(app)
            other.set_cookie("sid", cookie)
            other.get("/", {"destroy": "1"})  # another tab logs out meanwhile
            self.set_session_var("b", 2)

    app.router.add(webapp2.Route("/late", LogoutThenWrite))
    browser.get("/late")
    assert session_row(engine, sid) is None and rows(engine, sid) == {}
    assert [k for k in memcached.keys() if sid in k] == []


def parts(memcached: Any, engine: Any, **settings: Any) -> tuple[SessionConfig, Any, Any]:
    """The settings, store and durable tier a Session is built from, without an app."""
    config = SessionConfig.from_mapping(
        {"memcache_servers": [memcached.address], "database": engine, "sweep_percent": 0}
        | settings
    )
    return config, build_store(config), DurableTier(Database(engine), config)


def stored_with_a(config: Any, store: Any, durable: Any, **kwargs: Any) -> str:
    """A new session storing a = 1, saved in both tiers; its id."""
    first = Session(config, store, None, durable=durable, **kwargs)
    first["a"] = 1
    first.save()
    return first.session_id


def test_a_write_racing_a_rotation_is_reported_not_saved_and_keeps_the_session(memcached, engine):
    config, store, durable = parts(memcached, engine, rotate_after=HOUR, **PATIENT)
    try:
        old = stored_with_a(config, store, durable)
        slow = Session(config, store, old, durable=durable)
        assert slow.get("a") == 1  # loaded before the rotation, writes after it
        later = Session(config, store, old, durable=durable, clock=lambda: time.time() + HOUR)
        assert later.get("a") == 1  # a request an hour on rotates the id
        new = later.session_id
        assert new != old

        slow["b"] = 2
        slow.save()

        assert slow.cookie_action is None and slow.session_id == old  # not logged out
        assert not slow.available  # the write reported not saved
        again = Session(config, store, old, durable=durable)
        assert (again.get("a"), again.get("b"), again.session_id) == (1, None, new)
        assert session_row(engine, old) is None and set(rows(engine, new)) == {"a"}
    finally:
        store.close()


def test_an_old_id_served_from_the_database_while_memcached_is_down_is_not_rotated(
    memcached, engine
):
    config, store, durable = parts(memcached, engine, rotate_after=HOUR, strict=True)
    try:
        sid = stored_with_a(config, store, durable)
        memcached.stop()  # the database serves

        later = Session(config, store, sid, durable=durable, clock=lambda: time.time() + HOUR)

        assert later.get("a") == 1  # strict, yet nothing raised
        assert later.available and later.session_id == sid and later.cookie_action is None
    finally:
        store.close()


def test_a_logout_waiting_on_a_write_deletes_the_variables_that_write_added(pg_url):
    from webapp2_sessions.sql import Database, StoredSession

    engine = sa.create_engine(pg_url)
    try:
        database = Database(engine)
        sid = "1" * 32
        with database.create(sid, StoredSession(time.time(), time.time() + 60, None, None)) as w:
            w.set({"a": b"1"}, 0)
        logouts: list[bool] = []
        with database.update(sid, time.time() + 60) as writer:
            writer.set({"b": b"2"}, 0)  # holds the session's row until the commit
            logout = threading.Thread(target=lambda: logouts.append(database.delete(sid)))
            logout.start()
            with engine.connect() as conn:  # until the logout waits on that row
                waiting = sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                )
                while logout.is_alive() and not conn.execute(waiting).scalar():
                    conn.rollback()
                    time.sleep(0.01)
        logout.join()
        assert logouts == [True]
        assert session_row(engine, sid) is None and rows(engine, sid) == {}
    finally:
        engine.dispose()


def test_a_session_renewed_while_purge_runs_keeps_its_row_and_its_variables(pg_url):
    from webapp2_sessions.sql import Database, StoredSession

    engine = sa.create_engine(pg_url)
    other = sa.create_engine(pg_url)
    try:
        database = Database(engine)
        renewed, expired = "1" * 32, "2" * 32
        for sid in (renewed, expired):
            with database.create(sid, StoredSession(1.0, 2.0, None, None)) as writer:
                writer.set({"a": b"1"}, 0)

        # Purge has listed both as expired; a request renews one before the
        # first DELETE runs (another connection, committed at once).
        @sa.event.listens_for(engine, "before_cursor_execute")
        def renew_first(conn, cursor, statement, parameters, context, executemany):
            if statement.startswith("DELETE") and not renew_first.done:
                renew_first.done = True
                with other.begin() as c:
                    c.execute(
                        sa.update(sessions_table)
                        .where(sessions_table.c.id == renewed)
                        .values(expires=time.time() + 3600)
                    )

        renew_first.done = False
        assert database.purge(time.time()) == 1

        assert renew_first.done
        assert session_row(engine, renewed) is not None
        assert rows(engine, renewed) == {"a": b"1"}
        assert session_row(engine, expired) is None and rows(engine, expired) == {}
    finally:
        engine.dispose()
        other.dispose()


def test_a_sweep_never_purges_a_reader_whose_row_trails_by_less_than_half_the_window(
    memcached, engine
):
    # A visitor who only reads renews memcached's record on every request but
    # the session's row at most once per half idle window: the row's expiry
    # may pass while the session is still in use.
    app = build(memcached, engine, sweep_percent=100)
    reader, writer = webtest.TestApp(app), webtest.TestApp(app)
    reader.get("/", {"set": "user", "value": '"ann"'})
    reader_sid = sid_of(reader)
    writer.get("/", {"set": "cart", "value": "[1]"})
    writer_sid = sid_of(writer)
    long_gone, remembered = webtest.TestApp(app), webtest.TestApp(app)
    long_gone.get("/", {"set": "user", "value": '"bob"'})
    gone_sid = sid_of(long_gone)
    remembered.get("/", {"set": "user", "value": '"cy"'})
    remembered_sid = sid_of(remembered)
    now, day = time.time(), 24 * HOUR
    s = sessions_table
    with engine.begin() as conn:
        # The window is a day: the reader's row trails by an hour, the other
        # visitor's row expired more than half a day ago. A session remembered
        # for 30 days renews its row at most every 15 days.
        conn.execute(sa.update(s).where(s.c.id == reader_sid).values(expires=now - HOUR))
        conn.execute(sa.update(s).where(s.c.id == gone_sid).values(expires=now - 13 * HOUR))
        conn.execute(
            sa.update(s)
            .where(s.c.id == remembered_sid)
            .values(expires=now - 10 * day, expiry=30 * day)
        )
    writer.get("/", {"set": "cart", "value": "[2]"})  # its sweep purges
    assert session_row(engine, gone_sid) is None
    assert session_row(engine, reader_sid) is not None
    assert session_row(engine, remembered_sid) is not None
    reader.get("/", {"set": "user", "value": '"ann2"'})  # writes again: still the same session
    assert sid_of(reader) == reader_sid
    assert reader.get("/", {"get": "user"}).json == {"user": "ann2"}
    assert rows(engine, reader_sid) == {"user": b'"ann2"'}
    assert rows(engine, writer_sid) == {"cart": b"[2]"}


def test_purge_works_through_any_backlog_in_chunks_and_keeps_to_its_limit(engine, monkeypatch):
    from webapp2_sessions import sql
    from webapp2_sessions.sql import Database, StoredSession

    monkeypatch.setattr(sql, "PURGE_CHUNK", 3)  # 500 in use: bound ids stay few
    database = Database(engine)
    expired = [f"{n:032x}" for n in range(10)]
    live = "f" * 32
    for sid in [*expired, live]:
        ends = time.time() + 3600 if sid == live else 2.0
        with database.create(sid, StoredSession(1.0, ends, None, None)) as writer:
            writer.set({"a": b"1"}, 0)

    assert database.purge(time.time(), limit=4) == 4
    assert database.purge(time.time()) == 6

    assert [sid for sid in expired if session_row(engine, sid) is not None] == []
    assert [sid for sid in expired if rows(engine, sid)] == []
    assert rows(engine, live) == {"a": b"1"}


def test_purge_deletes_expired_sessions_from_the_command_line(memcached, engine, tmp_path):
    import subprocess
    import sys

    browser = webtest.TestApp(build(memcached, engine, idle_timeout=1, ttl=1))
    browser.get("/", {"set": "a", "value": "1"})
    sid = sid_of(browser)
    time.sleep(1.5)
    url = str(engine.url)

    def purge(*options: str) -> str:
        command = [sys.executable, "-m", "webapp2_sessions", "purge", "--database", url]
        done = subprocess.run(
            [*command, *options], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    # With the default idle window (a day), a row may trail its session by half
    # a day: this one, expired a moment ago, could belong to a visitor in mid-read.
    assert "0 expired" in purge()
    assert "0 expired" in purge("--idle-timeout", str(7 * 24 * 3600))  # a week: longer than ttl
    assert session_row(engine, sid) is not None
    assert "1 expired" in purge("--idle-timeout", "1")
    assert session_row(engine, sid) is None and rows(engine, sid) == {}


@pytest.mark.parametrize(
    "value", ["not a url", "postgresql+nodriver://", 42, "postgresql://u@127.0.0.1:abc/db"]
)
def test_a_malformed_database_setting_names_the_setting(value):
    with pytest.raises(ConfigurationError) as caught:
        SessionConfig.from_mapping({"database": value})
    assert caught.value.key == "database"


def test_a_killed_node_costs_its_visitors_nothing_but_speed(memcached_cluster, engine):
    from webapp2_sessions import MemcacheStore

    config = {
        "memcache_servers": [s.address for s in memcached_cluster],
        "cookie_name": "sid",
        "database": engine,
        "timeout": 1,
        "dead_retry": 30,
    }
    app = webapp2.WSGIApplication([("/", Handler)], config={"webapp2_sessions": config})
    placement = MemcacheStore([s.address for s in memcached_cluster])
    browsers = []
    for i in range(20):
        browser = webtest.TestApp(app)
        browser.get("/", {"set": "n", "value": str(i)})
        browsers.append(browser)
    victim = memcached_cluster[0]
    stranded = [b for b in browsers if placement.node_for(sid_of(b)) == victim.address]
    assert stranded
    victim.stop()
    for browser in stranded:
        cookie = browser.cookies["sid"]
        expected = browser.get("/", {"get": "n"}).json["n"]  # served from the database
        assert expected is not None
        browser.get("/", {"set": "n", "value": str(expected + 100)})  # kept by the database
        assert browser.get("/", {"get": "n"}).json == {"n": expected + 100}
        assert browser.cookies["sid"] == cookie
    placement.close()


def test_a_database_that_stops_leaves_pages_up_and_reports_writes_not_saved(
    memcached, pg_url, postgres, caplog
):
    engine = sa.create_engine(pg_url, connect_args={"connect_timeout": 2})
    try:
        app = build(memcached, engine, dead_retry=30)
        browser = webtest.TestApp(app)
        browser.get("/", {"set": "user", "value": '"ann"'})
        postgres.kill()  # stopped; the fixture restarts it for the next test
        try:
            with caplog.at_level("DEBUG", logger="webapp2_sessions"):
                # Reads stay on memcached: no SQL, nothing lost.
                assert browser.get("/", {"get": "user"}).json == {"user": "ann"}
                response = browser.get("/", {"set": "user", "value": '"bob"'}, status=200)
            assert "not saved" in caplog.text
            assert "sid=" not in response.headers.get("Set-Cookie", "")
            # Neither tier took the write: memcached still agrees with the database.
            assert browser.get("/", {"get": "user"}).json == {"user": "ann"}
        finally:
            postgres.ensure_running()
    finally:
        engine.dispose()


def test_a_database_that_stops_raises_in_strict_mode(memcached, pg_url, postgres):
    from conftest import capture_errors

    from webapp2_sessions import SessionUnavailableError

    engine = sa.create_engine(pg_url, connect_args={"connect_timeout": 2})
    try:
        app = build(memcached, engine, strict=True, dead_retry=30)
        seen = capture_errors(app, 503)
        browser = webtest.TestApp(app)
        browser.get("/", {"set": "user", "value": '"ann"'})
        postgres.kill()
        try:
            browser.get("/", {"set": "user", "value": '"bob"'}, status=503)
        finally:
            postgres.ensure_running()
        assert seen and isinstance(seen[-1], SessionUnavailableError)
    finally:
        engine.dispose()


def test_a_sqlite_file_in_wal_mode_serves_sessions_too(memcached, tmp_path):
    from webapp2_sessions.sql import sqlite_engine

    engine = sqlite_engine(str(tmp_path / "wal.db"), wal=True)
    try:
        browser = webtest.TestApp(build(memcached, engine))
        browser.get("/", {"set": "user", "value": '"ann"'})
        memcached.raw(b"flush_all\r\n")
        assert browser.get("/", {"get": "user"}).json == {"user": "ann"}
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()


def test_writes_sweep_a_bounded_number_of_expired_sessions_now_and_then(memcached, engine):
    old = webtest.TestApp(build(memcached, engine, idle_timeout=1, ttl=1))
    stale = []
    for _ in range(3):
        browser = webtest.TestApp(old.app)
        browser.get("/", {"set": "a", "value": "1"})
        stale.append(sid_of(browser))
    time.sleep(2)  # past their expiry by more than half their idle window
    sweeping = webtest.TestApp(
        build(memcached, engine, idle_timeout=1, ttl=1, sweep_percent=100, sweep_limit=2)
    )
    sweeping.get("/", {"set": "b", "value": "1"})  # stores a session: no sweep yet
    sweeping.get("/", {"set": "b", "value": "2"})  # a write: sweeps at most 2
    left = [sid for sid in stale if session_row(engine, sid) is not None]
    assert len(left) == 1
    sweeping.get("/", {"set": "b", "value": "3"})
    assert all(session_row(engine, sid) is None for sid in stale)
    assert session_row(engine, sid_of(sweeping)) is not None  # the live one stays


def test_a_database_is_named_by_host_port_and_name_never_its_password():
    database = Database("postgresql+psycopg://ann:s3cret@db.internal:5433/sessions")
    assert database.describe() == "database postgresql://db.internal:5433/sessions"
    assert (
        Database("sqlite:////var/sessions.db").describe() == "database sqlite:///var/sessions.db"
    )
