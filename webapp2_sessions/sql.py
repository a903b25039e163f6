"""The durable tier: every session in a SQL database, behind memcached.

memcached stays the cache every read goes to; the database is what survives a
restart, an eviction or a dead node. One row per session and one per variable
(the per-variable design all the way down), on SQLAlchemy Core 2.x, so any of
its dialects works: SQLite embedded, PostgreSQL for many app servers.

Every write is a transaction that starts by touching the session's own row:
that locks it (PostgreSQL) or the database (SQLite), so writes to one session
are applied one at a time in both tiers, and a write after a logout finds no
row and changes nothing. Install with ``pip install webapp2-sessions[sql]``.

This module is what callers import: ``Database`` (the session queries: reads,
writes, logouts, purges) and ``sqlite_engine`` live here; the tables
(``sql_schema.py``) and one write transaction (``sql_writer.py``) are
re-exported from theirs. Around them: the engine's availability and the two
kinds of transaction (``sql_link.py``, ``Database``'s base), the logouts a
failed database still owes (``sql_owed.py``) and the statements a request
runs, compiled once (``sql_statements.py``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

try:
    import sqlalchemy as sa
    from sqlalchemy.engine import Engine
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "the 'database' setting needs SQLAlchemy: pip install 'webapp2-sessions[sql]'"
    ) from exc

from .errors import SessionUnavailableError
from .sql_link import DatabaseLink
from .sql_owed import OwedDeletions
from .sql_schema import FLASHES as FLASHES
from .sql_schema import sessions_table as sessions_table
from .sql_schema import value_of
from .sql_schema import variables_table as variables_table
from .sql_statements import LOAD, Statements
from .sql_writer import RollBack as RollBack
from .sql_writer import SessionGone as SessionGone
from .sql_writer import Writer as Writer

log = logging.getLogger("webapp2_sessions")

#: Of a session's idle window, how long its row may go unrenewed while the
#: session is in use: a visitor who only reads renews it no more often
#: (``DurableTier.touch_if_due``), so a row's expiry may trail its session's
#: by this much, and ``Database.purge`` waits as long past it.
RENEWAL_SHARE = 0.5
#: Sessions deleted per transaction by ``Database.purge``.
PURGE_CHUNK = 500


@dataclass
class StoredSession:
    """A session as the database holds it."""

    created: float
    expires: float
    user_agent: str | None
    remote_addr: str | None
    #: name -> (value, flags), as memcached holds them.
    variables: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    #: The SHA-256 (hex) of the session's owner, or None.
    owner: str | None = None
    #: Seconds the session is remembered for (``set_expiry``), or None.
    expiry: int | None = None
    #: When the session's current id was issued, if not at ``created``.
    issued: float | None = None


class Database(DatabaseLink):
    """The durable tier's queries on one database.

    ``source`` is a SQLAlchemy URL or ``Engine``. Tables are created on first
    use; a sessions table made by an earlier version gets the columns added
    since (``owner`` with its index, ``expiry``, ``issued``), nullable. A
    database that fails is logged once and skipped for ``dead_retry`` seconds,
    like a memcached node (``DatabaseLink``); its failures surface as
    ``SessionUnavailableError``. A ``delete`` that fails is owed: see ``owes``.
    """

    def __init__(self, source: str | Engine, *, dead_retry: float = 10.0) -> None:
        super().__init__(source, dead_retry=dead_retry)
        self._statements = Statements(self.engine.dialect)
        #: Logouts whose deletion failed (``delete``), done once it answers.
        self.owed = OwedDeletions(self.describe)

    # ------------------------------------------------------------------ owed deletions

    def owes(self, session_id: str) -> bool:
        """True while a failed ``delete`` of the session is not done yet: this
        process reads it as gone (``load`` and ``load_variables`` find nothing)."""
        return session_id in self.owed

    def _before_write(self) -> None:
        if self.owed:
            # Only a write: a read must not wait on (or fail for) a
            # deletion; ``load`` and ``load_variables`` skip owed ids.
            self._settle()

    def _settle(self) -> None:
        """Delete the rows of the oldest owed sessions (``OwedDeletions``), in a
        transaction of their own (two statements)."""
        ids = self.owed.next_batch()
        if not ids:
            return
        # write=False: this is what a write settles first, not one more to settle.
        with self._connect(write=False) as conn:
            conn.execute(sa.delete(sessions_table).where(sessions_table.c.id.in_(ids)))
            conn.execute(sa.delete(variables_table).where(variables_table.c.session_id.in_(ids)))
        self.owed.settled(ids)

    # ------------------------------------------------------------------ reading

    def load(self, session_id: str, now: float) -> StoredSession | None:
        """The session and every variable, in one query; None if gone, expired
        or owed a deletion (``owes``)."""
        if session_id in self.owed:
            return None
        with self._connect(write=False) as conn:
            return _stored(conn.execute(LOAD, {"sid": session_id}).all(), now)

    @contextmanager
    def load_held(self, session_id: str, now: float) -> Iterator[StoredSession | None]:
        """``load``, with the session's row held until the block ends.

        For putting the session back in memcached: a logout, or a write, that
        comes meanwhile waits for the row, so it deletes, or overwrites, what
        the block put back; without the hold, a logout finished between the
        read and the refill left the session live in memcached again. The
        block must not touch the database itself.
        """
        if session_id in self.owed:
            yield None
            return
        with self._transaction(locks=True) as cursor:
            rows = self._statements.load_held.run(cursor, {"sid": session_id}).fetchall()
            yield _stored(rows, now)

    def load_variables(
        self, session_id: str, names: Iterable[str]
    ) -> dict[str, tuple[bytes, int]]:
        """``names`` of a session, where the database has them (one query);
        none of a session owed a deletion (``owes``)."""
        if session_id in self.owed:
            return {}
        v = variables_table
        query = sa.select(v.c.name, v.c.value, v.c.flags).where(
            v.c.session_id == session_id, v.c.name.in_(list(names))
        )
        with self._connect(write=False) as conn:
            return {row.name: value_of(row) for row in conn.execute(query)}

    # ------------------------------------------------------------------ writing

    @contextmanager
    def create(self, session_id: str, stored: StoredSession) -> Iterator[Writer]:
        """A transaction that inserts a new session; committed on a clean exit."""
        with self._transaction() as cursor:
            self._statements.insert_session.run(
                cursor,
                {
                    "id": session_id,
                    "created": stored.created,
                    "expires": stored.expires,
                    "user_agent": stored.user_agent,
                    "remote_addr": stored.remote_addr,
                    "owner": stored.owner,
                    "expiry": stored.expiry,
                    "issued": stored.issued,
                },
            )
            yield Writer(cursor, session_id, self._statements, fresh=True)

    @contextmanager
    def update(self, session_id: str, expires: float) -> Iterator[Writer]:
        """A transaction on a stored session; ``SessionGone`` if it has no row.

        It begins by renewing the session's expiry, which locks its row, so
        writes to one session are serialized and a logout cannot slip in.
        The renewal runs with the writer's first statement (in it, where the
        dialect allows), and at the latest on ``Writer.hold()`` or on leaving
        the block: ``SessionGone`` may come from any of them.
        """
        with self._transaction() as cursor:
            writer = Writer(cursor, session_id, self._statements, renew=expires)
            yield writer
            writer.hold()

    def touch(self, session_id: str, expires: float) -> None:
        """Renew a session that is only being read (one statement)."""
        with self._transaction() as cursor:
            self._statements.touch.run(cursor, {"sid": session_id, "expires": expires})

    def delete(self, session_id: str, settled: Callable[[], object] | None = None) -> bool:
        """Delete the session and its variables; False if it had no row.

        If the database fails, ``SessionUnavailableError`` is raised and the
        deletion is owed: until it is done this process reads the session as
        gone (``owes``), and its next write transaction, once the database
        answers, begins by deleting the rows of the sessions owed (see
        ``sql_owed``: a bounded batch each time, a bounded number remembered,
        the oldest dropped with a log line), then calls their ``settled``: from then on
        this process no longer skips the id, so what memcached still holds
        for it must read as ended (another process may have refilled it from
        the rows meanwhile).
        """
        try:
            with self._connect(write=True) as conn:
                # The session's row first: that waits for a write holding it, so the
                # variables' delete then sees every row that write added.
                s, v = sessions_table, variables_table
                gone = conn.execute(sa.delete(s).where(s.c.id == session_id))
                conn.execute(sa.delete(v).where(v.c.session_id == session_id))
        except SessionUnavailableError:
            self.owed.add(session_id, settled)
            raise
        self.owed.discard(session_id)
        return gone.rowcount > 0

    def sweep(self, percent: float, limit: int, *, trail: float = 0.0) -> None:
        """Now and then (``percent`` of calls), purge up to ``limit`` expired
        sessions (see ``purge`` for ``trail``): the bounded sweep a write pays
        for now and then."""
        if percent <= 0 or random.random() * 100 >= percent:  # noqa: S311
            return
        try:
            purged = self.purge(time.time(), limit=limit, trail=trail)
        except SessionUnavailableError:
            return
        if purged:
            log.info("%s: %d expired session(s) purged", self.describe(), purged)

    def set_owner(self, session_id: str, owner_hash: str) -> bool:
        """Record the session's owner (one statement); False if it has no row."""
        s = sessions_table
        with self._connect(write=True) as conn:
            done = conn.execute(sa.update(s).where(s.c.id == session_id).values(owner=owner_hash))
            return done.rowcount > 0

    def owned(self, owner_hash: str) -> list[tuple[str, float]]:
        """``(id, expires)`` of every session of the owner, expired ones too (one query)."""
        s = sessions_table
        with self._connect(write=False) as conn:
            found = conn.execute(sa.select(s.c.id, s.c.expires).where(s.c.owner == owner_hash))
            return [(row.id, row.expires) for row in found]

    def counts(self, now: float) -> dict[str, int]:
        """Live ``sessions``, ``expired`` ones not yet purged, and ``variables``
        (flash lists not counted), in one transaction."""
        s, v = sessions_table, variables_table
        count = sa.func.count()
        with self._connect(write=False) as conn:
            live = conn.execute(sa.select(count).where(s.c.expires >= now)).scalar_one()
            expired = conn.execute(sa.select(count).where(s.c.expires < now)).scalar_one()
            names = conn.execute(sa.select(count).where(v.c.name != FLASHES)).scalar_one()
        return {"sessions": live, "expired": expired, "variables": names}

    def purge(self, now: float, limit: int | None = None, *, trail: float = 0.0) -> int:
        """Delete sessions expired before ``now`` (at most ``limit``); how many.

        A session only read renews its row at most once per half its idle
        window (``DurableTier.touch_if_due``), while memcached's record is
        renewed on every request: the row's expiry may trail the session's
        by up to ``trail`` seconds (``RENEWAL_SHARE`` of the settings' idle
        window), or that share of the session's own remembered lifetime
        (``expiry``) if longer. A row is
        purged only once its expiry is that far behind ``now``; purging it
        sooner would end the session of a visitor who read, paused and came
        back to write within their idle window.

        In transactions of ``PURGE_CHUNK`` sessions: one statement's bound
        ids stay far below every driver's limit (SQLite's 32,766, say), so a
        purge that fell behind catches up instead of failing every time.
        The session rows go first, each only if still expired: a request may
        renew one after it was listed. Then the variables of the sessions
        that are gone, never those of one renewed meanwhile.
        """
        s, v = sessions_table, variables_table
        own = s.c.expiry * RENEWAL_SHARE
        behind = sa.case((own > trail, own), else_=trail)
        # The first bound is for the index on expires; the second is the rule.
        is_over = sa.and_(s.c.expires < now - trail, s.c.expires < now - behind)
        purged = 0
        while limit is None or purged < limit:
            size = PURGE_CHUNK if limit is None else min(PURGE_CHUNK, limit - purged)
            with self._connect(write=True) as conn:
                expired = sa.select(s.c.id).where(is_over).limit(size)
                ids = [row.id for row in conn.execute(expired)]
                if not ids:
                    break
                gone = conn.execute(sa.delete(s).where(s.c.id.in_(ids), is_over))
                alive = sa.select(s.c.id).where(s.c.id.in_(ids))
                conn.execute(
                    sa.delete(v).where(v.c.session_id.in_(ids), v.c.session_id.not_in(alive))
                )
            purged += int(gone.rowcount)
            if len(ids) < size:
                break
        return purged


def _stored(rows: Sequence[Any], now: float) -> StoredSession | None:
    """The session in ``rows`` of ``LOAD`` (SQLAlchemy's or the driver's, read
    by position), or None if there is none or it expired before ``now``."""
    if not rows or rows[0][1] < now:
        return None
    created, expires, user_agent, remote_addr, owner, expiry, issued = rows[0][:7]
    stored = StoredSession(
        created, expires, user_agent, remote_addr, owner=owner, expiry=expiry, issued=issued
    )
    for row in rows:
        name = row[7]
        if name is not None:
            stored.variables[name] = (bytes(row[8]), row[9])
    return stored


def sqlite_engine(path: str, *, wal: bool = False) -> Engine:
    """An engine for a SQLite file, optionally in WAL mode with ``synchronous=NORMAL``.

    The default (rollback journal, ``synchronous=FULL``) survives a power
    loss with every committed write. ``wal=True`` commits several times
    faster and lets readers run beside the writer; the price is that the last
    writes before a power loss or an OS crash may be lost (never the file's
    consistency; a crash of the application alone loses nothing).
    """
    engine = sa.create_engine(f"sqlite:///{path}")
    if wal:

        @sa.event.listens_for(engine, "connect")
        def _pragmas(connection: Any, record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    return engine
