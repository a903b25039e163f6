"""The SQL tier's test databases: a real PostgreSQL with a fresh database per
test, stalls (SIGSTOP), restarts and crashes; and SQLite files.

Everything goes through SQLAlchemy Core 2.x, as the durable tier does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from postgres import PostgresServer

metadata = sa.MetaData()
notes = sa.Table(
    "notes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("body", sa.Text, nullable=False),
)


@pytest.fixture
def engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(pg_url, connect_args={"connect_timeout": 10})
    try:
        yield engine
    finally:
        engine.dispose()


def bodies(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(notes.c.body).order_by(notes.c.id)).scalars())


def write_notes(engine: sa.Engine, *texts: str) -> None:
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(notes), [{"body": text} for text in texts])


def test_a_fresh_database_stores_and_reads_back_rows(engine: sa.Engine) -> None:
    write_notes(engine, "first", "second")
    assert bodies(engine) == ["first", "second"]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SHOW server_version")).scalar()


@pytest.mark.parametrize("turn", ["one test", "the next test"])
def test_each_test_starts_with_an_empty_database(engine: sa.Engine, turn: str) -> None:
    assert sa.inspect(engine).get_table_names() == []
    write_notes(engine, turn)
    assert bodies(engine) == [turn]


def test_only_the_current_tests_database_exists(postgres: PostgresServer, pg_url: str) -> None:
    # The databases of finished tests were dropped.
    with postgres.connect() as conn:
        names = [row[0] for row in conn.execute("SELECT datname FROM pg_database")]
    ours = [name for name in names if name.startswith("test_")]
    assert ours == [pg_url.rsplit("/", 1)[1]]


def test_pause_stalls_queries_until_resume(postgres: PostgresServer, engine: sa.Engine) -> None:
    stalled = sa.create_engine(engine.url, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
            answers: list[Any] = []

            def query() -> None:
                answers.append(conn.execute(sa.text("SELECT 42")).scalar())

            with postgres.paused():
                # A query on an open connection waits...
                worker = threading.Thread(target=query, daemon=True)
                worker.start()
                worker.join(1.0)
                assert worker.is_alive()
                assert answers == []
                # ...and a new connection times out: the port accepts, nobody answers.
                began = time.monotonic()
                with pytest.raises(sa.exc.OperationalError):
                    stalled.connect()
                assert time.monotonic() - began < 20
            worker.join(30)
            assert not worker.is_alive()
            assert answers == [42]
    finally:
        stalled.dispose()


def test_pause_stops_every_server_process(postgres: PostgresServer) -> None:
    from postgres import _thread_states

    with postgres.paused():
        processes = postgres.processes()
        assert len(processes) > 1  # the postmaster and its background processes
        assert all(set(_thread_states(pid)) <= set("TZ") for pid in processes)
    assert all("T" not in _thread_states(pid) for pid in postgres.processes())


def test_restart_keeps_the_data(postgres: PostgresServer, engine: sa.Engine) -> None:
    write_notes(engine, "kept")
    engine.dispose()  # a fast shutdown would end the pool's connection anyway
    port = postgres.port
    postgres.restart()
    assert postgres.port == port
    assert bodies(engine) == ["kept"]


def test_kill_then_restart_recovers_committed_rows(postgres: PostgresServer, pg_url: str) -> None:
    # The fast test settings acknowledge a commit before its WAL is written,
    # so a crash may lose it: this write asks for a synchronous commit.
    durable = sa.create_engine(pg_url, connect_args={"options": "-c synchronous_commit=on"})
    try:
        write_notes(durable, "committed")
    finally:
        durable.dispose()
    postmaster = postgres.processes()[0]
    postgres.kill()
    assert not postgres.running
    postgres.restart()
    assert postgres.processes()[0] != postmaster
    engine = sa.create_engine(pg_url)
    try:
        assert bodies(engine) == ["committed"]
    finally:
        engine.dispose()


def test_a_missing_postgresql_fails_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import postgres

    monkeypatch.setattr(postgres.glob, "glob", lambda pattern: [])
    with pytest.raises(RuntimeError, match="apt-get install postgresql"):
        PostgresServer()


def test_sqlite_url_is_a_file_in_the_tests_directory(sqlite_url: str, tmp_path: Any) -> None:
    assert sqlite_url == f"sqlite:///{tmp_path}/sessions.db"
    engine = sa.create_engine(sqlite_url)
    try:
        write_notes(engine, "on disk")
        assert bodies(engine) == ["on disk"]
    finally:
        engine.dispose()
    assert (tmp_path / "sessions.db").exists()
