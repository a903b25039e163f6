"""memcached kept in line with the durable tier's database, as pure functions.

What the database returned becomes what memcached would have held: the
session's record, the results of a load batch, and the ``add`` operations
that put both back without overwriting anything newer. A write that memcached
did not see becomes the deletes that keep it from serving what the write
replaced. No I/O: ``durable.py`` runs these operations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .keys import KeyScheme
from .record import FLAGS_FLASHES, FLAGS_RECORD, Record
from .sql import FLASHES, StoredSession
from .stores import Delete, Item, Op, Set


def record_of(stored: StoredSession) -> Record:
    """The memcached record of a session read back from the database."""
    names = frozenset(n for n in stored.variables if n != FLASHES)
    flashes = FLASHES in stored.variables
    return Record(
        created=stored.created,
        user_agent=stored.user_agent,
        remote_addr=stored.remote_addr,
        names=names,
        listed_ever=names,
        flashes=flashes,
        lines=len(names) + flashes,
        owner=stored.owner,
        expiry=stored.expiry,
        issued=stored.issued or 0.0,
    )


def refill_ops(
    keys: KeyScheme,
    session_id: str,
    record: Record | None,
    values: Mapping[str, tuple[bytes, int]],
    ttls: tuple[int, int],
) -> list[Op]:
    """Put what the database returned back into memcached, without
    overwriting anything newer there (``add`` only). ``ttls``: the
    session's (variables, record) TTLs."""
    ttl, record_ttl = ttls
    ops: list[Op] = []
    if record is not None:
        ops.append(Set(keys.record(session_id), record.encode(), FLAGS_RECORD, record_ttl, "add"))
    for name, (value, flags) in values.items():
        key = (
            keys.internal(session_id, "flashes")
            if name == FLASHES
            else keys.variable(session_id, name)
        )
        ops.append(Set(key, value, flags, ttl, "add"))
    return ops


def results_from(
    record: Record, names: Sequence[str], stored: Mapping[str, tuple[bytes, int]], flashes: bool
) -> list[Item | None]:
    """What a load batch would have returned, built from the database's rows."""
    out: list[Item | None] = [Item(record.encode(), FLAGS_RECORD)]
    for name in names:
        found = stored.get(name)
        out.append(None if found is None else Item(found[0], found[1]))
    if flashes:
        found = stored.get(FLASHES)
        out.append(None if found is None else Item(found[0], FLAGS_FLASHES))
    return out


def invalidation(keys: KeyScheme, session_id: str, ops: Sequence[Op]) -> list[Op]:
    """Deletes of the record and of every key ``ops`` wrote."""
    record_key = keys.record(session_id)
    touched = {op.key for op in ops if isinstance(op, (Set, Delete)) and op.key != record_key}
    return [Delete(record_key), *(Delete(key) for key in sorted(touched))]
