"""Flash messages: one list per session, kept at ``<id>-!flashes``.

Each flash is one base64 line (so any serializer's bytes fit on a line),
appended by the request that adds it; reading them deletes the list, but only
if nobody appended since (compare-and-set), so a flash added meanwhile is
shown later rather than lost.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from typing import Any

from .keys import KeyScheme, log_token
from .record import FLAGS_FLASHES
from .serializers import Serializer
from .stores import Delete, Item, Op, Set

log = logging.getLogger("webapp2_sessions")

#: A flash as the application gets it: ``(value, level)``.
Flash = tuple[Any, "str | None"]


def encode(data: bytes) -> bytes:
    """The stored line of one flash, from its serialized ``[value, level]``."""
    return base64.b64encode(data) + b"\n"


def decode(
    item: Item | None, pending: Sequence[bytes], serializer: Serializer, session_id: str
) -> list[Flash]:
    """The flashes stored in ``item`` and then ``pending`` ones, oldest first.

    Lines that are not ours (foreign flags, bad base64, another serializer's
    bytes) are skipped and logged.
    """
    lines: list[bytes] = []
    if item is not None and item.flags == FLAGS_FLASHES:
        lines += item.value.split(b"\n")
    for chunk in pending:  # a chunk may be a whole stored list (after regeneration)
        lines += chunk.split(b"\n")
    out: list[Flash] = []
    for line in lines:
        if not line.strip():
            continue
        try:
            value, level = serializer.loads(base64.b64decode(line.strip(), validate=True))
            out.append((value, level))
        except (ValueError, TypeError):
            log.warning("session %s: unreadable flash ignored", log_token(session_id))
    return out


def write_ops(
    keys: KeyScheme,
    session_id: str,
    taken: Item | None,
    new: Sequence[bytes],
    ttl: int,
    room: int,
) -> list[Op]:
    """Delete the flashes this request read (``taken``) and append ``new``."""
    key = keys.internal(session_id, "flashes")
    ops: list[Op] = []
    if taken is not None:
        # Only the flashes we read: one appended meanwhile keeps the key alive.
        ops.append(Delete(key, cas=taken.cas or None))
    if new:
        lines = b"".join(new)
        if len(lines) > room:
            # Sent, memcached would refuse it and delete the flashes stored:
            # the newest go until the rest fits (the first may be a list
            # carried to a new id, never shown yet).
            kept = list(new)
            size = len(lines)
            while kept and size > room:
                size -= len(kept.pop())
            log.error(
                "session %s: %d new flash(es) not saved: %d bytes, over item_size_max",
                log_token(session_id),
                len(new) - len(kept),
                len(lines),
            )
            if not kept:
                return ops
            lines = b"".join(kept)
        ops.append(Set(key, b"", FLAGS_FLASHES, ttl, mode="add"))
        ops.append(Set(key, lines, mode="append"))
    return ops


def mirrored(ops: Sequence[Op], key: str, value: bytes, ttl: int, room: int) -> list[Op]:
    """``ops`` with each one on the flash list ``key`` replaced by a copy of
    ``value``, the database's list read under the session's lock (the durable
    tier): appending to what memcached holds would lose the flashes it no
    longer has (expired, evicted) and keep ones the database took out."""
    put: Op = Set(key, value, FLAGS_FLASHES, ttl) if value and len(value) <= room else Delete(key)
    return [put if op.key == key else op for op in ops]
