"""The durable tier's two tables, and how a table from an older release catches up.

One row per session and one per variable, the per-variable design all the way
down. A sessions table made before a column existed gets it on first use,
nullable, so nothing already stored has to be rewritten. Imported through
``sql.py``, which checks that SQLAlchemy is installed.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

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
    #: Added to a table made before 0.2 on first use (``create_tables``).
    sa.Column("owner", sa.String(64), index=True),
    #: Seconds the session is remembered for (``set_expiry``); NULL: not.
    sa.Column("expiry", sa.Integer),
    #: When the session's current id was issued (``Record.issued``), if not at
    #: ``created``: the rotation clock, so a rebuilt record is not rotated again.
    sa.Column("issued", sa.Float),
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


def value_of(row: Any) -> tuple[bytes, int]:
    """A variable's row as memcached holds it: (value, flags)."""
    return bytes(row.value), row.flags


def create_tables(engine: Engine) -> None:
    """Create the tables that are missing, and complete a sessions table
    made by an earlier release (``_add_missing_columns``)."""
    _metadata.create_all(engine, checkfirst=True)
    _add_missing_columns(engine)


#: Columns the sessions table gained after 0.1, with their SQL types.
_ADDED_COLUMNS = {"owner": "VARCHAR(64)", "expiry": "INTEGER", "issued": "FLOAT"}


def _add_missing_columns(engine: Engine) -> None:
    """Give a sessions table made by an earlier release the columns added since.

    They are nullable, so every existing session simply has no owner, no
    remembered lifetime and an id issued at its creation. Several processes
    may try at once: whoever loses finds the column (or the index) there.
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
