"""Counting the SQL statements an engine sends, at the driver.

The durable tier runs its writes on the DBAPI cursor, past SQLAlchemy's
cursor events, so statements are counted where every path meets: the
driver's own cursor. An engine passed to ``counted`` (or made by
``counting_engine``) opens connections whose cursors count each ``execute``
and each ``executemany`` (as one). Transaction control (``BEGIN``,
``COMMIT``, ``ROLLBACK``) is not counted, whether the driver sends it on its
own or the tier through a cursor (``BEGIN IMMEDIATE`` on SQLite, say).
Used by the tests and by the benchmark's counting pass.
"""

from __future__ import annotations

import re
import sqlite3
import weakref
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

#: What is not counted: transaction control.
_TRANSACTION_CONTROL = re.compile(r"\s*(BEGIN|COMMIT|ROLLBACK)\b", re.IGNORECASE)


class Tally:
    """Statements sent by the connections of one engine."""

    def __init__(self) -> None:
        self.count = 0

    def during(self, action: Callable[[], object]) -> int:
        """How many statements ``action`` sent."""
        before = self.count
        action()
        return self.count - before

    def connect_args(self, dialect: str) -> dict[str, Any]:
        """The driver's ``connect()`` arguments that make its cursors count here."""
        if dialect == "sqlite":
            counting = self._counting(sqlite3.Cursor)

            class SqliteConnection(sqlite3.Connection):
                def cursor(self, factory: Any = counting) -> Any:
                    return super().cursor(factory)

            return {"factory": SqliteConnection}
        if dialect == "postgresql":
            import psycopg

            return {"cursor_factory": self._counting(psycopg.Cursor)}
        raise ValueError(f"no statement counting for {dialect}")

    def _counting(self, cursor: Any) -> Any:
        """A subclass of the driver's ``cursor`` class that counts here."""
        tally = self

        class Counting(cursor):  # type: ignore[misc, valid-type]
            def execute(self, *args: Any, **kwargs: Any) -> Any:
                if not _TRANSACTION_CONTROL.match(str(args[0]) if args else ""):
                    tally.count += 1
                return super().execute(*args, **kwargs)

            def executemany(self, *args: Any, **kwargs: Any) -> Any:
                tally.count += 1
                return super().executemany(*args, **kwargs)

        return Counting


_TALLIES: weakref.WeakKeyDictionary[sa.engine.Engine, Tally] = weakref.WeakKeyDictionary()


def counted(engine: sa.engine.Engine) -> sa.engine.Engine:
    """``engine``, its statements counted (``tally_of``) from its next new
    connection on: whatever else it sets up for its connections still applies."""
    tally = Tally()
    args = tally.connect_args(engine.dialect.name)

    @sa.event.listens_for(engine, "do_connect")
    def _counting(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        cparams.update(args)

    _TALLIES[engine] = tally
    return engine


def counting_engine(url: str) -> sa.engine.Engine:
    """``sqlalchemy.create_engine(url)``, ``counted``."""
    return counted(sa.create_engine(url))


def tally_of(engine: sa.engine.Engine) -> Tally:
    """The statement count of an engine passed to ``counted``."""
    try:
        return _TALLIES[engine]
    except KeyError:
        raise ValueError("not a counting engine: pass it to counted()") from None
