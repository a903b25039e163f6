"""Atomic updates of one variable, on the server: counters and compare-and-set.

Both run as guarded writes (``Lifecycle.write``), so neither outlives a logout
that races it. Counters are memcached's own: decimal text under the JSON
flags, whatever the serializer, unsigned 64-bit, stopping at 0 going down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .serializers import FLAGS_JSON
from .stores import Failed, Get, Incr, Item, Op, Set

if TYPE_CHECKING:
    from .lifecycle import Lifecycle

_NONE: frozenset[str] = frozenset()


def increment(life: Lifecycle, name: str, delta: int) -> int | None:
    """Add ``delta`` to counter ``name`` (0 if missing); the new value.

    None if nothing was written (store down, session ended meanwhile).
    Raises ``TypeError`` if the variable holds anything but a counter.
    """
    assert life.sid is not None
    ttl = life.config.ttl
    key = life.keys.variable(life.sid, name)
    ops: list[Op] = [Set(key, b"0", FLAGS_JSON, ttl, mode="add"), Incr(key, delta, ttl)]
    results = life.write(ops, frozenset((name,)), _NONE)
    if results is None:
        return None
    counted = results[1]
    if isinstance(counted, Failed):
        raise TypeError(
            f"session variable {name!r} does not hold a counter "
            "(an int from 0 to 2**64-1 stored as a counter or with the JSON serializer)"
        )
    return counted if isinstance(counted, int) else 0


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
