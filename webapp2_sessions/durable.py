"""The durable tier's rules, shared by every request of an application.

What stays in memcached and what goes to the database (``sql.Database``):
reads stay on memcached, and a session or variable missing there is read back
from the database and put back with ``add`` (never over a newer value);
writes go to the database first, in a transaction that holds the session's
row while the memcached batch runs, so both tiers apply one session's writes
in the same order. Kept apart from ``lifecycle.py`` so that a session without
a database never meets any of it; the memcached operations it runs for the
database's sake are built, without I/O, in ``refill.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING

from . import expiry, rotation
from .changes import DurableChanges
from .config import SessionConfig
from .errors import SessionUnavailableError
from .plans import LoadPlan, WritePlan, undo_ops
from .record import FLAGS_FLASHES, Record
from .refill import invalidation, record_of, refill_ops, results_from
from .runtime import Renewals
from .sql import (
    FLASHES,
    RENEWAL_SHARE,
    Database,
    RollBack,
    SessionGone,
    StoredSession,
    Writer,
)
from .stores import Delete, Item, Op, Result, Set

if TYPE_CHECKING:
    from .lifecycle import Lifecycle

log = logging.getLogger("webapp2_sessions")

#: Sessions whose last renewal in the database this process remembers.
TOUCHES_REMEMBERED = 10_000


class DurableTier:
    """The database behind memcached, with this process's bookkeeping."""

    def __init__(self, database: Database, config: SessionConfig) -> None:
        self.database = database
        self.config = config
        #: When this process last renewed each session's row (bounded).
        self._touched = Renewals(TOUCHES_REMEMBERED)

    def expires(self, created: float, now: float, record_ttl: int | None = None) -> float:
        """When a session renewed ``now`` ends: idle window (the session's own,
        ``record_ttl``, if it has one), or absolute timeout."""
        config = self.config
        end = now + (config.record_ttl if record_ttl is None else record_ttl)
        if config.absolute_timeout:
            end = min(end, created + config.absolute_timeout)
        return end

    def stored(self, record: Record, now: float, record_ttl: int | None = None) -> StoredSession:
        return StoredSession(
            record.created,
            self.expires(record.created, now, record_ttl),
            record.user_agent,
            record.remote_addr,
            owner=record.owner,
            expiry=record.expiry,
            issued=record.issued or None,
        )

    def touch_if_due(self, session_id: str, created: float, record_ttl: int) -> None:
        """Renew a session that is only being read, at most once per half window.

        The database sees only writes; without this a visitor who reads for
        longer than the idle window would be purged there while memcached
        still serves them.
        """
        if not self._touched.take(session_id, record_ttl * RENEWAL_SHARE):
            return
        try:
            self.database.touch(session_id, self.expires(created, time.time(), record_ttl))
        except SessionUnavailableError:
            self._touched.forget(session_id)

    def noted_write(self, session_id: str) -> None:
        """A write renewed the session in the database: no touch needed soon."""
        self._touched.note(session_id)

    # ------------------------------------------------------------------ a request's part

    def load(
        self, life: Lifecycle, plan: LoadPlan, names: Sequence[str]
    ) -> tuple[LoadPlan, Sequence[Result]] | None:
        """``Lifecycle.load`` with the database behind memcached."""
        assert life.sid is not None
        sid = life.sid
        if self.database.owes(sid):
            # Logged out while the database failed: its rows are deleted once
            # it answers, and until then this process must not read them back.
            life.start_fresh()
            return None
        try:  # life.cache(), inline: every returning visitor's request runs this
            results: list[Result] | None = life.store.execute(sid, plan.ops)
        except SessionUnavailableError:
            life.cache_down = True
            results = None
        if results is not None:
            item = results[LoadPlan.RECORD]
            if isinstance(item, Item):
                if not life.adopt(sid, item):
                    return None
                record = life.record
                record_ttl = life.record_ttl
                if record.expiry is not None:
                    record_ttl = max(record_ttl, record.expiry)
                self.touch_if_due(sid, record.created, record_ttl)
                values = results[plan.values]
                for value in values:  # not `None in values`: no Item.__eq__ calls
                    if value is None:
                        self.fill(life, names, values)
                        results[plan.values] = values
                        break
                if plan.flashes >= 0 and results[plan.flashes] is None and record.flashes:
                    results[plan.flashes] = self.fetch_flashes(life)  # gone from memcached
                return plan, results
        refilled: Record | None = None
        try:
            if life.cache_down:
                # Nothing can be put back in memcached: no row to hold.
                stored = self.database.load(sid, time.time())
            else:
                # The row is held while memcached gets the session back, so a
                # logout or a write meanwhile comes after the refill, never
                # between the read and it (``Database.load_held``).
                with self.database.load_held(sid, time.time()) as stored:
                    if stored is not None:
                        refilled = record_of(stored)
                        if life.end_reason(refilled) is None:
                            ttls = expiry.ttls(life.config, refilled.expiry)
                            life.cache(
                                refill_ops(life.keys, sid, refilled, stored.variables, ttls)
                            )
        except SessionUnavailableError:
            life.unavailable()
            return None
        if stored is None:
            life.start_fresh()  # never issued, logged out, or expired
            return None
        record = refilled or record_of(stored)
        reason = life.end_reason(record)
        if reason is not None:
            life.end(reason, record)
            return None
        life.adopted(record, 0)
        return plan, results_from(record, names, stored.variables, plan.flashes >= 0)

    def fill(self, life: Lifecycle, names: Sequence[str], values: list[Result]) -> None:
        """Read listed variables memcached no longer has back from the database.

        If the database fails, those names are unread this request
        (``life.unread``), not lost, and the session is not available.
        """
        assert life.sid is not None
        listed = life.record.names
        missing = [n for n, r in zip(names, values, strict=True) if r is None and n in listed]
        if not missing:
            return
        try:
            found = self.database.load_variables(life.sid, missing)
        except SessionUnavailableError:
            life.failed = True
            life.unread = life.unread.union(missing)
            if life.config.strict:
                raise
            return
        for index, name in enumerate(names):
            if name in found:
                values[index] = Item(*found[name])
        if found and not life.cache_down:
            # The session's own lifetime, if remembered: this runs before the
            # load applies it to ``life.ttl``.
            ttl = expiry.ttls(life.config, life.record.expiry)[0]
            life.cache(refill_ops(life.keys, life.sid, None, found, (ttl, 0)))

    def fetch_flashes(self, life: Lifecycle) -> Item | None:
        assert life.sid is not None
        try:
            found = self.database.load_variables(life.sid, [FLASHES])
        except SessionUnavailableError:
            life.failed = True  # none consumed, so none lost
            if life.config.strict:
                raise
            return None
        if FLASHES not in found:
            return None
        # Not put back in memcached: a request showing them meanwhile empties
        # the list there, and an ``add`` after that would bring them back.
        # The next write of the list copies it (``flashes.mirrored``).
        return Item(found[FLASHES][0], FLAGS_FLASHES)

    def store_new(
        self,
        life: Lifecycle,
        ops: Sequence[Op],
        changes: DurableChanges | None,
        on_sent: Callable[[], object] | None,
    ) -> str:
        """Insert a new session in the database, then memcached, in one transaction.

        Returns ``"stored"``, ``"taken"`` (the id exists in memcached: try
        another) or ``"failed"`` (the database failed: nothing kept).
        """
        assert life.sid is not None
        sid = life.sid
        results: list[Result] | None = None
        try:
            stored = self.stored(life.record, time.time(), life.record_ttl)
            with self.database.create(sid, stored) as writer:
                if changes is not None:
                    changes.apply(writer, life.config.serializer.flags)
                results = life.cache(ops, on_sent)
                if results is not None and results[0] is False:
                    raise _Taken(sid)
        except _Taken:
            life.cache(undo_ops(life.keys, sid, ops))
            return "taken"
        except SessionUnavailableError:
            if results is not None:
                life.cache(undo_ops(life.keys, sid, ops))
            life.failed = True
            if life.config.strict:
                raise
            return "failed"
        self.noted_write(sid)
        if results is not None:
            life.report(ops, results)
        return "stored"

    def write_through(
        self,
        life: Lifecycle,
        make: Callable[[Writer], Sequence[Op]],
        written: AbstractSet[str],
        deleted: AbstractSet[str],
        new_flashes: bool = False,
        on_sent: Callable[[], object] | None = None,
    ) -> Sequence[Result] | None:
        """``saving.guarded_write`` with the database first.

        ``make(writer)`` applies the changes to the database and returns the
        memcached operations that mirror them; the memcached batch runs while
        the session's row is held, so both tiers see one session's writes in the
        same order. If memcached cannot be reached, the database alone keeps the
        write, and the keys it touched are deleted from memcached once the node
        answers again, so the node never serves what this write replaced.
        """
        assert life.sid is not None
        sid = life.sid
        config = life.config
        plan: WritePlan | None = None
        results: list[Result] | None = None
        direct: list[Result] | None = None
        body: Sequence[Op] = ()
        try:
            with self.database.update(
                sid, self.expires(life.record.created, time.time(), life.record_ttl)
            ) as writer:
                if life.expiry_changed:
                    writer.remember(life.record.expiry)
                body = make(writer)
                writer.hold()  # the row is locked before memcached hears of the write
                plan = WritePlan(
                    life.keys,
                    sid,
                    life.record,
                    life.record_cas,
                    body,
                    written,
                    deleted,
                    new_flashes,
                    life.record_ttl,
                )
                if len(plan.lines) > config.item_room:
                    # An index too long for an item is never sent (memcached
                    # would delete the record). The values are, while the row
                    # is held, and the record is deleted: the next read
                    # rebuilds it from the database.
                    direct = life.cache([*body, Delete(life.keys.record(sid))], on_sent)
                else:
                    results = life.cache(plan.ops, on_sent)
                    seen = None if results is None else plan.outcome(results)
                    if seen is not None and seen.dead:
                        raise _LoggingOut(sid)
                    if seen is not None and seen.moved:
                        raise _Moving(sid)
        except _Moving:
            life.cache(undo_ops(life.keys, sid, plan.ops if plan is not None else ()))
            rotation.write_lost(life)
            return None
        except (SessionGone, _LoggingOut) as exc:
            if plan is not None and results is not None:
                life.cache(undo_ops(life.keys, sid, plan.ops))
            if isinstance(exc, SessionGone) and rotation.rotated_away(life, sid):
                rotation.write_lost(life)  # the rows moved to the new id
                return None
            log.info("session %s ended during the request; its writes undone", life.log_id())
            life.start_fresh()
            return None
        except SessionUnavailableError:
            if plan is not None and (results is not None or direct is not None):
                # The database took nothing (its commit may be what failed),
                # but memcached ran the batch: forget what it touched, so it
                # is read back from the database. The record goes only if the
                # batch changed its index (its quick variables then with it).
                deletes = invalidation(life.keys, sid, plan.ops)
                _invalidate(life, sid, deletes if plan.lines else deletes[1:])
            life.failed = True
            log.debug(
                "session %s: changes not saved, %s unavailable",
                life.log_id(),
                self.database.describe(),
            )
            if config.strict:
                raise
            return None
        except BaseException:
            # Interrupted (a signal's exception, a greenlet's timeout) once
            # the batch may have reached memcached: the database closed the
            # transaction uncommitted, so what the batch stored must not be
            # served in its place. Deleted in front of this process's next
            # batch to the node (no I/O on the way out of an interrupt).
            if plan is not None:
                deletes = invalidation(life.keys, sid, plan.ops)
                life.store.defer(sid, deletes if plan.lines else deletes[1:])
            raise
        self.noted_write(sid)
        self.database.sweep(
            config.sweep_percent, config.sweep_limit, trail=config.record_ttl * RENEWAL_SHARE
        )
        if life.max_age is not None:
            life.cookie_action = "set"
        assert plan is not None
        if results is None:
            if direct is not None:
                return direct[: len(body)]
            life.store.defer(sid, invalidation(life.keys, sid, plan.ops))
            return [True] * len(body)
        outcome = plan.outcome(results)
        if outcome.gone or outcome.refused is not None:
            # memcached lost the record, or it could not list the new names:
            # the next read rebuilds the record from the database. The values
            # this batch stored while the row was held stay, so a refill racing
            # this write (``add``) cannot put an older value in their place;
            # only a value memcached refused is deleted.
            record_key = life.keys.record(sid)
            refused = [
                Delete(op.key)
                for op, result in zip(body, outcome.body, strict=True)
                if isinstance(op, Set) and result is not True and op.key != record_key
            ]
            _invalidate(life, sid, [Delete(record_key), *refused])
            return outcome.body
        life.record = outcome.record
        if outcome.relist:
            life.cache([Set(life.keys.record(sid), outcome.relist, mode="append")])
        return outcome.body


def _invalidate(life: Lifecycle, sid: str, deletes: list[Op]) -> None:
    """Run ``deletes`` on memcached now or, if it cannot be reached, once it answers."""
    if life.cache_down or life.cache(deletes) is None:
        life.store.defer(sid, deletes)


class _LoggingOut(RollBack):
    """memcached shows a logout under way: the write must not outlive it."""


class _Moving(RollBack):
    """memcached shows the id being rotated away: the write must not land."""


class _Taken(RollBack):
    """memcached already holds a record under the new id."""
