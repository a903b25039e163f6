"""Sign out everywhere: sessions tied to an owner.

``Session.set_owner(owner)`` ties a session to an owner (a user id, say).
Nothing keeps the owner's text: it is hashed (SHA-256, hex) first, and the
hash is what the session record says (a ``{"o": ...}`` line, ``record.py``)
and what a key is built from.

On memcached alone the owner's sessions are listed in an index item, whose
key, lifetime and format are ``owner_index.py``; this module runs it against
the store: listing a session (``add``), compacting, renewing it from the
requests of owned sessions, and reading the listed records. With the
database tier the session's row holds the owner's hash (an indexed column)
and no index is kept: the database lists an owner's sessions.

Ending an owner's sessions is ``revocation.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .config import SessionConfig
from .errors import SessionUnavailableError
from .keys import KeyScheme, key_scheme
from .memcache import MemcacheStore
from .owner_index import (
    FLAGS_INDEX,
    Index,
    compact_limit,
    grown,
    index_key,
    index_ttl,
    owned_by,
    parse_index,
    route,
)
from .record import owner_line, parse_or_none
from .runtime import Renewals
from .stores import Batch, Delete, Get, MemoryStore, Op, Result, Set, Store

if TYPE_CHECKING:
    from .lifecycle import Lifecycle

log = logging.getLogger("webapp2_sessions")

#: Sessions whose last index renewal this process remembers.
RENEWALS_REMEMBERED = 10_000


def owner_hash(owner: object) -> str:
    """The SHA-256 (hex) of ``owner``: all that is kept of it.

    Raises ``TypeError`` unless ``owner`` is a ``str``, ``ValueError`` if it
    is empty.
    """
    if not isinstance(owner, str):
        raise TypeError(f"owner must be a str (a user id, say), not {type(owner).__name__}")
    if not owner:
        raise ValueError("owner must not be empty")
    return hashlib.sha256(owner.encode("utf-8", "surrogatepass")).hexdigest()


# --------------------------------------------------------------------------- the index


def add(store: Store, config: SessionConfig, digest: str, sid: str) -> bool:
    """List ``sid`` in the owner's index, renewing the index; say if it is.

    One round trip (append, or create if absent, and read back), one more
    read of the listed records per node and a rewrite when the index has
    grown enough to be compacted. Raises ``SessionUnavailableError`` if the
    index's node does not answer.
    """
    keys = key_scheme(config.key_prefix)
    key = index_key(keys, digest)
    ttl = index_ttl(config)
    line = sid.encode("ascii") + b"\n"
    ops: list[Op] = [
        Set(key, line, mode="append"),
        Set(key, b"#0\n" + line, FLAGS_INDEX, ttl, "add"),
        Get(key, ttl),
    ]
    for _ in range(3):
        results = store.execute(route(digest), ops)
        index = parse_index(results[2])
        if index is None:
            continue  # deleted between the writes and the read: again
        listed = (results[0] is True or results[1] is True) and not index.foreign
        if listed and not grown(index, config):
            return True
        # Refused (too large) or grown: compact, with sid in it.
        if compact(store, config, digest, index, extra=sid) or listed:
            return True
    return False


def compact(
    store: Store, config: SessionConfig, digest: str, index: Index, extra: str | None = None
) -> bool:
    """Rewrite the index with only its live sessions of this owner (and ``extra``).

    A compare-and-set: False (nothing written) if the index changed since it
    was read. Ids whose node does not answer are kept.
    """
    keys = key_scheme(config.key_prefix)
    records = read_records(store, keys, index.ids)
    keep = [s for s in index.ids if s not in records or owned_by(records[s], digest)]
    if extra is not None and extra not in keep:
        keep.append(extra)
    limit = compact_limit(config)
    if len(keep) > limit:
        log.warning(
            "owner index %s: %d live sessions, only the newest %d kept (item_size_max)",
            digest[:12],
            len(keep),
            limit,
        )
        keep = keep[-limit:]
    value = b"#%d\n" % len(keep) + b"".join(s.encode("ascii") + b"\n" for s in keep)
    op = Set(index_key(keys, digest), value, FLAGS_INDEX, index_ttl(config), cas=index.cas)
    return store.execute(route(digest), [op])[0] is True


def read_records(store: Store, keys: KeyScheme, ids: Sequence[str]) -> dict[str, Result]:
    """The records of ``ids``, read without renewing them: one batch per node.

    Ids whose node does not answer are left out.
    """
    found: dict[str, Result] = {}
    for group in _by_node(store, ids):
        try:
            results = store.execute(group[0], [Get(keys.record(s)) for s in group])
        except SessionUnavailableError:
            continue
        found.update(zip(group, results, strict=True))
    return found


def _by_node(store: Store, ids: Sequence[str]) -> list[list[str]]:
    """``ids`` grouped by the node that holds them (each alone if that is unknown)."""
    if isinstance(store, MemoryStore):
        return [list(ids)] if ids else []
    if not isinstance(store, MemcacheStore):
        return [[s] for s in ids]
    groups: dict[str, list[str]] = {}
    for sid in ids:
        groups.setdefault(store.node_for(sid), []).append(sid)
    return list(groups.values())


_renewals = Renewals(RENEWALS_REMEMBERED)


# --------------------------------------------------------------------------- a request's part


def renew_if_due(life: Lifecycle) -> None:
    """Renew the index of an owned session's owner, once per half idle window.

    Called when an owned session is loaded (memcached alone). One round trip
    when due, and one more if the index no longer lists the session (evicted,
    say): it is listed again. A node that does not answer costs the request
    nothing but the wait; the next request tries again.
    """
    sid, digest = life.sid, life.record.owner
    assert sid is not None and digest is not None
    config = life.config
    if not _renewals.take(sid, config.record_ttl / 2):
        return
    store = life.store
    try:
        got = store.execute(route(digest), [Get(index_key(life.keys, digest), index_ttl(config))])
        index = parse_index(got[0])
        if index is None or index.foreign or sid not in index.ids:
            add(store, config, digest, sid)
    except SessionUnavailableError:
        _renewals.forget(sid)


def tie(life: Lifecycle, digest: str) -> None:
    """Make the stored session of ``life`` the owner ``digest``'s.

    memcached alone: one round trip to append the owner line to the record,
    one to list the session in the index (see ``add``). With the database:
    one statement, then the record's round trip, and one more (a delete of
    the record, deferred if memcached does not answer) when memcached did not
    take the owner line. An owner already set to ``digest`` costs nothing.
    """
    sid = life.sid
    if not life.stored or sid is None:
        log.error("session %s: owner not set, the session is not stored", life.log_id())
        return
    record = life.record
    if record.owner == digest:
        return
    durable = life.durable
    if durable is not None:
        try:
            if not durable.database.set_owner(sid, digest):
                _not_tied(life, "ended, or moved to another id,")
                return
        except SessionUnavailableError:
            life.failed = True
            where = durable.database.describe()
            log.error("session %s: owner not set, %s unavailable", life.log_id(), where)
            if life.config.strict:
                raise
            return
    from .rotation import moving_away  # rotation builds on this module

    # The record is read back with the append: a move (regeneration or
    # rotation) or a logout that claimed it first copies, or ends, it
    # without this owner line.
    key = life.keys.record(sid)
    batch = Batch()
    batch.add("owner", Set(key, owner_line(digest), mode="append"))
    batch.add("record", Get(key))
    results = life.execute(batch.ops) if durable is None else life.cache(batch.ops)
    appended = results is not None and batch.read(results).one("owner") is True
    if results is not None and appended:
        latest = parse_or_none(batch.read(results).one("record"))
        if latest is None or latest.dead or moving_away(latest, life.clock()):
            _not_tied(life, "ending, or moving to another id,")
            return
    if durable is None:
        if not appended:
            if results is not None:
                _not_tied(life, "ended")
            return
    elif not appended:
        _forget_cached_record(life, sid, deferred=results is None)
    life.record = dataclasses.replace(record, owner=digest, lines=record.lines + 1)
    if durable is None:
        _list(life, digest, sid)


def _not_tied(life: Lifecycle, why: str) -> None:
    """The owner could not be set: the session was ``why``; reported as a
    write not saved (``available`` is False)."""
    life.failed = True
    log.info("session %s: %s before its owner was set", life.log_id(), why)


def _forget_cached_record(life: Lifecycle, sid: str, *, deferred: bool) -> None:
    """Delete memcached's record of ``sid``, whose owner line did not land there.

    The database has the owner; a record without it, served once memcached
    answers again, would be copied ownerless by the next regeneration or
    rotation, and a revocation (which asks the database) would miss that
    session. Without the record, the next read rebuilds it from the row,
    owner included. ``deferred``: memcached did not answer, so the store
    runs the delete when the node answers again, before anything else it
    sends there (as ``DurableTier.write_through`` does for a write).
    """
    ops: list[Op] = [Delete(life.keys.record(sid))]
    if deferred or life.cache(ops) is None:
        life.store.defer(sid, ops)


def list_moved(life: Lifecycle) -> None:
    """List a regenerated session's new id in its owner's index (one round trip)."""
    assert life.sid is not None and life.record.owner is not None
    _list(life, life.record.owner, life.sid)


def _list(life: Lifecycle, digest: str, sid: str) -> None:
    try:
        add(life.store, life.config, digest, sid)
    except SessionUnavailableError as exc:
        # The session is owned all the same: a later request lists it.
        log.error("session %s: not listed for its owner yet (%s)", life.log_id(), exc)
        _renewals.forget(sid)
        if life.config.strict:
            raise
        return
    _renewals.take(sid, 0)  # just renewed


__all__ = ["owner_hash"]
