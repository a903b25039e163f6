"""Automatic id rotation (``rotate_after``): an old id is replaced, with a grace.

The record says when its id was issued (``Record.issued_at``), so a request
knows the id's age from the record it loads anyway: with rotation off, or an
id younger than ``rotate_after``, nothing is spent. The first request that
finds the id older moves the session to a new id, as a regeneration does
(``transitions``: claim, copy, finish), with two differences:

- the claim is a ``moving`` mark naming the new id, not a logout mark. Two
  requests rotating at once both append one; the first mark wins and the
  other request keeps serving the old id (its next request follows);
- the old record is not deleted: it is replaced, by compare-and-set, with a
  pointer to the new id that lives ``rotate_grace`` seconds. A request
  arriving with the old cookie meanwhile is served the new session and given
  its cookie (one more round trip); after the grace the old id opens nothing:
  the pointer says when it was left, as a load renews its TTL like any record's.
  The compare-and-set fails if a logout marked the old record after the
  claim: the copy is then undone. A logout that finds the pointer ends the
  new id too (``transitions.delete_everything``).

An owned session's new id is listed in its owner's index, as after a
regeneration, so "sign out everywhere" finds it. The pointer names no owner:
``destroy_other_sessions`` from the new id would otherwise end the pointer,
and with it (following ``to``) the very session it keeps.

Cost, on the rotating request only: the claim, reading the variables this
request had not read yet (none if it read them all), storing the copy, the
pointer and deleting the old variables: four round trips, or five (one more
SQL transaction with the ``database`` tier, which deletes the old rows), and
one to list an owned session's new id (memcached alone).

Writes that race a rotation (sent with the old id while the mark or the
pointer is in place) are undone and reported not saved, as when the store is
unavailable; the session itself is kept. With the ``database`` tier such a
write finds the old rows deleted: memcached's record tells it from a logout
(``rotated_away``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import owners
from .errors import SessionUnavailableError
from .keys import log_token
from .plans import LoadPlan, deletion_ops
from .record import FLAGS_RECORD, Record, parse_or_none
from .stores import Batch, Get, Item, Result, Set
from .transitions import _delete_durable, copy, ended_by_another, execute_or_defer

if TYPE_CHECKING:
    from .lifecycle import Lifecycle
    from .session import Session

log = logging.getLogger("webapp2_sessions")

#: Seconds a rotation's mark is honoured: one older belongs to a rotation
#: that failed half-way, and the next rotation goes ahead regardless.
MOVE_WINDOW = 30.0
#: Pointers followed in one request at most (old ids rotated twice in a grace).
MAX_HOPS = 3
#: Compare-and-set attempts to put the pointer in place.
ATTEMPTS = 5


def moving_line(new_id: str, now: float) -> bytes:
    """The mark an id rotation appends to claim the record (``new_id`` is ours)."""
    return b'{"!":"moving","to":"%s","t":%.3f}\n' % (new_id.encode("ascii"), now)


def pointer_record(created: float, new_id: str, now: float) -> bytes:
    """What an old id's record becomes after a rotation: where the session went,
    and since when (``"i"``, the new id's issue; ``pointer_live`` reads it)."""
    return b'{"v":1,"c":%.3f,"i":%.3f,"to":"%s"}\n' % (created, now, new_id.encode("ascii"))


def pointer_live(life: Lifecycle, pointer: Record) -> bool:
    """True while ``pointer`` (an old id's record) is within ``rotate_grace``.

    Its TTL alone cannot say: a load batch renews the record it reads to the
    record's TTL, pointer or not, so an old cookie used during the grace
    would keep its pointer, and the session, open for as long as it is used.
    """
    return life.clock() - pointer.issued_at <= life.config.rotate_grace


def issued_at(session: Session) -> float:
    """When ``session``'s current id was issued (Unix time); its age counts from it."""
    session._ensure_loaded()
    return session._server.record.issued_at


def due(life: Lifecycle) -> bool:
    """True if the loaded session's id is older than ``rotate_after``.

    Never while the database serves the session because memcached is down:
    a rotation claims the record in memcached, and failing there would
    report (in strict mode, raise) an outage the database tier hides.
    """
    after = life.config.rotate_after
    return (
        after is not None and life.clock() - life.record.issued_at >= after and not life.cache_down
    )


def rotate(session: Session) -> None:
    """Move ``session`` to a new id, leaving a pointer under the old one."""
    life = session._server
    old = life.sid
    assert old is not None
    new = life.fresh_id()
    claimed = _claim(life, new)
    if claimed is None:
        return
    record, cas = claimed
    try:
        copy(session, record, new)
    except SessionUnavailableError:  # strict mode; a rotation nobody asked for never raises
        session._changes.clear()
        life.sid = None
    if life.sid is None or not life.stored:
        _not_copied(life, old, record, cas)
        return
    moved = _leave_pointer(life, old, record, cas)
    # Listed, or "sign out everywhere" misses the new id; the database lists
    # an owner's sessions by its column.
    if moved and life.record.owner is not None and life.durable is None:
        owners.list_moved(life)


def _claim(life: Lifecycle, new: str) -> tuple[Record, int] | None:
    """Append our moving mark and read the record back; ours if first.

    None if the session stays where it is this request: the store failed,
    another request is rotating it (or has), or it is ending (then this
    request starts afresh, as a regeneration would).
    """
    old = life.sid
    assert old is not None
    key = life.keys.record(old)
    now = life.clock()
    batch = Batch()
    batch.add("mark", Set(key, moving_line(new, now), mode="append"))
    batch.add("record", Get(key))
    results = life.execute(batch.ops)
    if results is None:
        log.error("session %s: id not rotated, %s unavailable", life.log_id(), life.where())
        return None
    got = batch.read(results)
    item = got.one("record")
    latest = parse_or_none(item) if got.one("mark") is True else None
    if latest is None or latest.dead:
        ended_by_another(life, old)
        return None
    recent = [to for to, when in latest.moving if when >= now - MOVE_WINDOW]
    if latest.to is not None or not recent or recent[0] != new:
        return None  # another request's rotation: its pointer serves the next request
    assert isinstance(item, Item)
    return latest, item.cas


def _not_copied(life: Lifecycle, old: str, claimed: Record, cas: int) -> None:
    """The copy was not stored: stay on the old id, and take the mark back
    unless the record changed since (then it lapses after MOVE_WINDOW)."""
    key = life.keys.record(old)
    life.execute([Set(key, claimed.encode(), FLAGS_RECORD, life.record_ttl, cas=cas)], sid=old)
    log.error("session %s: id not rotated, the copy could not be stored", log_token(old))
    life.sid = old
    life.adopted(claimed, 0)
    life.cookie_action = None


def _leave_pointer(life: Lifecycle, old: str, claimed: Record, cas: int) -> bool:
    """Replace the old record with a pointer to the new id, unless a logout
    came first; then delete the old variables. False if the move was undone."""
    new = life.sid
    assert new is not None
    if life.durable is not None:
        try:
            gone = not life.durable.database.delete(old)
        except SessionUnavailableError:
            gone = True  # cannot tell: a logout wins
        if gone:
            _undo(life, old)
            return False
    key = life.keys.record(old)
    grace = life.config.rotate_grace
    for _ in range(ATTEMPTS):
        pointer = pointer_record(claimed.created, new, life.clock())
        put = Set(key, pointer, FLAGS_RECORD, grace, cas=cas)
        results = life.execute([put], sid=old)
        if results is None:
            break  # the old node failed: the old id is deleted once it answers
        if results[0] is True:
            execute_or_defer(life, old, deletion_ops(life.keys, old, claimed)[1:], claimed)
            log.info("session %s rotated to %s", log_token(old), life.log_id())
            return True
        # Changed since the claim: names a racing write appended (it undoes
        # itself), another rotation's mark, or a logout.
        got = life.execute([Get(key)], sid=old)
        current = got[0] if got else None
        latest = parse_or_none(current)
        if latest is None or latest.dead or not isinstance(current, Item):
            _undo(life, old)
            return False
        cas = current.cas
    execute_or_defer(life, old, deletion_ops(life.keys, old, claimed), claimed)
    log.info("session %s rotated to %s; old id deleted", log_token(old), life.log_id())
    return True


def _undo(life: Lifecycle, old: str) -> None:
    """A logout of the old id won: the new id must not outlive it."""
    new = life.sid
    assert new is not None
    if life.durable is not None:
        _delete_durable(life, new)
    execute_or_defer(life, new, deletion_ops(life.keys, new, life.record), life.record)
    ended_by_another(life, old)


def follow(
    life: Lifecycle, names: Sequence[str], flashes: bool
) -> tuple[LoadPlan, Sequence[Result]] | None:
    """Load the session an old id points to; the response sets its cookie."""
    target = life.forward
    assert target is not None
    life.forward = None
    if life.hops >= MAX_HOPS:
        life.start_fresh()
        return None
    life.hops += 1
    log.debug("session %s: rotated; following to %s", life.log_id(), log_token(target))
    life.sid = target
    loaded = life.load(names, flashes)
    if life.stored:
        life.cookie_action = "set"
    return loaded


def rotated_away(life: Lifecycle, sid: str) -> bool:
    """True if memcached shows ``sid`` rotated away (a pointer) or being
    rotated (a recent moving mark): one round trip.

    For a write that found the session's row gone (the ``database`` tier): a
    rotation deletes the old id's rows before it leaves the pointer, so a
    write sent with the old id meanwhile or after finds no row, as after a
    logout, though the session lives on under the new id.
    """
    got = life.cache([Get(life.keys.record(sid))], sid=sid)
    latest = parse_or_none(got[0]) if got else None
    if latest is None or latest.dead:
        return False
    return moving_away(latest, life.clock())


def moving_away(record: Record, now: float) -> bool:
    """Whether ``record`` shows its id rotated away (a pointer) or being
    rotated (a moving mark younger than ``MOVE_WINDOW``)."""
    since = now - MOVE_WINDOW
    return record.to is not None or any(when >= since for _, when in record.moving)


def write_lost(life: Lifecycle) -> None:
    """A write found the id being rotated away: it was undone; keep the session."""
    log.info("session %s: id rotating; this request's writes not saved", life.log_id())
    life.failed = True
