"""One write transaction on one session: the statements ``Database`` hands a request.

Every write starts by renewing the session's row (``Writer.hold``), which
locks it (PostgreSQL) or the database (SQLite), so writes to one session are
applied one at a time in both tiers, and a write after a logout finds no row,
changes nothing and raises ``SessionGone``. Counters and flash lists are read
and rewritten under that lock. Imported through ``sql.py``, which checks that
SQLAlchemy is installed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .sql_schema import FLASHES
from .sql_statements import Statements


class RollBack(Exception):
    """Raised between statements to abandon a write transaction: it is rolled
    back and its connection reused (anything else closes the connection)."""


class SessionGone(RollBack):
    """The session has no row: it was logged out, or expired and purged."""


class Writer:
    """The statements of one write transaction on one session, on ``cursor``
    (a DBAPI cursor of the transaction's connection)."""

    def __init__(
        self,
        cursor: Any,
        session_id: str,
        statements: Statements,
        *,
        fresh: bool = False,
        renew: float | None = None,
    ) -> None:
        self._cursor = cursor
        self._sid = session_id
        self._statements = statements
        #: A session inserted by this transaction: only what it wrote itself
        #: can need replacing.
        self._fresh = fresh
        self._inserted: set[str] = set()
        #: The expiry the session's row is renewed to before anything else,
        #: while that is still to do.
        self._renew = renew

    def hold(self) -> None:
        """Renew the session's row now if no statement has yet (which locks it).

        Raises ``SessionGone`` if it has no row.
        """
        if self._renew is not None:
            renewed = self._statements.renew.run(
                self._cursor, {"sid": self._sid, "expires": self._renew}
            )
            self._renew = None
            if renewed.rowcount == 0:
                raise SessionGone(self._sid)

    def set(self, values: Mapping[str, bytes], flags: int) -> None:
        """Store ``values`` (name -> serialized value), replacing old ones."""
        if not values:
            return
        sid = self._sid
        statements = self._statements
        if statements.upsert is None:
            self._replace(values, flags)
            return
        combined = statements.renew_and_upsert
        if self._renew is not None and combined is not None and len(values) == 1:
            ((name, data),) = values.items()
            done = combined.run(
                self._cursor,
                {"sid": sid, "expires": self._renew, "name": name, "value": data, "flags": flags},
            )
            self._renew = None
            if done.rowcount == 0:
                raise SessionGone(sid)
            return
        self.hold()
        statements.upsert.run_many(
            self._cursor,
            [
                {"session_id": sid, "name": n, "value": d, "flags": flags}
                for n, d in values.items()
            ],
        )

    def _replace(self, values: Mapping[str, bytes], flags: int) -> None:
        # Delete then insert: the same statements in every dialect, and the
        # session's row lock keeps them atomic for this session.
        self.hold()
        sid = self._sid
        replaced = [n for n in values if not self._fresh or n in self._inserted]
        if replaced:
            self._statements.delete_variable.run_many(
                self._cursor, [{"sid": sid, "var": n} for n in replaced]
            )
        if self._fresh:
            self._inserted.update(values)
        self._statements.insert_variable.run_many(
            self._cursor,
            [
                {"session_id": sid, "name": n, "value": d, "flags": flags}
                for n, d in values.items()
            ],
        )

    def remember(self, expiry: int | None) -> None:
        """Keep the session's lifetime (``set_expiry``; None: the settings')."""
        self._statements.remember.run(self._cursor, {"sid": self._sid, "expiry": expiry})

    def delete(self, names: Iterable[str]) -> None:
        params = [{"sid": self._sid, "var": n} for n in names]
        if params:
            self.hold()
            self._statements.delete_variable.run_many(self._cursor, params)

    def read(self, name: str) -> tuple[bytes, int] | None:
        """The variable's value as this transaction sees it (its row is ours)."""
        self.hold()
        found = self._statements.read_variable.run(self._cursor, {"sid": self._sid, "var": name})
        row = found.fetchone()
        return None if row is None else (bytes(row[0]), row[1])

    def increment(self, name: str, delta: int, flags: int) -> int | None:
        """Add ``delta`` to counter ``name`` (0 if missing, never below 0).

        None if the variable holds something other than a counter.
        """
        row = self.read(name)
        if row is None:
            current = 0
        elif row[0].strip().isdigit() and int(row[0]) < 1 << 64:
            current = int(row[0])
        else:
            return None
        value = max(0, current + delta) % (1 << 64)  # as memcached: wraps going up
        self.set({name: b"%d" % value}, flags)
        return value

    def flash_list(self) -> bytes:
        """The flash list as this transaction sees it (b"" for none)."""
        current = self.read(FLASHES)
        return b"" if current is None else current[0]

    def append_flashes(self, lines: bytes, flags: int) -> None:
        current = self.read(FLASHES)
        self.set({FLASHES: (current[0] if current else b"") + lines}, flags)

    def consume_flashes(self, read: bytes, flags: int) -> None:
        """Remove the flashes ``read`` earlier; keep any added since."""
        current = self.read(FLASHES)
        if current is None:
            return
        rest = current[0][len(read) :] if current[0].startswith(read) else current[0]
        if rest:
            self.set({FLASHES: rest}, flags)
        else:
            self.delete([FLASHES])
