"""The durable tier: every session in a SQL database, behind memcached.

memcached stays the cache every read goes to; the database is what survives a
restart, an eviction or a dead node. One row per session and one per variable
(the per-variable design all the way down), on SQLAlchemy Core 2.x, so any of
its dialects works: SQLite embedded, PostgreSQL for many app servers.

Every write is a transaction that starts by touching the session's own row:
that locks it (PostgreSQL) or the database (SQLite), so writes to one session
are applied one at a time in both tiers, and a write after a logout finds no
row and changes nothing. A variable is written with one upsert where the
dialect has one (SQLite, PostgreSQL); on PostgreSQL the renewal and the first
upsert are a single statement. Install with ``pip install webapp2-sessions[sql]``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
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
    #: The SHA-256 (hex) of the session's owner (``owners.py``), or NULL.
    #: Added to a table made before 0.2 on first use (``Database``).
    sa.Column("owner", sa.String(64), index=True),
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
        _s.c.owner,
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


@dataclass(frozen=True)
class _Upserts:
    """A dialect's statements that write a variable in one go."""

    #: Insert, or replace the value and flags of an existing row.
    upsert: sa.Insert
    #: ``upsert`` of one variable that first renews the session's row (as
    #: ``_RENEW``) and writes nothing if it has none; None where a statement
    #: cannot do both.
    renew_and_upsert: sa.Insert | None


def _upserts(dialect: sa.Dialect) -> _Upserts | None:
    """The upserts of ``dialect``, or None: it writes with a delete and an insert."""
    key = [_v.c.session_id, _v.c.name]
    if dialect.name == "sqlite":
        # ON CONFLICT ... DO UPDATE came with SQLite 3.24.
        if getattr(dialect.dbapi, "sqlite_version_info", (0,)) < (3, 24):
            return None
        from sqlalchemy.dialects import sqlite

        lite = sqlite.insert(_v)
        return _Upserts(
            lite.on_conflict_do_update(
                index_elements=key,
                set_={"value": lite.excluded.value, "flags": lite.excluded.flags},
            ),
            None,
        )
    if dialect.name != "postgresql":
        return None
    from sqlalchemy.dialects import postgresql

    upsert = postgresql.insert(_v)
    # WITH renewed AS (UPDATE ... RETURNING id) INSERT ... SELECT FROM renewed:
    # no session row, no variable row; the UPDATE locks the row as _RENEW does.
    renewed = _RENEW.returning(_s.c.id).cte("renewed")
    combined = postgresql.insert(_v).from_select(
        ["session_id", "name", "value", "flags"],
        sa.select(
            renewed.c.id,
            sa.bindparam("name", type_=_v.c.name.type),
            sa.bindparam("value", type_=_v.c.value.type),
            sa.bindparam("flags", type_=_v.c.flags.type),
        ),
    )
    return _Upserts(
        upsert.on_conflict_do_update(
            index_elements=key,
            set_={"value": upsert.excluded.value, "flags": upsert.excluded.flags},
        ),
        combined.add_cte(renewed)
        .on_conflict_do_update(
            index_elements=key,
            set_={"value": combined.excluded.value, "flags": combined.excluded.flags},
        )
        # An INSERT's rowcount is kept only when asked for: 0 means no session row.
        .execution_options(preserve_rowcount=True),
    )


class _Prepared:
    """A statement compiled once for one dialect, run with ``exec_driver_sql``.

    The SQL text, the parameter order and the type conversions are SQLAlchemy's
    own; what is saved is its per-call work (the compiled-cache lookup and the
    execution context of a compiled statement), which costs more than running
    a small statement. ``before_cursor_execute`` listeners see these calls too.
    """

    def __init__(
        self, statement: sa.Insert | sa.Update | sa.Delete | sa.Select[Any], dialect: sa.Dialect
    ) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        #: Parameter names in placeholder order; None where the driver takes a dict.
        self.order = compiled.positiontup
        self.convert: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if convert is not None:
                self.convert[name] = convert
        # An INSERT's or a text statement's rowcount is kept only when asked for.
        self.options = {**statement.get_execution_options(), "preserve_rowcount": True}

    def run(self, conn: Connection, params: Mapping[str, Any]) -> sa.CursorResult[Any]:
        return conn.exec_driver_sql(self.sql, self._args(params), self.options)

    def run_many(
        self, conn: Connection, params: Iterable[Mapping[str, Any]]
    ) -> sa.CursorResult[Any]:
        return conn.exec_driver_sql(self.sql, [self._args(p) for p in params], self.options)

    def _args(self, params: Mapping[str, Any]) -> Any:
        convert = self.convert
        if convert:
            params = {k: convert[k](v) if k in convert else v for k, v in params.items()}
        order = self.order
        return params if order is None else tuple(params[k] for k in order)


