"""The durable tier's hot statements: built once, compiled once per dialect.

Building a SQLAlchemy statement costs more than running a small one, and so
does the per-call work of executing a compiled one (the compiled-cache
lookup, the execution context, the result object), and a request's write
transaction pays it on every statement. The statements a request writes
with are therefore built at import, compiled once per engine
(``Statements``) and run on the driver's own cursor (``Prepared``), in a
transaction ``sql.Database`` opens on a connection of the engine's pool. A
variable is written with one upsert where the dialect has one (SQLite,
PostgreSQL); on PostgreSQL the renewal and the first upsert are a single
statement. Imported through ``sql.py``, which checks that SQLAlchemy is
installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

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
#: ``LOAD`` with the session's row held until the transaction ends
#: (``Database.load_held``; SQLite ignores it and is locked whole instead).
_LOAD_HELD = LOAD.with_for_update(read=True, of=_s)
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
_REMEMBER = (
    sa.update(_s).where(_s.c.id == sa.bindparam("sid")).values(expiry=sa.bindparam("expiry"))
)
#: A read-only visitor's renewal: never moves an expiry back.
_TOUCH = (
    sa.update(_s)
    .where(_s.c.id == sa.bindparam("sid"), _s.c.expires < sa.bindparam("expires"))
    .values(expires=sa.bindparam("expires"))
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
        # The INSERT's rowcount: 0 means no session row.
        combined.add_cte(renewed).on_conflict_do_update(
            index_elements=key,
            set_={"value": combined.excluded.value, "flags": combined.excluded.flags},
        ),
    )


class Prepared:
    """A statement compiled once for one dialect, run on a DBAPI cursor.

    The SQL text, the parameter order and the type conversions are SQLAlchemy's
    own; what is saved is its per-call work, which costs more than running a
    small statement. The price: SQLAlchemy's ``before_cursor_execute`` and
    ``after_cursor_execute`` listeners do not see these statements (the pool's
    ``connect`` and ``checkout`` events still run).
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
        #: (name, conversion or None) in placeholder order, for positional drivers.
        self._positional = (
            None if self.order is None else [(k, self.convert.get(k)) for k in self.order]
        )

    def run(self, cursor: Any, params: Mapping[str, Any]) -> Any:
        """Run on ``cursor`` (a DBAPI cursor); returns it, for ``rowcount`` or rows."""
        cursor.execute(self.sql, self._args(params))
        return cursor

    def run_many(self, cursor: Any, params: Iterable[Mapping[str, Any]]) -> Any:
        cursor.executemany(self.sql, [self._args(p) for p in params])
        return cursor

    def _args(self, params: Mapping[str, Any]) -> Any:
        positional = self._positional
        if positional is not None:
            return tuple(params[k] if c is None else c(params[k]) for k, c in positional)
        convert = self.convert
        if convert:
            return {k: convert[k](v) if k in convert else v for k, v in params.items()}
        return params


class Statements:
    """The statements of the write path, prepared for one engine's dialect."""

    def __init__(self, dialect: sa.Dialect) -> None:
        self.renew = Prepared(_RENEW, dialect)
        self.load_held = Prepared(_LOAD_HELD, dialect)
        self.insert_session = Prepared(_INSERT_SESSION, dialect)
        self.insert_variable = Prepared(_INSERT_VARIABLE, dialect)
        self.delete_variable = Prepared(_DELETE_VARIABLE, dialect)
        self.read_variable = Prepared(_READ_VARIABLE, dialect)
        self.remember = Prepared(_REMEMBER, dialect)
        self.touch = Prepared(_TOUCH, dialect)
        upserts = _upserts(dialect)
        #: None: the dialect replaces a variable with a delete and an insert.
        self.upsert = None if upserts is None else Prepared(upserts.upsert, dialect)
        self.renew_and_upsert = (
            None
            if upserts is None or upserts.renew_and_upsert is None
            else Prepared(upserts.renew_and_upsert, dialect)
        )
