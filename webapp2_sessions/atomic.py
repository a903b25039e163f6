"""Atomic updates of one variable, on the server: counters and compare-and-set.

Both run as guarded writes (``saving.guarded_write``), so neither outlives a
logout that races it. Counters are memcached's own: decimal text under the
JSON flags, whatever the serializer, unsigned 64-bit, stopping at 0 going down.

``incr`` and ``update_var`` are ``Session.incr`` and ``Session.update_var``
themselves (the class binds them): they keep the session's cache in step, as
part of the Session split out by concern. The functions below them run the
batches on the ``Lifecycle``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import UpdateConflictError
from .keys import check_name
from .saving import guarded_write
from .serializers import FLAGS_JSON, decode_item
from .stores import Failed, Get, Incr, Item, Op, Set
from .values import MISSING, remember, serialize

if TYPE_CHECKING:
    from .lifecycle import Lifecycle
    from .session import Session
    from .sql import Writer

log = logging.getLogger("webapp2_sessions")

_NONE: frozenset[str] = frozenset()


def incr(session: Session, name: str, delta: int = 1) -> int:
    """Add ``delta`` to an integer variable atomically on the server.

    ``Session.incr``. A missing variable counts as 0. Counters are unsigned,
    as memcached's are: subtracting below zero gives 0. Raises ``TypeError``
    if the variable holds anything but a non-negative int. Runs at once (one
    round trip, after storing a new session) rather than at the end of
    dispatch. Returns the new value, or the cached one if nothing was saved.
    """
    if isinstance(delta, bool) or not isinstance(delta, int):
        raise TypeError("delta must be an int")
    check_name(name)
    if abs(delta) >= 1 << 64:
        raise ValueError("delta must be smaller than 2**64 in size")
    value = increment(session._server, name, delta) if _ready(session) else None
    if value is None:
        cached = session._values.get(name, MISSING)
        return cached if isinstance(cached, int) else 0
    session._values[name] = value
    session._items[name] = Item(b"%d" % value, FLAGS_JSON)  # its stored form: a counter
    return value


def update_var(session: Session, name: str, fn: Callable[[Any], Any], attempts: int = 10) -> Any:
    """Replace the value with ``fn(current)`` by compare-and-set.

    ``Session.update_var``. ``fn`` gets ``None`` when the variable is missing
    and may run more than once. Raises ``UpdateConflictError`` after
    ``attempts`` lost races. Returns the stored value (``None`` if the store
    is unavailable).
    """
    check_name(name)
    server = session._server
    if server.durable is not None and name not in server.quick:
        return _update_durable(session, name, fn)
    values, items = session._values, session._items
    for _ in range(attempts):
        if not _ready(session):
            return None
        answered, item = read(server, name)
        if not answered:
            return None
        values.pop(name, None)
        remember(values, items, session.config.serializer, name, item, server.log_id)
        current = values.get(name, MISSING)
        new = fn(None if current is MISSING else current)
        stored = replace(server, name, item, serialize(session.config, name, new))
        if stored is None:
            return None
        if stored:
            values[name] = new
            items.pop(name, None)
            return new
    raise UpdateConflictError(name, attempts)


def _update_durable(session: Session, name: str, fn: Callable[[Any], Any]) -> Any:
    """``update`` with the database: ``fn`` runs once, on the value the
    database holds, while the session's row is held."""
    if not _ready(session):
        return None
    serializer = session.config.serializer
    new: list[Any] = []

    def compute(current: Item | None) -> bytes:
        value = None
        if current is not None:
            try:
                value = decode_item(serializer, current)
            except ValueError:
                value = None
        new.append(fn(value))
        return serialize(session.config, name, new[-1])

    if not update_durable(session._server, name, compute):
        return None
    session._values[name] = new[-1]
    session._items.pop(name, None)
    return new[-1]


def _ready(session: Session) -> bool:
    """Atomic operations need the session stored: store it now if it is new."""
    session._ensure_loaded()
    server = session._server
    if server.unreachable:
        # Its node is down: the update is not saved, and the session (still
        # there) is neither replaced nor adopted unverified.
        log.debug(
            "session %s: atomic update not saved, %s unavailable", server.log_id(), server.where()
        )
        return False
    if server.is_new:
        session._edit().force = True
    if session._changes:
        session.save()  # pending sets and deletes first, as the handler wrote them
    return server.stored and server.sid is not None


def increment(life: Lifecycle, name: str, delta: int) -> int | None:
    """Add ``delta`` to counter ``name`` (0 if missing); the new value.

    None if nothing was written (store down, session ended meanwhile).
    Raises ``TypeError`` if the variable holds anything but a counter.
    """
    assert life.sid is not None
    ttl = life.ttl
    key = life.keys.variable(life.sid, name)
    if life.durable is not None and name not in life.quick:
        # The database counts (its row held); memcached gets the result.
        counted: list[int] = []

        def count(writer: Writer) -> list[Op]:
            value = writer.increment(name, delta, FLAGS_JSON)
            if value is None:
                raise _not_a_counter(name)
            counted.append(value)
            return [Set(key, b"%d" % value, FLAGS_JSON, ttl)]

        written = life.durable.write_through(life, count, frozenset((name,)), _NONE)
        return None if written is None else counted[0]
    ops: list[Op] = [Set(key, b"0", FLAGS_JSON, ttl, mode="add"), Incr(key, delta, ttl)]
    results = guarded_write(life, ops, frozenset((name,)), _NONE)
    if results is None:
        return None
    value = results[1]
    if isinstance(value, Failed):
        raise _not_a_counter(name)
    return value if isinstance(value, int) else 0


def _not_a_counter(name: str) -> TypeError:
    return TypeError(
        f"session variable {name!r} does not hold a counter "
        "(an int from 0 to 2**64-1 stored as a counter or with the JSON serializer)"
    )


def read(life: Lifecycle, name: str) -> tuple[bool, Item | None]:
    """``(answered, item)``: the variable's stored item, with its CAS token."""
    assert life.sid is not None
    got = life.execute([Get(life.keys.variable(life.sid, name), life.ttl)])
    if got is None:
        return False, None
    return True, got[0] if isinstance(got[0], Item) else None


def replace(life: Lifecycle, name: str, read: Item | None, data: bytes) -> bool | None:
    """Store ``data`` if the variable is still as ``read`` left it (None: absent).

    True if stored, False if another request changed it first, None if
    nothing could be written.
    """
    assert life.sid is not None
    key = life.keys.variable(life.sid, name)
    flags, ttl = life.config.serializer.flags, life.ttl
    if read is None:
        write = Set(key, data, flags, ttl, mode="add")
    else:
        write = Set(key, data, flags, ttl, cas=read.cas)
    results = guarded_write(life, [write], frozenset((name,)), _NONE)
    return None if results is None else results[0] is True


def update_durable(life: Lifecycle, name: str, compute: Callable[[Item | None], bytes]) -> bool:
    """Replace a variable with ``compute(current)``, current as the database has it.

    The session's row is held meanwhile, so no other write slips in and
    ``compute`` runs once. False if nothing was written.
    """
    assert life.sid is not None and life.durable is not None
    key = life.keys.variable(life.sid, name)
    flags, ttl = life.config.serializer.flags, life.ttl

    def replace(writer: Writer) -> list[Op]:
        current = writer.read(name)
        data = compute(None if current is None else Item(*current))
        writer.set({name: data}, flags)
        return [Set(key, data, flags, ttl)]

    return life.durable.write_through(life, replace, frozenset((name,)), _NONE) is not None
