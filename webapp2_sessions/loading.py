"""How a request's session is read: one batch for the record and the names
it is known to read, then one more for any name read later.

Functions over a ``Session``, which calls them once it needs the server:
this module is part of it, split out by concern, and fills its cache (its
underscore attributes). ``Lifecycle.load`` decides whether the record is
adopted; this module decodes what came back with it, and reads what comes
later (names not fetched with the record, the flash list).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .stores import Get, Item, Op, Result
from .values import MISSING, take

if TYPE_CHECKING:
    from .lifecycle import Lifecycle
    from .session import Session


def load(session: Session, extra: Iterable[str]) -> None:
    """Read the record with the prefetched names, ``extra`` and the required ones."""
    server = session._server
    ahead = session.prefetch.current
    required = session.required
    wanted: Sequence[str] = ahead.ordered
    if required or not ahead.names.issuperset(extra):
        wanted = sorted(ahead.names.union(extra, required))
    values = session._values
    if values:  # written before the first read: nothing to fetch for those
        wanted = [n for n in wanted if n not in values]
    loaded = server.load(wanted, ahead.flashes)
    if loaded is None:
        return
    plan, results = loaded
    if plan.flashes >= 0:
        flash_item = results[plan.flashes]
        session._flash_item = flash_item if isinstance(flash_item, Item) else None
    _decode(session, wanted, results[plan.values])
    missing = required & session._lost if required else None
    if missing:
        server.end(
            "required variable(s) evicted or expired: "
            + ", ".join(repr(n)[:40] for n in sorted(missing))
        )
    elif session.config.rotate_after is not None:
        from . import rotation  # not at the top: rotation needs transitions, which needs us

        if rotation.due(server):
            rotation.rotate(session)


def fetch(session: Session, names: Sequence[str]) -> None:
    """Read ``names`` of a stored session, renewing their TTLs; a name already
    cached is read again, and its cached value replaced."""
    server = session._server
    sid = server.sid
    if not names or sid is None:
        return
    ops: list[Op] = [Get(key, server.ttl) for key in server.keys.variables(sid, names)]
    results: list[Result] | None
    if server.durable is None:
        results = server.execute(ops)
    else:
        results = server.cache(ops) or [None] * len(ops)
        server.durable.fill(server, names, results)
    if results is None:
        for name in names:
            session._values[name] = MISSING  # unreadable now, not lost
    else:
        # Names this request wrote are cached, so never fetched: any name
        # here that the record lists should have had a value.
        _decode(session, names, results)


def fetch_flashes(life: Lifecycle, listed: bool = False) -> Item | None:
    """The stored flash list, if the record lists one (or ``listed``)."""
    if life.sid is None or not (life.stored and (listed or life.record.flashes)):
        return None
    ops: list[Op] = [Get(life.keys.internal(life.sid, "flashes"), life.ttl)]
    got = life.execute(ops) if life.durable is None else life.cache(ops)
    if got is not None and isinstance(got[0], Item):
        return got[0]
    return life.durable.fetch_flashes(life) if life.durable is not None else None


def _decode(session: Session, names: Sequence[str], results: Sequence[Result]) -> None:
    server = session._server
    lost = take(
        session._values,
        session._items,
        session.config.serializer,
        names,
        results,
        server.record.names,
        server.log_id,
    )
    if lost and server.unread:
        lost = lost - server.unread  # the database could not say: not known lost
    if lost:
        session._lost = session._lost | lost
