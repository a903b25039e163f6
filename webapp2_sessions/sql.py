"""The durable tier: every session in a SQL database, behind memcached.

memcached stays the cache every read goes to; the database is what survives a
restart, an eviction or a dead node. One row per session and one per variable
(the per-variable design all the way down), on SQLAlchemy Core 2.x, so any of
its dialects works: SQLite embedded, PostgreSQL for many app servers.

Every write is a transaction that starts by touching the session's own row:
that locks it (PostgreSQL) or the database (SQLite), so writes to one session
are applied one at a time in both tiers, and a write after a logout finds no
row and changes nothing. Install with ``pip install webapp2-sessions[sql]``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

try:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection, Engine
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "the 'database' setting needs SQLAlchemy: pip install 'webapp2-sessions[sql]'"
    ) from exc

from .errors import SessionUnavailableError

log = logging.getLogger("webapp2_sessions")

#: The row name of a session's flash list: no variable can be named ''.
FLASHES = ""

_metadata = sa.MetaData()
sessions_table = sa.Table(
    "webapp2_sessions",
    _metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created", sa.Float, nullable=False),
    #: When the session ends if nothing renews it (idle or absolute timeout).
    sa.Column("expires", sa.Float, nullable=False, index=True),
    sa.Column("user_agent", sa.String(32)),
    sa.Column("remote_addr", sa.String(32)),
    #: Seconds the session is remembered for (``set_expiry``); NULL: not.
    sa.Column("expiry", sa.Integer),
)
variables_table = sa.Table(
    "webapp2_session_variables",
    _metadata,
    sa.Column("session_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    #: The serialized value, exactly as memcached holds it (a counter is
    #: decimal text under the JSON flags).
    sa.Column("value", sa.LargeBinary, nullable=False),
    sa.Column("flags", sa.Integer, nullable=False),
)


# The statements of the hot paths, built once: building a SQLAlchemy statement
# costs more than running a small one.
_s, _v = sessions_table, variables_table
_LOAD = (
    sa.select(
        _s.c.created,
        _s.c.expires,
        _s.c.user_agent,
        _s.c.remote_addr,
        _s.c.expiry,
        _v.c.name,
        _v.c.value,
        _v.c.flags,
    )
    .select_from(_s.outerjoin(_v, _v.c.session_id == _s.c.id))
    .where(_s.c.id == sa.bindparam("sid"))
)
_RENEW = (
    sa.update(_s).where(_s.c.id == sa.bindparam("sid")).values(expires=sa.bindparam("expires"))
)
_INSERT_SESSION = sa.insert(_s)
_INSERT_VARIABLE = sa.insert(_v)
_DELETE_VARIABLE = sa.delete(_v).where(
    _v.c.session_id == sa.bindparam("sid"), _v.c.name == sa.bindparam("var")
)
_READ_VARIABLE = sa.select(_v.c.value, _v.c.flags).where(
    _v.c.session_id == sa.bindparam("sid"), _v.c.name == sa.bindparam("var")
)


@dataclass
class StoredSession:
    """A session as the database holds it."""

    created: float
    expires: float
    user_agent: str | None
    remote_addr: str | None
    #: name -> (value, flags), as memcached holds them.
    variables: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    #: Seconds the session is remembered for (``set_expiry``), or None.
    expiry: int | None = None


class SessionGone(Exception):
    """The session has no row: it was logged out, or expired and purged."""


class Database:
    """The durable tier's connection to one database.

    ``source`` is a SQLAlchemy URL or ``Engine``. Tables are created on first
    use. A database that fails is logged once and skipped for ``dead_retry``
    seconds, like a memcached node; its failures surface as
    ``SessionUnavailableError``.
    """

    def __init__(self, source: str | Engine, *, dead_retry: float = 10.0) -> None:
        self.engine = sa.create_engine(source) if isinstance(source, str) else source
        self.dead_retry = dead_retry
        self._ready = False
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._down = False

    def describe(self) -> str:
        url = self.engine.url
        return f"database {url.get_backend_name()}://{url.host or ''}{url.database or ''}"

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ availability

    @contextmanager
    def _connect(self, write: bool) -> Iterator[Connection]:
        """A connection in a transaction; failures become ``SessionUnavailableError``."""
        if self._down and self._down_until > time.monotonic():
            raise SessionUnavailableError("marked down after a failure", self.describe())
        try:
            self._ensure_schema()
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            self._mark_down(exc)
            raise SessionUnavailableError(
                f"request failed ({type(exc).__name__})", self.describe()
            ) from None
        if self._down:
            self._down = False
            log.warning("%s is answering again", self.describe())

    def _mark_down(self, error: BaseException) -> None:
        if isinstance(error, sa.exc.IntegrityError):
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
                _metadata.create_all(self.engine, checkfirst=True)
                _add_missing_columns(self.engine)
                self._ready = True

    # ------------------------------------------------------------------ reading

    def load(self, session_id: str, now: float) -> StoredSession | None:
        """The session and every variable, in one query; None if gone or expired."""
        with self._connect(write=False) as conn:
            rows = conn.execute(_LOAD, {"sid": session_id}).all()
        if not rows or rows[0].expires < now:
            return None
        first = rows[0]
        stored = StoredSession(
            first.created, first.expires, first.user_agent, first.remote_addr, expiry=first.expiry
        )
        for row in rows:
            if row.name is not None:
                stored.variables[row.name] = _value(row)
        return stored

    def load_variables(
        self, session_id: str, names: Iterable[str]
    ) -> dict[str, tuple[bytes, int]]:
        """``names`` of a session, where the database has them (one query)."""
        v = variables_table
        query = sa.select(v.c.name, v.c.value, v.c.flags).where(
            v.c.session_id == session_id, v.c.name.in_(list(names))
        )
        with self._connect(write=False) as conn:
            return {row.name: _value(row) for row in conn.execute(query)}

    # ------------------------------------------------------------------ writing

    @contextmanager
    def create(self, session_id: str, stored: StoredSession) -> Iterator[Writer]:
        """A transaction that inserts a new session; committed on a clean exit."""
        with self._connect(write=True) as conn:
            conn.execute(
                _INSERT_SESSION,
                {
                    "id": session_id,
                    "created": stored.created,
                    "expires": stored.expires,
                    "user_agent": stored.user_agent,
                    "remote_addr": stored.remote_addr,
                    "expiry": stored.expiry,
                },
            )
            yield Writer(conn, session_id, fresh=True)

    @contextmanager
    def update(self, session_id: str, expires: float) -> Iterator[Writer]:
        """A transaction on a stored session; ``SessionGone`` if it has no row.

        It begins by renewing the session's expiry, which locks its row, so
        writes to one session are serialized and a logout cannot slip in.
        """
        with self._connect(write=True) as conn:
            renewed = conn.execute(_RENEW, {"sid": session_id, "expires": expires})
            if renewed.rowcount == 0:
                raise SessionGone(session_id)
            yield Writer(conn, session_id)

    def touch(self, session_id: str, expires: float) -> None:
        """Renew a session that is only being read (one statement)."""
        with self._connect(write=True) as conn:
            conn.execute(
                sa.update(sessions_table)
                .where(sessions_table.c.id == session_id, sessions_table.c.expires < expires)
                .values(expires=expires)
            )

    def delete(self, session_id: str) -> bool:
        """Delete the session and its variables; False if it had no row."""
        with self._connect(write=True) as conn:
            conn.execute(
                sa.delete(variables_table).where(variables_table.c.session_id == session_id)
            )
            gone = conn.execute(sa.delete(sessions_table).where(sessions_table.c.id == session_id))
            return gone.rowcount > 0

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

    def purge(self, now: float, limit: int | None = None) -> int:
        """Delete sessions expired before ``now`` (at most ``limit``); how many."""
        s, v = sessions_table, variables_table
        expired = sa.select(s.c.id).where(s.c.expires < now)
        if limit is not None:
            expired = expired.limit(limit)
        with self._connect(write=True) as conn:
            ids = [row.id for row in conn.execute(expired)]
            if not ids:
                return 0
            conn.execute(sa.delete(v).where(v.c.session_id.in_(ids)))
            conn.execute(sa.delete(s).where(s.c.id.in_(ids), s.c.expires < now))
        return len(ids)


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


class Writer:
    """The statements of one write transaction on one session."""

    def __init__(self, conn: Connection, session_id: str, fresh: bool = False) -> None:
        self._conn = conn
        self._sid = session_id
        #: A session inserted by this transaction: only what it wrote itself
        #: can need replacing.
        self._fresh = fresh
        self._inserted: set[str] = set()

    def set(self, values: Mapping[str, bytes], flags: int) -> None:
        # Delete then insert: the same statements in every dialect, and the
        # session's row lock keeps them atomic for this session.
        """Store ``values`` (name -> serialized value), replacing old ones."""
        if not values:
            return
        sid = self._sid
        replaced = [n for n in values if not self._fresh or n in self._inserted]
        if replaced:
            self._conn.execute(_DELETE_VARIABLE, [{"sid": sid, "var": n} for n in replaced])
        if self._fresh:
            self._inserted.update(values)
        self._conn.execute(
            _INSERT_VARIABLE,
            [
                {"session_id": sid, "name": n, "value": d, "flags": flags}
                for n, d in values.items()
            ],
        )

    def remember(self, expiry: int | None) -> None:
        """Keep the session's lifetime (``set_expiry``; None: the settings')."""
        s = sessions_table
        self._conn.execute(sa.update(s).where(s.c.id == self._sid).values(expiry=expiry))

    def delete(self, names: Iterable[str]) -> None:
        params = [{"sid": self._sid, "var": n} for n in names]
        if params:
            self._conn.execute(_DELETE_VARIABLE, params)

    def read(self, name: str) -> tuple[bytes, int] | None:
        """The variable's value as this transaction sees it (its row is ours)."""
        row = self._conn.execute(_READ_VARIABLE, {"sid": self._sid, "var": name}).first()
        return None if row is None else _value(row)

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


def _add_missing_columns(engine: Engine) -> None:
    """Columns added since a table was created (``expiry``, in 0.2), added to it."""
    present = {c["name"] for c in sa.inspect(engine).get_columns(sessions_table.name)}
    if "expiry" not in present:
        with engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {sessions_table.name} ADD COLUMN expiry INTEGER"))


def _value(row: Any) -> tuple[bytes, int]:
    return bytes(row.value), row.flags
