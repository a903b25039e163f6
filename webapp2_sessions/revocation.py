"""Sign out everywhere: ending an owner's sessions, from a request or from anywhere.

``destroy_other_sessions()`` ends every session of the session's owner but
its own (and the ids it moved to); ``revoke_sessions(app, owner)`` and the
``revoke`` command end them all. The owner's sessions are found as
``owners.py`` lists them (the index on memcached alone, the sessions table's
column with the database), each is ended only if its own record names that
owner, and ending one is a logout (``transitions.delete_everything``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

from . import transitions
from .config import CONFIG_KEY, SessionConfig
from .errors import SessionUnavailableError
from .keys import key_scheme
from .owner_index import FLAGS_INDEX, index_key, index_ttl, parse_index, route, to_revoke
from .owners import owner_hash, read_records
from .record import Record, parse_or_none
from .runtime import Runtime, runtime_for
from .stores import Delete, Get, Op, Set, Store

if TYPE_CHECKING:
    from .durable import DurableTier
    from .lifecycle import Lifecycle

log = logging.getLogger("webapp2_sessions")

_BLANK = Record(created=0.0)


def end_others(life: Lifecycle) -> int:
    """End every other session of the owner of ``life``'s session; how many.

    0 for a session without an owner (or not stored).
    """
    digest = life.record.owner
    if not life.stored or digest is None:
        return 0
    assert life.sid is not None
    keep = {life.sid} | _moved_to(life, life.sid)
    return revoke(
        life.config, life.store, life.durable, digest, keep=keep, strict=life.config.strict
    )


def _moved_to(life: Lifecycle, sid: str) -> set[str]:
    """The ids session ``sid`` moved, or is moving, to, as its record in
    memcached shows them now (one round trip): another request may have
    rotated it since this one loaded it, and those ids are still this
    visitor's session."""
    try:
        got = life.store.execute(sid, [Get(life.keys.record(sid))])
    except SessionUnavailableError:
        return set()
    latest = parse_or_none(got[0])
    if latest is None:
        return set()
    moved = {to for to, _ in latest.moving}
    if latest.to is not None:
        moved.add(latest.to)
    return moved


def revoke(
    config: SessionConfig,
    store: Store,
    durable: DurableTier | None,
    digest: str,
    *,
    keep: AbstractSet[str] = frozenset(),
    strict: bool = True,
) -> int:
    """End every session of the owner ``digest`` but those in ``keep``; how many it ended.

    Each is ended as a logout ends it, one whose id is being regenerated
    too (the regeneration then undoes its copy). Round trips, memcached
    alone: one to read the index, one per node to read the listed records,
    two per session ended, one to rewrite the index. With the database: one query, then per
    session its rows deleted and two round trips, then the query again, until it
    lists no id not yet ended (a regeneration that finished meanwhile; three at most).

    When a server does not answer, what can be done is done (a session whose
    node is down is ended when the node answers again, as a logout is), and
    then, if ``strict``, ``SessionUnavailableError`` is raised; otherwise it
    is logged.
    """
    from .lifecycle import NO_CLIENT, Lifecycle

    lenient = dataclasses.replace(config, strict=False) if config.strict else config
    ended = failed = 0

    def end(sid: str, record: Record) -> bool:
        life = Lifecycle(lenient, store, sid, NO_CLIENT, time.time, _nothing, durable)
        transitions.delete_everything(life, sid, record)
        return not life.failed

    try:
        if durable is not None:
            now = time.time()
            handled = set(keep)
            for _ in range(3):  # again for ids listed meanwhile (a regeneration done)
                todo = [(s, e) for s, e in durable.database.owned(digest) if s not in handled]
                if not todo:
                    break
                for sid, expires in todo:
                    handled.add(sid)
                    if end(sid, _BLANK):
                        ended += expires >= now
                    else:
                        failed += 1
        else:
            ended, failed = _revoke_listed(config, store, digest, keep, end)
    except SessionUnavailableError:
        if strict:
            raise
        log.error("owner %s: sessions not ended, a server is unavailable", digest[:12])
        return ended
    if failed:
        message = f"{failed} session(s) of the owner not ended yet (a server did not answer)"
        if strict:
            raise SessionUnavailableError(message)
        log.error("owner %s: %s", digest[:12], message)
    return ended


def _revoke_listed(
    config: SessionConfig,
    store: Store,
    digest: str,
    keep: AbstractSet[str],
    end: Callable[[str, Record], bool],
) -> tuple[int, int]:
    """``revoke`` on memcached alone: (ended, failed)."""
    keys = key_scheme(config.key_prefix)
    key = index_key(keys, digest)
    handled = set(keep)
    ended = failed = 0
    for _ in range(3):  # again if sessions were listed meanwhile
        index = parse_index(store.execute(route(digest), [Get(key)])[0])
        if index is None:
            break
        todo = [s for s in index.ids if s not in handled]
        records = read_records(store, keys, todo)
        unreachable = []
        for sid in todo:
            handled.add(sid)
            if sid not in records:
                unreachable.append(sid)
                end(sid, _BLANK)  # deferred until its node answers
                failed += 1
                continue
            # A record a regeneration has claimed is ended too: the
            # regeneration then finds it gone and undoes its copy, as it does
            # for a logout, instead of listing its new id in an index this
            # revocation has already rewritten.
            record = to_revoke(records[sid], digest)
            if record is None:
                continue
            if end(sid, record):
                ended += 1
            else:
                failed += 1
        # The session kept stays listed (it is this owner's), and so do those
        # whose ending waits for their node.
        left = sorted(keep) + unreachable
        op: Op = Delete(key, cas=index.cas)
        if left:
            value = b"#%d\n" % len(left) + b"".join(s.encode("ascii") + b"\n" for s in left)
            op = Set(key, value, FLAGS_INDEX, index_ttl(config), cas=index.cas)
        if store.execute(route(digest), [op])[0] is True:
            break
    return ended, failed


def _nothing() -> None:
    """Ending another session has no request view of it to reset."""


def revoke_sessions(app: Any, owner: str, *, settings: Mapping[str, Any] | None = None) -> int:
    """End every session of ``owner``, from anywhere; returns how many it ended.

    ``app`` is the ``webapp2.WSGIApplication`` (its
    ``app.config['webapp2_sessions']``, with ``settings`` over it as a
    handler's ``session_settings`` would be) or a ``SessionMiddleware``.
    For a password change, say, or an administrator. Each session is ended
    exactly as a logout ends it. Raises ``TypeError``/``ValueError`` for a
    bad ``owner`` and ``SessionUnavailableError`` when a server did not
    answer (the sessions it could reach are ended; call it again).
    """
    digest = owner_hash(owner)
    runtime = _runtime_of(app, settings)
    return revoke(runtime.config, runtime.store, runtime.durable, digest, strict=True)


def _runtime_of(app: Any, settings: Mapping[str, Any] | None) -> Runtime:
    runtime = getattr(app, "runtime", None)
    if isinstance(runtime, Runtime):  # a SessionMiddleware
        return runtime
    registry = getattr(app, "registry", None)
    config = getattr(app, "config", None)
    if not isinstance(registry, dict) or not isinstance(config, Mapping):
        raise TypeError(
            "app must be a webapp2.WSGIApplication or a SessionMiddleware, "
            f"not {type(app).__name__}"
        )
    return runtime_for(registry, config.get(CONFIG_KEY), dict(settings or {}))


__all__ = ["revoke", "revoke_sessions"]
