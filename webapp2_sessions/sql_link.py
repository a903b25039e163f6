"""One database engine as the durable tier uses it: its availability and its transactions.

A database that fails is treated like a memcached node: logged once, then
skipped for ``dead_retry`` seconds, with every failure surfacing as
``SessionUnavailableError``. Every query of the tier runs in one of two
transactions: ``_connect`` (a SQLAlchemy ``Connection``: reads, logouts,
purges) or ``_transaction`` (a DBAPI cursor, for the writes every request
makes, where SQLAlchemy's per-statement work would cost more than the
statement). ``sql.Database`` adds the session queries on top.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .errors import SessionUnavailableError
from .sql_schema import create_tables
from .sql_writer import RollBack

log = logging.getLogger("webapp2_sessions")


class DatabaseLink:
    """An engine (``source``: a SQLAlchemy URL or ``Engine``), marked down for
    ``dead_retry`` seconds after a failure; its tables are created on first use."""

    def __init__(self, source: str | Engine, *, dead_retry: float = 10.0) -> None:
        self.engine = sa.create_engine(source) if isinstance(source, str) else source
        self.dead_retry = dead_retry
        dbapi = self.engine.dialect.loaded_dbapi
        #: What the driver raises (``_transaction`` runs statements on it directly).
        self._dbapi_error: type[Exception] = dbapi.Error
        self._dbapi_integrity_error: type[Exception] = dbapi.IntegrityError
        self._ready = False
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._down = False

    def describe(self) -> str:
        """The database as log lines and errors name it (no password)."""
        url = self.engine.url
        where = url.database or ""
        if url.host:  # host/name, as in the URL; SQLite's is a path
            where = f"{url.host}{'' if url.port is None else f':{url.port}'}/{where}"
        return f"database {url.get_backend_name()}://{where}"

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ availability

    @contextmanager
    def _connect(self, write: bool) -> Iterator[Connection]:
        """A connection in a transaction, committed on a clean exit; database
        failures become ``SessionUnavailableError``.

        As in ``_transaction``: anything else (a signal's exception, a
        greenlet's timeout) may have come in the middle of a statement, so
        that connection is closed, never rolled back (the rollback would meet
        the reply still due and fail, and that is no outage) nor handed to
        another request, and the exception goes on as it came.
        """
        try:
            self._prepare(write)
            conn = self.engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            raise self._failed(exc) from None
        try:
            transaction = conn.begin()
            yield conn
            transaction.commit()
        except sa.exc.SQLAlchemyError as exc:
            _roll_back(conn)
            raise self._failed(exc) from None
        except BaseException as exc:
            conn.invalidate(exc)
            raise
        finally:
            conn.close()
        self._answered()

    @contextmanager
    def _transaction(self, *, locks: bool = False) -> Iterator[Any]:
        """A write transaction on a DBAPI cursor, committed on a clean exit.

        With ``locks``, a SQLite transaction takes the database's write lock
        at once (``BEGIN IMMEDIATE``) rather than at its first write, so that
        one that only reads still keeps writers out until it ends; other
        databases lock the rows it reads ``FOR SHARE`` instead.

        The connection comes from the engine's pool, so its settings and its
        ``connect`` and ``checkout`` events apply; the statements run on the
        driver (``sql_statements.Prepared``). Database failures become
        ``SessionUnavailableError``. Only what the tier raises between
        statements (``RollBack``, memcached's ``SessionUnavailableError``)
        leaves the connection to be rolled back and reused: anything else (a
        signal's exception, a greenlet's timeout) may have come in the middle
        of a statement with its reply unread, so that connection is closed,
        never handed to another request.
        """
        try:
            self._prepare(write=True)
            pooled = self.engine.raw_connection()
        except sa.exc.SQLAlchemyError as exc:
            raise self._failed(exc) from None
        cursor = None
        try:
            cursor = pooled.cursor()
            driver = pooled.dbapi_connection
            if locks and isinstance(driver, sqlite3.Connection) and not driver.in_transaction:
                cursor.execute("BEGIN IMMEDIATE")
            elif _autocommits(driver):
                # Set so by the app (SQLAlchemy's recipe for pysqlite, say),
                # which then begins transactions in an event this path skips.
                cursor.execute("BEGIN")
            yield cursor
            pooled.commit()
        except (self._dbapi_error, sa.exc.SQLAlchemyError) as exc:
            if isinstance(exc, self._dbapi_error) and self.engine.dialect.is_disconnect(
                cast(Any, exc), pooled.dbapi_connection, cursor
            ):
                pooled.invalidate(exc)
            else:
                _roll_back(pooled)
            raise self._failed(exc) from None
        except (RollBack, SessionUnavailableError):
            # Here, not left to the pool: it may be set not to reset connections.
            _roll_back(pooled)
            raise
        except BaseException as exc:
            pooled.invalidate(exc)
            raise
        finally:
            if cursor is not None and pooled.is_valid:
                cursor.close()
            pooled.close()
        self._answered()

    def _prepare(self, write: bool) -> None:
        """What comes before a transaction: fail fast while marked down, make
        the tables on first use, and, before a write, ``_before_write()``."""
        if self._down and self._down_until > time.monotonic():
            raise SessionUnavailableError("marked down after a failure", self.describe())
        self._ensure_schema()
        if write:
            self._before_write()

    def _before_write(self) -> None:
        """What every write transaction runs first, in a transaction of its own."""

    def _answered(self) -> None:
        if self._down:
            self._down = False
            log.warning("%s is answering again", self.describe())

    def _failed(self, error: BaseException) -> SessionUnavailableError:
        """What a request that failed with ``error`` raises; marks the database
        down unless the error is a constraint."""
        self._mark_down(error)
        return SessionUnavailableError(f"request failed ({type(error).__name__})", self.describe())

    def _mark_down(self, error: BaseException) -> None:
        if isinstance(error, (sa.exc.IntegrityError, self._dbapi_integrity_error)):
            return  # a constraint, not an outage
        self._down_until = time.monotonic() + self.dead_retry
        if not self._down:
            self._down = True
            log.error(
                "%s unavailable (%s); writes are not saved for %gs",
                self.describe(),
                type(error).__name__,
                self.dead_retry,
            )

    def _ensure_schema(self) -> None:
        if self._ready:
            return
        with self._lock:
            if not self._ready:
                create_tables(self.engine)
                self._ready = True


def _autocommits(connection: Any) -> bool:
    """Whether a driver connection runs each statement in a transaction of its own."""
    if getattr(connection, "autocommit", None) is True:  # psycopg; sqlite3 from 3.12
        return True
    return (
        isinstance(connection, sqlite3.Connection)
        and connection.isolation_level is None
        and not connection.in_transaction
    )


def _roll_back(connection: Any) -> None:
    """Roll back the transaction of a connection that goes back to the pool
    (a pooled DBAPI connection or a SQLAlchemy ``Connection``); one that
    cannot is closed instead."""
    try:
        connection.rollback()
    except Exception as exc:
        connection.invalidate(exc)