class _Statements:
    """The statements of the write path, prepared for one engine's dialect."""

    def __init__(self, dialect: sa.Dialect) -> None:
        self.renew = _Prepared(_RENEW, dialect)
        self.insert_session = _Prepared(_INSERT_SESSION, dialect)
        self.insert_variable = _Prepared(_INSERT_VARIABLE, dialect)
        self.delete_variable = _Prepared(_DELETE_VARIABLE, dialect)
        self.read_variable = _Prepared(_READ_VARIABLE, dialect)
        upserts = _upserts(dialect)
        #: None: the dialect replaces a variable with a delete and an insert.
        self.upsert = None if upserts is None else _Prepared(upserts.upsert, dialect)
        self.renew_and_upsert = (
            None
            if upserts is None or upserts.renew_and_upsert is None
            else _Prepared(upserts.renew_and_upsert, dialect)
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
    #: The SHA-256 (hex) of the session's owner, or None.
    owner: str | None = None
    #: Seconds the session is remembered for (``set_expiry``), or None.
    expiry: int | None = None


class SessionGone(Exception):
    """The session has no row: it was logged out, or expired and purged."""


class Database:
    """The durable tier's connection to one database.

    ``source`` is a SQLAlchemy URL or ``Engine``. Tables are created on first
    use; a sessions table made by an earlier version gets the columns added
    since (``owner`` with its index, ``expiry``), nullable. A database that
    fails is logged once and skipped for ``dead_retry`` seconds, like a
    memcached node; its failures surface as ``SessionUnavailableError``.
    """

    def __init__(self, source: str | Engine, *, dead_retry: float = 10.0) -> None:
        self.engine = sa.create_engine(source) if isinstance(source, str) else source
        self.dead_retry = dead_retry
        self._statements = _Statements(self.engine.dialect)
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
            first.created,
            first.expires,
            first.user_agent,
            first.remote_addr,
            owner=first.owner,
            expiry=first.expiry,
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
            self._statements.insert_session.run(
                conn,
                {
                    "id": session_id,
                    "created": stored.created,
                    "expires": stored.expires,
                    "user_agent": stored.user_agent,
                    "remote_addr": stored.remote_addr,
                    "owner": stored.owner,
                    "expiry": stored.expiry,
                },
            )
            yield Writer(conn, session_id, self._statements, fresh=True)

    @contextmanager
    def update(self, session_id: str, expires: float) -> Iterator[Writer]:
        """A transaction on a stored session; ``SessionGone`` if it has no row.

        It begins by renewing the session's expiry, which locks its row, so
        writes to one session are serialized and a logout cannot slip in.
        The renewal runs with the writer's first statement (in it, where the
        dialect allows), and at the latest on ``Writer.hold()`` or on leaving
        the block: ``SessionGone`` may come from any of them.
        """
        with self._connect(write=True) as conn:
            writer = Writer(conn, session_id, self._statements, renew=expires)
            yield writer
            writer.hold()

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
            # The session's row first: that waits for a write holding it, so the
            # variables' delete then sees every row that write added.
            gone = conn.execute(sa.delete(sessions_table).where(sessions_table.c.id == session_id))
            conn.execute(
                sa.delete(variables_table).where(variables_table.c.session_id == session_id)
            )
            return gone.rowcount > 0

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

    def __init__(
        self,
        conn: Connection,
        session_id: str,
        statements: _Statements,
        *,
        fresh: bool = False,
        renew: float | None = None,
    ) -> None:
        self._conn = conn
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
                self._conn, {"sid": self._sid, "expires": self._renew}
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
                self._conn,
                {"sid": sid, "expires": self._renew, "name": name, "value": data, "flags": flags},
            )
            self._renew = None
            if done.rowcount == 0:
                raise SessionGone(sid)
            return
        self.hold()
        statements.upsert.run_many(
            self._conn,
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
                self._conn, [{"sid": sid, "var": n} for n in replaced]
            )
        if self._fresh:
            self._inserted.update(values)
        self._statements.insert_variable.run_many(
            self._conn,
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
            self.hold()
            self._statements.delete_variable.run_many(self._conn, params)

    def read(self, name: str) -> tuple[bytes, int] | None:
        """The variable's value as this transaction sees it (its row is ours)."""
        self.hold()
        found = self._statements.read_variable.run(self._conn, {"sid": self._sid, "var": name})
        row = found.first()
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


#: Columns the sessions table gained after 0.1, with their SQL types.
_ADDED_COLUMNS = {"owner": "VARCHAR(64)", "expiry": "INTEGER"}


def _add_missing_columns(engine: Engine) -> None:
    """Give a sessions table made by an earlier release the columns added since.

    They are nullable, so every existing session simply has no owner and no
    remembered lifetime. Several processes may try at once: whoever loses
    finds the column (or the index) there.
    """
    table = sessions_table

    def present() -> set[str]:
        return {c["name"] for c in sa.inspect(engine).get_columns(table.name)}

    for name, sql_type in _ADDED_COLUMNS.items():
        if name in present():
            continue
        log.warning("table %s: adding the column %r", table.name, name)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {name} {sql_type}"))
        except sa.exc.SQLAlchemyError:
            if name not in present():
                raise
    for index in table.indexes:
        try:
            with engine.begin() as conn:
                index.create(conn, checkfirst=True)
        except sa.exc.SQLAlchemyError:
            if index.name not in {i["name"] for i in sa.inspect(engine).get_indexes(table.name)}:
                raise


def _value(row: Any) -> tuple[bytes, int]:
    return bytes(row.value), row.flags
