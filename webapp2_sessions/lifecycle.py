"""One session as the server knows it, for one request.

``Lifecycle`` holds the id, the state (an Enum) and the record. It loads the
record and adopts it or ends it, starts afresh, and runs the batches of the
modules that read or change the session, with one policy for a store that
fails (``execute``, ``cache``, ``report``): later reads (``loading.py``),
storing a new session and the guarded write of a stored one (``saving.py``),
regeneration and logout (``transitions.py``). The plans come from
``plans.py``; ``Session`` (the mapping the application sees) decides what to
read and write.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from . import expiry, owners, rotation
from .config import SessionConfig
from .errors import SessionUnavailableError
from .keys import KeyScheme, key_scheme, log_token, new_session_id
from .plans import LoadPlan
from .record import FLAGS_RECORD, Record, client_hash, parse_value
from .stores import Failed, Item, Op, Result, Set, Store
from .transitions import delete_everything

if TYPE_CHECKING:
    from .durable import DurableTier

log = logging.getLogger("webapp2_sessions")

_UNLOADED = Record(created=0.0)


class State(enum.Enum):
    """Where a request's session stands with the server."""

    #: A cookie names an id not yet checked on the server.
    UNLOADED = "unloaded"
    #: Nothing is stored yet; the id (if any) is provisional.
    NEW = "new"
    #: The id's record exists: the session is real.
    STORED = "stored"
    #: The store failed: reads give defaults, writes are not saved, and the
    #: id and cookie are kept for when the node answers again.
    UNAVAILABLE = "unavailable"


# The states as plain names: reading an Enum member off its class costs five
# times a plain attribute, and the hot paths compare states often.
UNLOADED, NEW, STORED, UNAVAILABLE = (
    State.UNLOADED,
    State.NEW,
    State.STORED,
    State.UNAVAILABLE,
)


class FreshStartListener(Protocol):
    def _forget_old(self) -> None:
        """The session started afresh: drop what was read of the old one."""


@dataclass
class ClientInfo:
    """What the session may be bound to."""

    user_agent: str | None = None
    remote_addr: str | None = None


NO_CLIENT = ClientInfo()


