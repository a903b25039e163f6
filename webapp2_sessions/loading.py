"""How a request's session is read: one batch for the record and the names
it is known to read, then one more for any name read later.

Functions over a ``Session``, which calls them once it needs the server:
this module is part of it, split out by concern, and fills its cache (its
underscore attributes). ``Lifecycle.load`` decides whether the record is
adopted; this module decodes what came back with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .stores import Item, Result
from .values import MISSING, take

if TYPE_CHECKING:
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
    """Read ``names`` of a stored session (none of them cached yet)."""
    server = session._server
    if not names or server.sid is None:
        return
    results = server.fetch(names)
    if results is None:
        for name in names:
            session._values[name] = MISSING  # unreadable now, not lost
    else:
        # Names this request wrote are cached, so never fetched: any name
        # here that the record lists should have had a value.
        _decode(session, names, results)


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
    if lost:
        session._lost = session._lost | lost
