"""How a request's changes reach the server: one batch at the end of the request.

``Session.save`` hands its pending ``Changes`` here once there are any. A new
session is stored with its record (``store_new``); a stored one gets
a guarded write (``guarded_write``); a session whose node is down keeps its
id and cookie and gives up this request's writes.

Functions over a ``Session``: this module is part of it, split out by
concern, and works on its underscore attributes. ``store_new`` and
``guarded_write`` run their batches on the session's ``Lifecycle``; the
atomic updates (``atomic.py``) are guarded writes too.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING

from . import expiry, flashes, rotation
from .changes import NO_CHANGES, DurableChanges
from .keys import log_token
from .lifecycle import NEW, STORED, UNAVAILABLE
from .plans import WritePlan, new_record_op, undo_ops
from .stores import Delete, Failed, Get, Item, Op, Result, Set

if TYPE_CHECKING:
    from .lifecycle import Lifecycle
    from .session import Session
    from .sql import Writer

log = logging.getLogger("webapp2_sessions")

OnSent = Callable[[str, bool], object]


def save(session: Session, on_sent: OnSent | None) -> None:
    """Write ``session``'s pending changes (there are some) in one batch.

    ``Session.save`` calls ``save_stored`` itself for a session loaded by a
    read before (the usual case).
    """
    server = session._server
    session._ensure_loaded()
    if not session._changes:
        return  # saved while loading (an id rotation carried them over)
    if server.state is UNAVAILABLE:
        # The session's node is down. Its session is still there, and is
        # served again once the node answers: keep the id and the cookie
        # and give up this request's writes, rather than start a new
        # session elsewhere and log the visitor out.
        not_saved(session)
    elif server.state is NEW:
        changes = session._changes

        def body(sid: str) -> list[Op]:
            read = _flashes_read(session)
            return changes.ops(server.keys, sid, session.config, read, server.ttl)

        names = frozenset(changes.written)
        durable = None if server.durable is None else durable_changes(session)
        stored = store_new(server, body, names, bool(changes.flashes), on_sent, durable)
        if stored and changes.flashes_read:
            session._flash_item = None  # read and deleted
        if stored and server.record.expiry is not None:
            server.expiry_changed = True
            expiry.written(server)
        changes.clear()
    else:
        save_stored(session, on_sent)


def store_new(
    life: Lifecycle,
    body: Callable[[str], list[Op]],
    names: frozenset[str],
    flashes: bool,
    on_sent: Callable[[str, bool], object] | None = None,
    changes: DurableChanges | None = None,
) -> bool:
    """Store the record of a new session with ``body(sid)``; say if it was.

    A node found dead makes another id (so another node, in a cluster) be
    tried; an id already taken (122 random bits: practically never) too.
    """
    for _ in range(3):
        sid = life.sid or life.fresh_id()
        life.sid = sid
        record = life.record = life.record.listing(names, flashes)
        ops = [new_record_op(life.keys, sid, record, life.record_ttl), *body(sid)]
        notify = None if on_sent is None else lambda sid=sid: on_sent(sid, True)
        if life.durable is not None:
            outcome = life.durable.store_new(life, ops, changes, notify)
            if outcome == "taken":
                life.sid = None
                continue
            if outcome == "failed":
                return False
            life.state = STORED
            life.cookie_action = "set"
            return True
        results = life.execute(ops, notify)
        if results is None:
            candidate = life.fresh_id()
            if not life.store.available(sid) and life.store.available(candidate):
                life.sid = candidate  # this id's node just failed: try a live one
                continue
            return False
        if results[0] is True:
            life.state = STORED
            life.cookie_action = "set"
            life.report(ops[1:], results[1:])
            return True
        # Refused (out of memory, too large) or the id is taken: take back
        # the variables written beside it, then report or try a new id.
        life.execute(undo_ops(life.keys, sid, ops))
        if isinstance(results[0], Failed):
            life.report(ops[:1], results[:1])
            return False
        life.sid = None
    log.error("session: no free id after 3 attempts; changes not saved")
    return False


def guarded_write(
    life: Lifecycle,
    body: Sequence[Op],
    written: AbstractSet[str],
    deleted: AbstractSet[str],
    new_flashes: bool = False,
    on_sent: Callable[[], object] | None = None,
    changes: DurableChanges | None = None,
) -> Sequence[Result] | None:
    """Run ``body`` on the stored session as a guarded write (``WritePlan``).

    Returns the body's results, or None when nothing was kept: the store
    failed, the session ended meanwhile (the body is undone and a fresh
    session started), or the record refused the new names (undone, and
    reported).
    """
    sid = life.sid
    assert sid is not None
    if life.durable is not None and changes is not None and (changes or life.expiry_changed):
        # A lifetime set alone (``set_expiry``) is the database's too.
        flags = life.config.serializer.flags

        mirrored: list[Op] = []

        def apply(writer: Writer) -> Sequence[Op]:
            flash_list = changes.apply(writer, flags)
            if flash_list is None:
                return body
            key = life.keys.internal(sid, "flashes")
            room = life.config.item_room
            mirrored[:] = flashes.mirrored(body, key, flash_list, life.ttl, room)
            return mirrored

        results = life.durable.write_through(life, apply, written, deleted, new_flashes, on_sent)
        if results is None or not mirrored:
            return results
        # A flash list deleted by its first operation is not found by the next.
        return [
            True if r is False and isinstance(op, Delete) else r
            for op, r in zip(mirrored, results, strict=True)
        ]
    record, cas, record_ttl = life.record, life.record_cas, life.record_ttl
    plan = WritePlan(life.keys, sid, record, cas, body, written, deleted, new_flashes, record_ttl)
    if len(plan.lines) > life.config.item_room:
        # memcached would not only refuse a data block this large: it
        # would delete the record, ending the session.
        life.report([Get(life.keys.record(sid))], [Failed("index over item_size_max")])
        return None
    results = life.execute(plan.ops, on_sent)
    if results is None:
        return None
    outcome = plan.outcome(results)
    if outcome.gone and life.durable is not None:
        # Quick variables only (memcached's alone), and memcached lost the
        # record (evicted, restarted): the session lives on in the database
        # and the next read rebuilds the record from it, without these names.
        life.execute(undo_ops(life.keys, sid, plan.ops))
        life.failed = True
        log.info("session %s: record evicted; quick variables not saved", log_token(sid))
        return None
    # outcome.ended, spelled out: every write with a session's changes runs this.
    if outcome.gone or outcome.dead or outcome.refused is not None or outcome.moved:
        life.execute(undo_ops(life.keys, sid, plan.ops))
        if outcome.moved:
            rotation.write_lost(life)
            return None
        if outcome.refused is not None:
            life.report([Get(life.keys.record(sid))], [outcome.refused])
            return None
        log.info("session %s ended during the request; its writes undone", log_token(sid))
        life.start_fresh()
        return None
    life.record = outcome.record
    if outcome.relist:
        life.execute([Set(life.keys.record(sid), outcome.relist, mode="append")])
    if life.max_age is not None:
        life.cookie_action = "set"  # a write renews a persistent cookie
    return outcome.body


def _flashes_read(session: Session) -> Item | None:
    flash_item = session._flash_item
    return flash_item if isinstance(flash_item, Item) else None


def durable_changes(session: Session) -> DurableChanges | None:
    """What the database must keep of this request's changes (None: no database)."""
    server = session._server
    if server.durable is None:
        return None
    return DurableChanges(session._changes, server.quick, _flashes_read(session))


def save_stored(session: Session, on_sent: OnSent | None) -> None:
    """``save`` for a session known to be stored."""
    server = session._server
    sid = server.sid
    assert sid is not None
    config = session.config
    notify = None
    if on_sent is not None:
        notify = functools.partial(on_sent, sid, server.max_age is not None)
    changes = session._changes
    body = changes.ops(server.keys, sid, config, _flashes_read(session), server.ttl)
    if server.expiry_changed:
        body += expiry.write_ops(server, list(changes.written))
    results = guarded_write(
        server,
        body,
        # Views, not copies: these changes are dropped, never changed, after.
        changes.written.keys(),
        changes.deleted,
        bool(changes.flashes) and not server.record.flashes,
        notify,
        None if server.durable is None else durable_changes(session),
    )
    if results is not None:
        if server.expiry_changed:
            expiry.written(server)
        for result in results:
            if result is not True:  # not the usual all-stored
                server.report(body, results)
                break
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
