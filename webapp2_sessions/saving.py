"""How a request's changes reach the server: one batch at the end of the request.

``Session.save`` hands its pending ``Changes`` here once there are any. A new
session is stored with its record (``Lifecycle.store_new``); a stored one gets
a guarded write (``Lifecycle.write``); a session whose node is down keeps its
id and cookie and gives up this request's writes.

Functions over a ``Session``: this module is part of it, split out by
concern, and works on its underscore attributes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .changes import NO_CHANGES, DurableChanges
from .lifecycle import NEW, UNAVAILABLE
from .stores import Item, Op

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger("webapp2_sessions")

OnSent = Callable[[str, bool], object]


def save(session: Session, on_sent: OnSent | None) -> None:
    """Write ``session``'s pending changes (there are some) in one batch."""
    session._ensure_loaded()
    server = session._server
    if server.state is UNAVAILABLE:
        # The session's node is down. Its session is still there, and is
        # served again once the node answers: keep the id and the cookie
        # and give up this request's writes, rather than start a new
        # session elsewhere and log the visitor out.
        not_saved(session)
    elif server.state is NEW:
        changes = session._changes

        def body(sid: str) -> list[Op]:
            return changes.ops(server.keys, sid, session.config, _flashes_read(session))

        names = frozenset(changes.written)
        durable = durable_changes(session)
        stored = server.store_new(body, names, bool(changes.flashes), on_sent, durable)
        if stored and changes.flashes_read:
            session._flash_item = None  # read and deleted
        changes.clear()
    else:
        _save_stored(session, on_sent)


def _flashes_read(session: Session) -> Item | None:
    flash_item = session._flash_item
    return flash_item if isinstance(flash_item, Item) else None


def durable_changes(session: Session) -> DurableChanges | None:
    """What the database must keep of this request's changes (None: no database)."""
    server = session._server
    if server.durable is None:
        return None
    return DurableChanges(session._changes, server.quick, _flashes_read(session))


def _save_stored(session: Session, on_sent: OnSent | None) -> None:
    server = session._server
    sid = server.sid
    assert sid is not None
    config = session.config
    notify = None
    if on_sent is not None:
        notify = functools.partial(on_sent, sid, config.cookie_args.max_age is not None)
    changes = session._changes
    body = changes.ops(server.keys, sid, config, _flashes_read(session))
    results = server.write(
        body,
        frozenset(changes.written),
        frozenset(changes.deleted),
        bool(changes.flashes) and not server.record.flashes,
        notify,
        None if server.durable is None else durable_changes(session),
    )
    if results is not None:
        if results.count(True) != len(results):  # not the usual all-stored
            server.report(body, results)
        if changes.flashes_read:
            session._flash_item = None  # read and deleted
    elif server.failed:
        not_saved(session)
    session._changes = NO_CHANGES


def not_saved(session: Session) -> None:
    """Drop the pending changes: the session's node cannot be reached."""
    # The outage itself is logged once, by the store, with the node's
    # address; a line per request would flood the log while it lasts.
    server = session._server
    log.debug(
        "session %s: %d change(s) not saved, %s unavailable",
        server.log_id(),
        len(session._changes),
        server.where(),
    )
    session._changes.clear()
