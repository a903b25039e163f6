"""Atomic updates of one variable, on the server: counters and compare-and-set.

Both run as guarded writes (``Lifecycle.write``), so neither outlives a logout
that races it. Counters are memcached's own: decimal text under the JSON
flags, whatever the serializer, unsigned 64-bit, stopping at 0 going down.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .serializers import FLAGS_JSON
from .stores import Failed, Get, Incr, Item, Op, Set

if TYPE_CHECKING:
    from .lifecycle import Lifecycle
    from .sql import Writer

_NONE: frozenset[str] = frozenset()


def increment(life: Lifecycle, name: str, delta: int) -> int | None:
    """Add ``delta`` to counter ``name`` (0 if missing); the new value.

    None if nothing was written (store down, session ended meanwhile).
    Raises ``TypeError`` if the variable holds anything but a counter.
    """
    assert life.sid is not None
    ttl = life.config.ttl
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
    results = life.write(ops, frozenset((name,)), _NONE)
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
    got = life.execute([Get(life.keys.variable(life.sid, name), life.config.ttl)])
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
    flags, ttl = life.config.serializer.flags, life.config.ttl
    if read is None:
        write = Set(key, data, flags, ttl, mode="add")
    else:
        write = Set(key, data, flags, ttl, cas=read.cas)
    results = life.write([write], frozenset((name,)), _NONE)
    return None if results is None else results[0] is True


def update_durable(life: Lifecycle, name: str, compute: Callable[[Item | None], bytes]) -> bool:
    """Replace a variable with ``compute(current)``, current as the database has it.

    The session's row is held meanwhile, so no other write slips in and
    ``compute`` runs once. False if nothing was written.
    """
    assert life.sid is not None and life.durable is not None
    key = life.keys.variable(life.sid, name)
    flags, ttl = life.config.serializer.flags, life.config.ttl

    def replace(writer: Writer) -> list[Op]:
        current = writer.read(name)
        data = compute(None if current is None else Item(*current))
        writer.set({name: data}, flags)
        return [Set(key, data, flags, ttl)]

    return life.durable.write_through(life, replace, frozenset((name,)), _NONE) is not None