class Lifecycle:
    """The server side of one request's session."""

    #: What the response must do with the cookie: None, 'set' or 'delete'.
    cookie_action: str | None = None
    #: Compare-and-set token of the record as loaded (0: not loaded).
    record_cas = 0
    #: A batch of this request could not reach the store.
    failed = False
    #: The cookie's id, when its record was found marked for ending.
    ending: str | None = None
    #: memcached could not be reached this request; the database serves.
    cache_down = False
    #: The database behind memcached, when the ``database`` setting is on.
    durable: DurableTier | None = None
    #: Variables kept in memcached only (``session_quick``).
    quick: frozenset[str] = frozenset()
    #: ``set_expiry`` changed the lifetime this request: the write says so.
    expiry_changed = False
    #: The id the record points to: rotated away (see ``rotation.py``).
    forward: str | None = None
    #: Pointers followed this request (a bound against chains).
    hops = 0
    #: Names the database could not read back this request: unknown, not lost.
    unread: frozenset[str] = frozenset()

    def __init__(
        self,
        config: SessionConfig,
        store: Store,
        cookie_sid: str | None,
        client: ClientInfo,
        clock: Callable[[], float],
        view: Callable[[], FreshStartListener | None],
        durable: DurableTier | None = None,
        quick: frozenset[str] = frozenset(),
    ) -> None:
        self.config = config
        #: TTLs of variables and record, and the cookie's Max-Age: the
        #: settings', or the session's own lifetime (``expiry.py``).
        self.ttl = config.ttl
        self.record_ttl = config.record_ttl
        self.max_age = config.cookie_args.max_age
        # Class-level defaults stand until a request needs its own: a
        # Lifecycle is built for every request that uses its session.
        if durable is not None:
            self.durable = durable
        if quick:
            self.quick = quick
        self.store = store
        self.keys: KeyScheme = key_scheme(config.key_prefix)
        self.client = client
        self.clock = clock
        #: The request's view of the session (a weak reference: a strong one
        #: would make every request's session a reference cycle), told of
        #: every fresh start so that it forgets the old session's values.
        self._view = view
        self.sid = cookie_sid
        self.state = UNLOADED if cookie_sid else NEW
        # A returning visitor's record comes from the server: until then a
        # shared empty one stands in (it is never written to).
        self.record = _UNLOADED if cookie_sid else self.blank_record()

    def blank_record(self) -> Record:
        config = self.config
        return Record(
            created=self.clock(),
            user_agent=client_hash(self.client.user_agent) if config.bind_user_agent else None,
            remote_addr=client_hash(self.client.remote_addr) if config.bind_ip else None,
        )

    def fresh_id(self) -> str:
        sid = new_session_id()
        # In a cluster, prefer an id whose node is up: a new visitor is
        # placed on a live node at once.
        for _ in range(16):
            if self.store.available(sid):
                break
            sid = new_session_id()
        return sid

    def log_id(self) -> str:
        """The session's tag for log lines (never the id itself)."""
        return log_token(self.sid or "")

    def where(self) -> str:
        return self.store.describe(self.sid or "")

    def execute(
        self, ops: Sequence[Op], on_sent: Callable[[], object] | None = None, sid: str = ""
    ) -> list[Result] | None:
        """Run a batch on this session's node; None if the store failed.

        In strict mode the failure is raised instead.
        """
        try:
            return self.store.execute(sid or self.sid or "", ops, on_sent=on_sent)
        except SessionUnavailableError:
            self.failed = True
            if self.config.strict:
                raise
            return None

    def cache(
        self, ops: Sequence[Op], on_sent: Callable[[], object] | None = None, sid: str = ""
    ) -> list[Result] | None:
        """``execute``, for the durable tier: memcached failing is no outage
        of the session (the database serves), so nothing is raised."""
        try:
            return self.store.execute(sid or self.sid or "", ops, on_sent=on_sent)
        except SessionUnavailableError:
            self.cache_down = True
            return None

    def unavailable(self) -> None:
        """The session cannot be read this request: defaults, nothing saved."""
        self.failed = True
        if self.config.strict:
            raise SessionUnavailableError("session unavailable", self.where())
        self.state = UNAVAILABLE

    def adopted(self, record: Record, cas: int) -> None:
        self.record = record
        self.record_cas = cas
        self.state = STORED

    # ------------------------------------------------------------------ loading

    def load(
        self, names: Sequence[str], flashes: bool
    ) -> tuple[LoadPlan, Sequence[Result]] | None:
        """Read the record with ``names`` (and the flashes) in one batch.

        Returns the plan and its results once the session is adopted (state
        ``STORED``); otherwise the state says why not (a fresh start, or
        ``UNAVAILABLE``).
        """
        sid = self.sid
        assert sid is not None
        config = self.config
        assumed = expiry.known(sid)
        if assumed is None:
            plan = LoadPlan(self.keys, sid, names, flashes, config.record_ttl, config.ttl)
        else:
            ttl, record_ttl = expiry.ttls(config, assumed)
            plan = LoadPlan(self.keys, sid, names, flashes, record_ttl, ttl)
        loaded: tuple[LoadPlan, Sequence[Result]] | None
        if self.durable is not None:
            loaded = self.durable.load(self, plan, names)
        else:
            try:  # execute(), inline: every returning visitor's request runs this
                results = self.store.execute(sid, plan.ops)
            except SessionUnavailableError:
                self.failed = True
                if config.strict:
                    raise
                self.state = UNAVAILABLE
                return None
            loaded = (plan, results) if self.adopt(sid, results[LoadPlan.RECORD]) else None
        if loaded is None:
            return None if self.forward is None else rotation.follow(self, names, flashes)
        if assumed is not None or self.record.expiry is not None:
            expiry.loaded(self, assumed, plan)
        return loaded

    def adopt(self, sid: str, item: Result) -> bool:
        """Accept the record of ``sid``, or end it and start afresh; say which."""
        if not isinstance(item, Item):
            self.start_fresh()  # never issued, expired, evicted or destroyed
            return False
        try:
            if item.flags != FLAGS_RECORD:  # Record.parse(), inline
                raise ValueError("foreign flags")
            record = parse_value(item.value)
        except ValueError as exc:
            log.warning("session %s: unreadable record ignored (%s)", log_token(sid), exc)
            self.start_fresh()
            return False
        if record.to is not None and not record.dead:
            if not rotation.pointer_live(self, record):
                self.start_fresh()  # rotated away longer ago than the grace
                return False
            self.forward = record.to  # rotated: the session lives on there
            return False
        if record.dead:
            # A logout (or a regeneration) is ending it right now; a logout in
            # this request must still see the deletion through.
            self.ending = sid
            self.start_fresh()
            return False
        config = self.config
        if config.absolute_timeout or config.bind_user_agent or config.bind_ip:
            reason = self.end_reason(record)
            if reason is not None:
                self.end(reason, record)
                return False
        self.record = record
        self.record_cas = item.cas
        self.state = STORED
        if record.owner is not None and self.durable is None:
            owners.renew_if_due(self)  # rarely a round trip; never for unowned sessions
        return True

    def end_reason(self, record: Record) -> str | None:
        config = self.config
        if config.absolute_timeout and self.clock() - record.created > config.absolute_timeout:
            return "absolute timeout"
        if config.bind_user_agent and record.user_agent != client_hash(self.client.user_agent):
            return "user agent changed"
        if config.bind_ip and record.remote_addr != client_hash(self.client.remote_addr):
            return "client address changed"
        return None

    def end(self, reason: str, record: Record | None = None) -> None:
        """Delete the stored session for ``reason`` and start afresh."""
        assert self.sid is not None
        log.info("session %s ended: %s", log_token(self.sid), reason)
        delete_everything(self, self.sid, record or self.record)
        self.start_fresh()

    @property
    def stored(self) -> bool:
        return self.state is STORED

    @property
    def is_new(self) -> bool:
        return self.state is NEW

    @property
    def unreachable(self) -> bool:
        """The store failed this request: nothing is read or saved."""
        return self.state is UNAVAILABLE

    def may_exist(self) -> bool:
        """The id may have a record on the server: stored, or not known
        because the store failed."""
        return self.sid is not None and self.state in (STORED, UNAVAILABLE)

    def move_to_new_id(self, claimed: Record, sid: str | None = None) -> None:
        """Become a new, unsaved session (``sid``, or one picked when stored)
        that keeps the creation time, the owner and the lifetime; its id is issued now.

        A lifetime set earlier in this request (``set_expiry``, not saved
        yet) wins over the claimed record's.
        """
        self.record = dataclasses.replace(
            self.blank_record(),
            created=claimed.created,
            owner=claimed.owner,
            expiry=self.record.expiry if self.expiry_changed else claimed.expiry,
            issued=self.clock(),
        )
        self.record_cas = 0
        self.sid = sid
        self.state = NEW

    def start_fresh(self) -> None:
        self.state = NEW
        self.sid = None
        self.record = self.blank_record()
        self.record_cas = 0
        expiry.apply(self, None)
        self.expiry_changed = False
        if self.cookie_action is None:
            self.cookie_action = "delete"
        view = self._view()
        if view is not None:
            view._forget_old()

    # ------------------------------------------------------------------ writing

    def report(self, ops: Sequence[Op], results: Sequence[Result]) -> None:
        """Log the writes the server refused; in strict mode, raise."""
        if results.count(True) == len(results):
            return  # the usual answer: every write stored
        failed = [
            result.reason if isinstance(result, Failed) else "append refused (item too large)"
            for op, result in zip(ops, results, strict=True)
            if isinstance(result, Failed)
            or (result is False and isinstance(op, Set) and op.mode == "append")
        ]
        if failed:
            log.error(
                "session %s: %d write(s) refused by %s: %s",
                self.log_id(),
                len(failed),
                self.where(),
                failed[0][:80],
            )
            if self.config.strict:
                raise SessionUnavailableError(failed[0], self.where())
