"""How a session ends, or moves to a new id: logout, and regeneration.

Functions over a request's ``Lifecycle`` (and, for ``regenerate``, over the
``Session`` whose cache it carries to the new id). A logout marks the record dead and
then deletes everything it ever listed; if the node cannot be reached, the
store keeps the deletion (``Store.defer``). A regeneration claims the old
session with the same mark, copies it under a new id, and yields to a logout
that raced it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .errors import SessionUnavailableError
from .keys import KeyScheme, log_token
from .loading import fetch, fetch_flashes
from .plans import deletion_ops, mark_batch, merged
from .record import Record, parse_or_none
from .stores import Get, Item, Op, Result, Store
from .values import MISSING, stored_form

if TYPE_CHECKING:
    from .lifecycle import Lifecycle
    from .session import Session

log = logging.getLogger("webapp2_sessions")


def destroy(life: Lifecycle) -> None:
    """Delete the session on the server (a logout) and expire the cookie.

    If its node cannot be reached, the deletion is left to the store to
    complete when the node answers again (``Store.defer``).
    """
    if life.sid is not None and life.may_exist():
        delete_everything(life, life.sid, life.record)
    elif life.ending is not None:
        # Marked by a regeneration under way: deleting it makes that
        # regeneration undo its copy.
        delete_everything(life, life.ending, Record(created=0.0))
    life.cookie_action = "delete"
    life.start_fresh()


def delete_everything(life: Lifecycle, sid: str, record: Record, hops: int = 0) -> None:
    """Mark the session dead, then delete the record and every variable.

    Two round trips, however busy the session: the mark and the read of
    the names share a batch (see ``plans.mark_batch``). With the database
    tier, its rows go first, so nothing can be read back from it afterwards.
    An id rotated away meanwhile points to the session's new id: that one is
    ended too (two more round trips), so a logout holds under either id.
    """
    if life.durable is not None and not _delete_durable(life, sid):
        return
    batch = mark_batch(life.keys, sid)

    def delete_listed(results: Sequence[Result]) -> list[Op]:
        latest = parse_or_none(batch.read(results).one("record"))
        return deletion_ops(life.keys, sid, merged(record, latest))

    results = execute_or_defer(life, sid, batch.ops, record, then=delete_listed)
    if results is not None:
        execute_or_defer(life, sid, delete_listed(results), record)
        latest = parse_or_none(batch.read(results).one("record"))
        if latest is not None and latest.to is not None and hops < 3:
            delete_everything(life, latest.to, Record(created=0.0), hops + 1)


def execute_or_defer(
    life: Lifecycle,
    sid: str,
    ops: Sequence[Op],
    record: Record,
    then: Callable[[Sequence[Result]], Sequence[Op]] | None = None,
) -> list[Result] | None:
    """Run part of a deletion; if the store fails, leave the rest to it.

    The store runs ``ops`` (and ``then``'s second step) once the node answers.
    Without ``then``, the record and the variables known here are deleted,
    which ends the session: without its record it cannot be loaded again.
    """
    try:
        return life.store.execute(sid, ops)
    except SessionUnavailableError:
        life.failed = True
        if then is None:
            life.store.defer(sid, deletion_ops(life.keys, sid, record))
        else:
            life.store.defer(sid, ops, then)
        log.error(
            "session %s: could not be deleted now (%s unavailable); "
            "deleting it when the node answers again",
            log_token(sid),
            life.store.describe(sid),
        )
        if life.config.strict and life.durable is None:
            raise
        return None


def _delete_durable(life: Lifecycle, sid: str) -> bool:
    """Delete the session's rows; False if the database cannot. Then it is
    marked dead in memcached, so it reads as ended there, and the database
    owes the deletion (``Database.owes``): this process reads it as gone and
    deletes the rows once the database answers."""
    assert life.durable is not None
    settled = functools.partial(mark_dead, life.store, life.keys, sid)
    try:
        life.durable.database.delete(sid, settled=settled)
        return True
    except SessionUnavailableError:
        life.failed = True
        log.error(
            "session %s: %s unavailable, its rows deleted when it answers; "
            "marked dead in memcached",
            log_token(sid),
            life.durable.database.describe(),
        )
        mark_dead(life.store, life.keys, sid)
        if life.config.strict:
            raise
        return False


def mark_dead(store: Store, keys: KeyScheme, sid: str) -> None:
    """Append the logout mark to the session's record, now or once its node
    answers: a record memcached holds (or gets back from a refill) then
    reads as ended. The durable tier's part of a logout its database owes."""
    ops = mark_batch(keys, sid).ops
    try:
        store.execute(sid, ops)
    except SessionUnavailableError:
        store.defer(sid, ops)


def claim(life: Lifecycle) -> Record | None:
    """Mark the stored session dead, so it can move to a new id.

    From here on a write to it in another request undoes itlife. Returns
    the record as it stands (with names other requests added), or None
    if the session cannot move: the store failed (logged; nothing else
    changes), or another request is ending it (then this one starts
    afresh, logged out).
    """
    old = life.sid
    assert old is not None
    batch = mark_batch(life.keys, old)
    results = life.execute(batch.ops)
    if results is None:
        log.error("session %s: id not regenerated, %s unavailable", life.log_id(), life.where())
        return None
    got = batch.read(results)
    latest = parse_or_none(got.one("record")) if got.one("mark") is True else None
    if latest is None or latest.dead != 1:
        ended_by_another(life, old)
        return None
    return latest


def finish_move(life: Lifecycle, old: str, claimed: Record) -> bool:
    """After the copy under the new id: keep it, or undo it; say which.

    A logout that completed while the variables were copied deleted the
    old record (or marked it again): the copy must not outlive it.
    """
    new = life.sid
    if new is None or not life.stored:
        # Not copied (logged by store_new): the old id ends all the same.
        if life.durable is None or _delete_durable(life, old):
            execute_or_defer(life, old, deletion_ops(life.keys, old, claimed), claimed)
        return False
    raced = False
    if life.durable is not None:
        # With the database, a logout deletes the rows first: none left
        # means one got there before this move finished.
        try:
            raced = not life.durable.database.delete(old)
        except SessionUnavailableError:
            raced = True  # cannot tell: the logout wins
    if not raced:
        check = life.execute([Get(life.keys.record(old))], sid=old)
        current = parse_or_none(check[0]) if check else None
        # Gone: a logout, or (with the database, which said otherwise) an eviction.
        raced = life.durable is None if current is None else current.dead != 1
    if raced:
        if life.durable is not None:
            _delete_durable(life, new)
        execute_or_defer(life, new, deletion_ops(life.keys, new, life.record), life.record)
        ended_by_another(life, old)
        return False
    execute_or_defer(life, old, deletion_ops(life.keys, old, claimed), claimed)
    log.info("session %s regenerated as %s", log_token(old), life.log_id())
    if life.record.owner is not None and life.durable is None:
        from .owners import list_moved  # owners builds on this module

        list_moved(life)
    return True


def ended_by_another(life: Lifecycle, sid: str) -> None:
    log.info("session %s: ended by another request; not regenerated", log_token(sid))
    life.cookie_action = "delete"
    life.start_fresh()


def regenerate(session: Session) -> None:
    """Move every variable to a new id; the old id is dead from now on.

    ``Session.regenerate_id``. A logout of the old id in a concurrent
    request wins: if one began before this regeneration claimed the
    session, or completed while it copied the variables, the copy is undone
    and the session starts afresh. Two regenerations racing end the same way.
    """
    session._ensure_loaded()
    server = session._server
    if server.unreachable:
        log.error(
            "session %s: id not regenerated, %s unavailable", server.log_id(), server.where()
        )
        return
    if not server.stored:
        server.sid = server.fresh_id()
        return
    old = server.sid
    assert old is not None
    claimed = claim(server)
    if claimed is None:
        session._changes.clear()
        return
    try:
        copy(session, claimed)
    except SessionUnavailableError:  # strict mode: the copy could not be stored
        session._changes.clear()
        server.sid = None  # not copied: the old id ends all the same
        finish_move(server, old, claimed)
        raise
    finish_move(server, old, claimed)


def copy(session: Session, claimed: Record, new: str | None = None) -> None:
    """Store every variable of the claimed session under a new id (``new``,
    or one picked as it is stored), with this request's changes."""
    server = session._server
    values, items = session._values, session._items
    # Every listed name this request did not write or delete itself is read
    # again, now that the claim stops other writers (each undoes itself from
    # here on): a value read earlier in this request may have been replaced
    # since by a write that was told it was saved.
    own = session._changes.written.keys() | session._changes.deleted
    fetch(session, sorted(claimed.names - own))
    if claimed.flashes and session._flash_item is MISSING:
        session._flash_item = fetch_flashes(server, listed=True)
    changes = session._edit()
    value_flags = session.config.serializer.flags
    for name in sorted(claimed.names - changes.written.keys() - changes.deleted):
        data = stored_form(values, items, name, session.config)
        if data is not None:
            changes.written[name] = data
            item = items.get(name)
            if item is not None and item.flags != value_flags:
                changes.raw[name] = item.flags  # a counter, say: copied as it is
    if isinstance(session._flash_item, Item) and not changes.flashes_read:
        changes.flashes.insert(0, session._flash_item.value)
    changes.deleted.clear()
    changes.flashes_read = False
    changes.force = True
    session._flash_item = MISSING
    items.clear()
    # The absolute timeout still counts from the session's creation.
    server.move_to_new_id(claimed, new)
    session.save()
