"""The durable tier's hot statements: built once, compiled once per dialect.

Building a SQLAlchemy statement costs more than running a small one, and so
does the per-call work of executing a compiled one; the statements a request
runs are therefore built at import, compiled once per engine (``Statements``)
and run with ``exec_driver_sql``. A variable is written with one upsert where
the dialect has one (SQLite, PostgreSQL); on PostgreSQL the renewal and the
first upsert are a single statement. Imported through ``sql.py``, which checks
that SQLAlchemy is installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .sql_schema import sessions_table, variables_table

_s, _v = sessions_table, variables_table
#: A session and every variable, in one query (``Database.load``).
LOAD = (
    sa.select(
        _s.c.created,
        _s.c.expires,
        _s.c.user_agent,
        _s.c.remote_addr,
        _s.c.owner,
        _s.c.expiry,
        _s.c.issued,
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


class Prepared:
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


class Statements:
    """The statements of the write path, prepared for one engine's dialect."""

    def __init__(self, dialect: sa.Dialect) -> None:
        self.renew = Prepared(_RENEW, dialect)
        self.insert_session = Prepared(_INSERT_SESSION, dialect)
        self.insert_variable = Prepared(_INSERT_VARIABLE, dialect)
        self.delete_variable = Prepared(_DELETE_VARIABLE, dialect)
        self.read_variable = Prepared(_READ_VARIABLE, dialect)
        upserts = _upserts(dialect)
        #: None: the dialect replaces a variable with a delete and an insert.
        self.upsert = None if upserts is None else Prepared(upserts.upsert, dialect)
        self.renew_and_upsert = (
            None
            if upserts is None or upserts.renew_and_upsert is None
            else Prepared(upserts.renew_and_upsert, dialect)
        )
