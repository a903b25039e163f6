"""The per-request session: a lazy, change-tracking view of per-variable keys.

Costs, in store round trips: nothing until the session is used; one batch to
read the session record together with every variable the handler is known to
read; one batch at the end of the request with every change. Each variable is
its own key, so two requests that write different variables never undo each
other's work.

The server adopts only ids whose record (see ``record.py``) exists: a cookie
naming any other id starts a fresh session with a new id.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from .config import SessionConfig
from .errors import SessionUnavailableError, UpdateConflictError
from .ids import key_scheme, log_token, name_suffix, new_session_id
from .record import (
    DEAD_LINE,
    FLAGS_FLASHES,
    FLAGS_RECORD,
    Record,
    client_hash,
    index_lines,
    is_live,
)
from .serializers import FLAGS_JSON
from .stores import Delete, Failed, Get, Incr, Item, Op, Result, Set, Store

__all__ = ["FLAGS_FLASHES", "FLAGS_RECORD", "ClientInfo", "Prefetch", "Session"]

log = logging.getLogger("webapp2_sessions")

_MISSING: Any = object()
_NOTHING: frozenset[str] = frozenset()
_UNCACHED: Any = object()
_UNLOADED = Record(created=0.0)
_MAX_LEARNED = 64


@dataclass
class ClientInfo:
    """What the session may be bound to."""

    user_agent: str | None = None
    remote_addr: str | None = None


class Prefetch:
    """Names a handler class reads, so they can be fetched in the first batch.

    ``declared`` comes from the handler's ``session_prefetch`` attribute;
    ``learned`` grows as requests read other names. A wrong guess only costs
    bytes in a batch that is sent anyway.
    """

    def __init__(self, declared: Iterable[str] = (), learn: bool = True) -> None:
        self.declared = frozenset(declared)
        self.learn = learn
        #: Everything to fetch; replaced (never mutated) so readers need no lock.
        self.names = self.declared
        #: ``names`` sorted: the order of the batch, so it is the same every time.
        self.ordered = tuple(sorted(self.declared))
        self._lock = threading.Lock()
        #: The handler reads flashes, so fetch them with the first batch.
        self.flashes = False

    def saw(self, name: str) -> None:
        if not self.learn or name in self.names:
            return
        with self._lock:
            if name not in self.names and len(self.names) < len(self.declared) + _MAX_LEARNED:
                names = self.names | {name}
                self.ordered = tuple(sorted(names))
                self.names = names


_NO_CLIENT = ClientInfo()
_NO_PREFETCH = Prefetch(learn=False)


class Session(MutableMapping[str, Any]):
    """One request's view of one session.

    Reads go through a per-request cache, so reading a name twice, or reading
    what this request wrote, costs nothing. Writes are kept until ``save()``,
    which the handler mixin calls at the end of dispatch. Values are captured
    when set: mutate a list you read, then set it again to store the change.
    """

    # Defaults shared by every instance until a request changes them: a session
    # is built on every request, so its constructor sets only what varies.
    _flash_item: Item | object | None = _MISSING
    _flashes_taken = False
    _force_save = False
    #: The request depended on the session (for Vary: Cookie).
    accessed = False
    #: What the response must do with the cookie: None, 'set' or 'delete'.
    cookie_action: str | None = None
    #: Names the record lists whose value was gone (evicted or expired).
    lost: frozenset[str] = frozenset()
    #: Compare-and-set token of the record as loaded (0: not loaded).
    _record_cas = 0
    #: A batch of this request could not reach the store.
    _store_failed = False
    #: The cookie's id, when its record was found marked for ending.
    _ending: str | None = None

    def __init__(
        self,
        config: SessionConfig,
        store: Store,
        cookie_sid: str | None,
        *,
        cookie_present: bool = False,
        client: ClientInfo | None = None,
        prefetch: Prefetch | None = None,
        required: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.client = client or _NO_CLIENT
        self.prefetch = prefetch or _NO_PREFETCH
        self.required = frozenset(required) if required else _NOTHING
        self._ks = key_scheme(config.key_prefix)
        self._clock = clock
        #: The request carried a cookie of our name (valid or not).
        self.cookie_present = cookie_present
        self._sid: str | None = cookie_sid
        # 'unloaded': a cookie names an id not yet checked on the server;
        # 'stored': the id's record exists; 'new': nothing stored yet;
        # 'unavailable': the store failed, reads give defaults.
        self._state = "unloaded" if cookie_sid else "new"
        # A returning visitor's record comes from the server: until then a
        # shared empty one stands in (it is never written to).
        self._record = _UNLOADED if cookie_sid else self._blank_record()
        self._values: dict[str, Any] = {}
        self._items: dict[str, Item] = {}
        self._dirty: dict[str, bytes] = {}
        self._deleted: set[str] = set()
        self._flashes_out: list[bytes] = []
        if cookie_present and not cookie_sid:
            self.cookie_action = "delete"  # a cookie we cannot use: clear it

    def _blank_record(self) -> Record:
        return Record(
            created=self._clock(),
            user_agent=client_hash(self.client.user_agent)
            if self.config.bind_user_agent
            else None,
            remote_addr=client_hash(self.client.remote_addr) if self.config.bind_ip else None,
        )

    # ------------------------------------------------------------------ identity

    @property
    def session_id(self) -> str:
        """The id; a new visitor gets one that is stored on the first write."""
        self._ensure_loaded()
        if self._sid is None:
            self._sid = self._fresh_id()
        return self._sid

    @property
    def stored(self) -> bool:
        """True once the session is known to exist on the server (never loads)."""
        return self._state == "stored"

    @property
    def available(self) -> bool:
        """False once the store failed this request: reads gave defaults and
        writes are not being saved. Checks nothing by itself."""
        return not self._store_failed

    @property
    def is_new(self) -> bool:
        """True until something of this session is stored on the server."""
        self._ensure_loaded()
        return self._state != "stored"

    def _fresh_id(self) -> str:
        sid = new_session_id()
        # In a cluster, prefer an id whose node is up: a visitor whose node
        # just died can then start over at once on a live one.
        for _ in range(16):
            if self.store.available(sid):
                break
            sid = new_session_id()
        return sid

    # ------------------------------------------------------------------ loading

    def load(self, *names: str) -> None:
        """Fetch the session and ``names`` (plus the handler's usual names) now.

        Later reads of those names cost nothing.
        """
        for name in names:
            name_suffix(name)
        self._ensure_loaded(names)
        if self._state == "stored":
            self._fetch([n for n in names if n not in self._values and n in self._record.names])

    def _ensure_loaded(self, extra: Iterable[str] = ()) -> None:
        self.accessed = True
        if self._state != "unloaded":
            return
        assert self._sid is not None
        sid = self._sid
        config = self.config
        prefetch = self.prefetch
        names = prefetch.names
        wanted: Sequence[str] = prefetch.ordered
        if self.required or not names.issuperset(extra):
            wanted = sorted(names.union(extra, self.required))
        values = self._values
        if values:  # written before the first read: nothing to fetch for those
            wanted = [n for n in wanted if n not in values]
        ttl = config.ttl
        ks = self._ks
        ops: list[Op] = [Get(ks.record(sid), config.record_ttl)]
        ops += [Get(key, ttl) for key in ks.variables(sid, wanted)]
        flashes = prefetch.flashes
        if flashes:
            ops.append(Get(ks.internal(sid, "flashes"), ttl))
        results = self._execute(sid, ops)
        if results is None:
            self._state = "unavailable"
            return
        flash_item = results.pop() if flashes else None
        if not self._adopt(sid, results[0]):
            return
        self._state = "stored"
        if flashes:
            self._flash_item = flash_item if isinstance(flash_item, Item) else None
        serializer = config.serializer
        flags, loads = serializer.flags, serializer.loads
        items = self._items
        for index, name in enumerate(wanted, 1):
            result = results[index]
            # The common case inline; anything else (missing, a counter,
            # foreign or unreadable) is sorted out by _remember.
            if result.__class__ is Item and result.flags == flags:
                try:
                    values[name] = loads(result.value)
                    items[name] = result
                    continue
                except ValueError:
                    pass
            self._remember(name, result)
        missing = sorted(self.required & self.lost) if self.required else None
        if missing:
            log.warning(
                "session %s ended: required variable(s) %s evicted or expired",
                log_token(sid),
                ", ".join(repr(n)[:40] for n in missing),
            )
            self._delete_everything(sid)
            self._start_fresh()

    def _adopt(self, sid: str, item: Result) -> bool:
        """Accept the record of ``sid``, or end it and start afresh; say which."""
        if not isinstance(item, Item):
            self._start_fresh()  # never issued, expired, evicted or destroyed
            return False
        try:
            record = Record.parse(item)
        except ValueError as exc:
            log.warning("session %s: unreadable record ignored (%s)", log_token(sid), exc)
            self._start_fresh()
            return False
        if record.dead:
            # A logout (or a regeneration) is ending it right now; a logout in
            # this request must still see the deletion through.
            self._ending = sid
            self._start_fresh()
            return False
        reason = self._end_reason(record)
        if reason is not None:
            log.info("session %s ended: %s", log_token(sid), reason)
            self._record = record
            self._delete_everything(sid)
            self._start_fresh()
            return False
        self._record = record
        self._record_cas = item.cas
        return True

    def _end_reason(self, record: Record) -> str | None:
        config = self.config
        if config.absolute_timeout and self._clock() - record.created > config.absolute_timeout:
            return "absolute timeout"
        if config.bind_user_agent and record.user_agent != client_hash(self.client.user_agent):
            return "user agent changed"
        if config.bind_ip and record.remote_addr != client_hash(self.client.remote_addr):
            return "client address changed"
        return None

    def _start_fresh(self) -> None:
        self._state = "new"
        self._sid = None
        self._record = self._blank_record()
        self._record_cas = 0
        # What this request wrote is still pending and must still read back.
        pending = self._dirty.keys() | self._deleted
        self._values = {n: v for n, v in self._values.items() if n in pending}
        self._items.clear()
        self._flash_item = _MISSING
        if self.cookie_action is None:
            self.cookie_action = "delete"

    def _fetch(self, names: list[str]) -> None:
        if not names or self._sid is None:
            return
        sid = self._sid
        ops = [Get(self._ks.variable_fast(sid, n), touch=self.config.ttl) for n in names]
        results = self._execute(sid, ops)
        if results is None:
            for name in names:
                self._values[name] = _MISSING  # unreadable now, not lost
            return
        for name, result in zip(names, results, strict=True):
            self._remember(name, result)

    def _remember(self, name: str, result: Result) -> None:
        if not isinstance(result, Item):
            self._values[name] = _MISSING
            if name in self._record.names and name not in self._dirty:
                self.lost = self.lost | {name}
                log.info("session %s: a listed variable was evicted or expired", self._tag())
            return
        serializer = self.config.serializer
        try:
            if result.flags == serializer.flags:
                value = serializer.loads(result.value)
            elif result.flags == FLAGS_JSON and result.value.strip().isdigit():
                value = int(result.value)  # a counter, kept as decimal text
            else:
                raise ValueError(f"flags {result.flags:#x}")
        except ValueError as exc:
            log.warning(
                "session %s: value of a variable is not ours (%s), ignored",
                self._tag(),
                str(exc)[:60],
            )
            self._values[name] = _MISSING
            return
        self._values[name] = value
        self._items[name] = result

    def _tag(self) -> str:
        return log_token(self._sid or "")

    def _execute(
        self, sid: str, ops: Sequence[Op], on_sent: Callable[[], object] | None = None
    ) -> list[Result] | None:
        """Run a batch; None when the store is down and strict mode is off."""
        try:
            return self.store.execute(sid, ops, on_sent=on_sent)
        except SessionUnavailableError:
            self._store_failed = True
            if self.config.strict:
                raise
            return None

    # ------------------------------------------------------------------ reading

    def get(self, name: str, default: Any = None) -> Any:
        value = self._get(name)
        return default if value is _MISSING else value

    def _get(self, name: str) -> Any:
        # Cached: read before (so loaded and validated) or written by this request.
        value = self._values.get(name, _UNCACHED) if isinstance(name, str) else _UNCACHED
        if value is not _UNCACHED:
            return value
        name_suffix(name)  # type and emptiness checks
        self.prefetch.saw(name)
        self._ensure_loaded((name,))
        if name not in self._values:
            if self._state == "stored" and name in self._record.names:
                self._fetch([name])
            else:
                self._values[name] = _MISSING  # the record says it was never stored
        return self._values[name]

    def __getitem__(self, name: str) -> Any:
        value = self._get(name)
        if value is _MISSING:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(name) and self._get(name) is not _MISSING

    def _all_names(self) -> list[str]:
        self._ensure_loaded()
        names = set(self._record.names)
        names.update(n for n, v in self._values.items() if v is not _MISSING)
        if self._state == "stored":
            self._fetch(sorted(n for n in names if n not in self._values))
        return sorted(n for n in names if self._values.get(n, _MISSING) is not _MISSING)

    def __iter__(self) -> Iterator[str]:
        return iter(self._all_names())

    def __len__(self) -> int:
        return len(self._all_names())

    # ------------------------------------------------------------------ writing

    def _serialize(self, name: str, value: Any) -> bytes:
        try:
            data = self.config.serializer.dumps(value)
        except TypeError as exc:
            raise TypeError(f"session variable {name!r} cannot be stored: {exc}") from None
        room = self._room
        if len(data) > room:
            raise ValueError(
                f"session variable {name!r} is {len(data)} bytes serialized; "
                f"items are limited to {room} (item_size_max={self.config.item_size_max})"
            )
        return data

    @property
    def _room(self) -> int:
        """Largest value a write may send: the item limit less key and overhead."""
        return self.config.item_size_max - 300

    def __setitem__(self, name: str, value: Any) -> None:
        name_suffix(name)
        data = self._serialize(name, value)
        self.accessed = True
        self._values[name] = value
        self._dirty[name] = data
        self._deleted.discard(name)

    def __delitem__(self, name: str) -> None:
        if self._get(name) is _MISSING:
            raise KeyError(name)
        self.discard(name)

    def discard(self, name: str) -> None:
        """Delete ``name`` if present; unlike ``del``, never raises KeyError."""
        name_suffix(name)
        self.accessed = True
        self._values[name] = _MISSING
        self._dirty.pop(name, None)
        self._deleted.add(name)

    @property
    def modified(self) -> bool:
        return bool(
            self._dirty
            or self._deleted
            or self._flashes_out
            or self._flashes_taken
            or self._force_save
        )

    # ------------------------------------------------------------------ flashes

    def add_flash(self, value: Any, level: str | None = None) -> None:
        """Queue a message for a later request; written with the other changes."""
        line = self._serialize("flash", [value, level])
        self.accessed = True
        # One base64 line per flash: any serializer's bytes fit on a line.
        self._flashes_out.append(base64.b64encode(line) + b"\n")

    def get_flashes(self) -> list[tuple[Any, str | None]]:
        """Every flash stored so far, oldest first; they are then cleared."""
        if self.prefetch.learn:
            self.prefetch.flashes = True
        self._ensure_loaded()
        if self._flash_item is _MISSING:
            self._flash_item = None
            if self._state == "stored" and self._record.flashes and self._sid is not None:
                key = self._ks.internal(self._sid, "flashes")
                got = self._execute(self._sid, [Get(key, touch=self.config.ttl)])
                if got is not None and isinstance(got[0], Item):
                    self._flash_item = got[0]
        lines: list[bytes] = []
        item = self._flash_item
        if isinstance(item, Item) and item.flags == FLAGS_FLASHES:
            lines += item.value.split(b"\n")
            self._flashes_taken = True
        lines += self._flashes_out  # queued by this very request: never stored
        self._flashes_out.clear()
        out: list[tuple[Any, str | None]] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                raw = base64.b64decode(line.strip(), validate=True)
                value, level = self.config.serializer.loads(raw)
                out.append((value, level))
            except (ValueError, TypeError):
                log.warning("session %s: unreadable flash ignored", self._tag())
        return out

    # ------------------------------------------------------------------ saving

    def save(self, on_sent: Callable[[str, bool], object] | None = None) -> None:
        """Write every change in one batch. Called at the end of dispatch.

        ``on_sent(session_id, sets_cookie)`` is called while the batch is in
        flight (see ``Store.execute``); ``sets_cookie`` tells whether the
        response will set the cookie if the batch succeeds. The handler mixin
        prepares the response's headers then.
        """
        if not self.modified:
            return
        self._ensure_loaded()
        if self._state == "unavailable":
            # The session's node is down. Its session is still there, and is
            # served again once the node answers: keep the id and the cookie
            # and give up this request's writes, rather than start a new
            # session elsewhere and log the visitor out.
            self._after_failed_write(self._sid or "")
            return
        if self._state == "new":
            self._save_new(on_sent)
        else:
            self._save_stored(on_sent)

    def _variable_ops(self, sid: str) -> list[Op]:
        config = self.config
        ttl = config.ttl
        flags = config.serializer.flags
        dirty = self._dirty
        ops: list[Op] = [
            Set(key, data, flags, ttl)
            for key, data in zip(self._ks.variables(sid, dirty), dirty.values(), strict=True)
        ]
        if self._deleted:
            ops += [Delete(key) for key in self._ks.variables(sid, sorted(self._deleted))]
        if not (self._flashes_taken or self._flashes_out):
            return ops
        key = self._ks.internal(sid, "flashes")
        if self._flashes_taken and isinstance(self._flash_item, Item):
            # Only the flashes we read: one appended meanwhile keeps the key alive.
            ops.append(Delete(key, cas=self._flash_item.cas or None))
        if self._flashes_out:
            lines = b"".join(self._flashes_out)
            if len(lines) > self._room:
                # Sent, memcached would delete the flashes already stored.
                log.error(
                    "session %s: %d new flash(es) not saved: %d bytes, over item_size_max",
                    log_token(sid),
                    len(self._flashes_out),
                    len(lines),
                )
                return ops
            ops.append(Set(key, b"", FLAGS_FLASHES, ttl, mode="add"))
            ops.append(Set(key, lines, mode="append"))
        return ops

    def _save_new(self, on_sent: Callable[[str, bool], object] | None = None) -> None:
        for _ in range(3):
            sid = self._sid or self._fresh_id()
            self._sid = sid
            names = frozenset(self._dirty)
            flashes = bool(self._flashes_out)
            blank = self._record
            record = self._record = Record(
                created=blank.created,
                user_agent=blank.user_agent,
                remote_addr=blank.remote_addr,
                names=names,
                ever=names,
                flashes=flashes,
                lines=len(names) + int(flashes),
            )
            first = Set(
                self._ks.record(sid), record.encode(), FLAGS_RECORD, self.config.record_ttl, "add"
            )
            notify = None if on_sent is None else functools.partial(on_sent, sid, True)
            ops = [first, *self._variable_ops(sid)]
            results = self._execute(sid, ops, notify)
            if results is None:
                if not self.store.available(sid):
                    # This id's node was just found dead: a fresh id avoids it
                    # (in a cluster; with one server the retry fails fast).
                    candidate = self._fresh_id()
                    if self.store.available(candidate):
                        self._sid = candidate
                        continue
                self._after_failed_write(sid)
                return
            if results[0] is True:
                self._state = "stored"
                self.cookie_action = "set"
                self._report(sid, ops[1:], results[1:])
                self._clear_changes()
                return
            # Refused (out of memory, too large) or, with 122 random bits,
            # practically never, an id already taken: take back the variables
            # written beside it, report, and give up or try a new id.
            self._undo(sid, ops)
            if isinstance(results[0], Failed):
                self._report(sid, ops[:1], results[:1])
                self._after_failed_write(sid)
                return
            self._sid = None
        log.error("session: no free id after 3 attempts; changes not saved")
        self._clear_changes()

    def _save_stored(self, on_sent: Callable[[str, bool], object] | None = None) -> None:
        sid = self._sid
        assert sid is not None
        notify = None
        if on_sent is not None:
            renews = self.config.cookie_args.max_age is not None
            notify = functools.partial(on_sent, sid, renews)
        body = self._variable_ops(sid)
        results = self._guarded_write(
            sid,
            body,
            set(self._dirty),
            set(self._deleted),
            bool(self._flashes_out) and not self._record.flashes,
            notify,
        )
        if results is not None:
            self._report(sid, body, results)
            self._clear_changes()

    def _guarded_write(
        self,
        sid: str,
        body: list[Op],
        written: set[str],
        deleted: set[str],
        new_flashes: bool = False,
        on_sent: Callable[[], object] | None = None,
    ) -> list[Result] | None:
        """Run ``body`` on a stored session, with its index lines, in one batch.

        The batch also lists new names (and compacts the index when it has
        grown), and reads the record back last: if the session ended while it
        ran (logout in another request, expiry), the writes must not outlive
        it and are undone. Returns the results of ``body``, or None when
        nothing was written (the store failed, or the session ended).
        """
        record = self._record
        record_key = self._ks.record(sid)
        added = written - record.names
        removed = deleted & record.names
        ops: list[Op] = []
        compact = record.needs_compaction() and self._record_cas
        if compact:
            # Skipped by the server if anyone appended since we read it.
            ops.append(
                Set(
                    record_key,
                    record.encode(),
                    FLAGS_RECORD,
                    self.config.record_ttl,
                    cas=self._record_cas,
                )
            )
        append = bool(added or removed or new_flashes)
        if append:
            lines = index_lines(added, removed, new_flashes)
            if len(lines) > self._room:
                # memcached would not only refuse a data block this large: it
                # would delete the record, ending the session.
                self._clear_changes()
                self._report(sid, [Get(record_key)], [Failed("index lines over item_size_max")])
                return None
            ops.append(Set(record_key, lines, mode="append"))
        first = len(ops)
        ops += body
        ops.append(Get(record_key))
        results = self._execute(sid, ops, on_sent)
        if results is None:
            if self.modified:
                self._after_failed_write(sid)
            return None
        if not is_live(results[-1]):
            log.info("session %s ended during the request; its writes undone", log_token(sid))
            self._undo(sid, ops)
            self._clear_changes()
            self._start_fresh()
            return None
        if append and results[first - 1] is not True:
            # The record is live but refused the new index lines (it would
            # outgrow an item): these writes cannot be listed, so they are
            # taken back and reported as not saved; the session lives on.
            self._undo(sid, ops)
            self._clear_changes()
            self._report(sid, ops[first - 1 : first], results[first - 1 : first])
            return None
        if compact and results[0] is True:
            record = record.compacted()
        if append:
            record = record.changed(added, removed, new_flashes)
        self._record = record
        self._relist(sid, results[-1], written, deleted)
        if self.config.cookie_args.max_age is not None:
            self.cookie_action = "set"  # a write renews a persistent cookie
        return results[first:-1]

    def _relist(self, sid: str, readback: Result, written: set[str], deleted: set[str]) -> None:
        """Make the index agree with what this request just wrote.

        The batch listed names against this request's copy of the index. If
        another request changed it meanwhile (deleting a name this one just
        wrote, or adding one it just deleted), the record read back at the
        end of the batch shows it, and one more append puts it right: the last
        line for a name wins. Unchanged records come from the parse cache.
        """
        if not isinstance(readback, Item):
            return
        try:
            latest = Record.parse(readback)
        except ValueError:
            return
        hidden = written - latest.names
        stale = deleted & latest.names
        if hidden or stale:
            line = index_lines(hidden, stale)
            self._execute(sid, [Set(self._ks.record(sid), line, mode="append")])
            record = self._record
            self._record = dataclasses.replace(record, names=(record.names | hidden) - stale)

    def _undo(self, sid: str, ops: list[Op]) -> None:
        record_key = self._ks.record(sid)
        keys = {op.key for op in ops if isinstance(op, Set) and op.key != record_key}
        if keys:
            self._execute(sid, [Delete(k) for k in sorted(keys)])

    def _report(self, sid: str, ops: Sequence[Op], results: Sequence[Result]) -> None:
        """Log the writes the server refused; in strict mode, raise."""
        failed = [
            result.reason if isinstance(result, Failed) else "append refused (item too large)"
            for op, result in zip(ops, results, strict=True)
            if isinstance(result, Failed)
            or (result is False and isinstance(op, Set) and op.mode == "append")
        ]
        if failed:
            log.error(
                "session %s: %d write(s) refused by %s: %s",
                log_token(sid),
                len(failed),
                self.store.describe(sid),
                failed[0][:80],
            )
            if self.config.strict:
                raise SessionUnavailableError(failed[0], self.store.describe(sid))

    def _after_failed_write(self, sid: str) -> None:
        log.error(
            "session %s: %d change(s) not saved, %s unavailable",
            log_token(sid),
            len(self._dirty) + len(self._deleted),
            self.store.describe(sid),
        )
        self._clear_changes()

    def _clear_changes(self) -> None:
        self._dirty.clear()
        self._deleted.clear()
        self._flashes_out.clear()
        if self._flashes_taken:
            self._flash_item = None
        self._flashes_taken = False
        self._force_save = False

    # ------------------------------------------------------------------ lifecycle

    def regenerate_id(self) -> None:
        """Move every variable to a new id; the old id is dead from now on.

        A logout of the old id in a concurrent request wins: if one began
        before this regeneration claimed the session, or completed while it
        copied the variables, the copy is undone and the session starts
        afresh. Two regenerations racing end the same way.
        """
        self._ensure_loaded()
        if self._state == "unavailable":
            log.error(
                "session %s: id not regenerated, %s unavailable",
                self._tag(),
                self.store.describe(self._sid or ""),
            )
            return
        if self._state != "stored":
            self._sid = self._fresh_id()
            return
        old = self._sid
        assert old is not None
        record_key = self._ks.record(old)
        # Claim the old session: from here on, a write to it in another
        # request finds it dead and undoes itself.
        claim = self._execute(
            old, [Set(record_key, DEAD_LINE + b"\n", mode="append"), Get(record_key)]
        )
        if claim is None:
            log.error("session %s: id not regenerated, its node failed", self._tag())
            return
        latest = _parse_or_none(claim[1]) if claim[0] is True else None
        if latest is None or latest.dead != 1:
            self._ended_by_another(old)
            return
        self._fetch(sorted(n for n in latest.names if n not in self._values))
        if latest.flashes and self._flash_item is _MISSING:
            got = self._execute(old, [Get(self._ks.internal(old, "flashes"))])
            self._flash_item = got[0] if got and isinstance(got[0], Item) else None
        for name in sorted(latest.names):
            value = self._values.get(name, _MISSING)
            if value is _MISSING or name in self._dirty or name in self._deleted:
                continue
            item = self._items.get(name)
            self._dirty[name] = item.value if item else self._serialize(name, value)
        flash = self._flash_item
        if isinstance(flash, Item) and not self._flashes_taken:
            self._flashes_out.insert(0, flash.value)
        self._deleted.clear()
        self._flashes_taken = False
        self._flash_item = _MISSING
        # The absolute timeout still counts from the session's creation.
        self._record = dataclasses.replace(self._blank_record(), created=latest.created)
        self._record_cas = 0
        self._sid = None
        self._state = "new"
        self._items.clear()
        self._force_save = True
        self._save_new()
        new = self._sid
        if new is not None and self._state == "stored":
            # A logout that completed while the variables were copied deleted
            # the old record: the copy must not outlive it.
            check = self._execute(old, [Get(record_key)])
            current = _parse_or_none(check[0]) if check else None
            if current is None or current.dead != 1:
                self._undo_session(new)
                self._ended_by_another(old)
                return
        self._delete_keys(old, latest)
        log.info("session %s regenerated as %s", log_token(old), self._tag())

    def _ended_by_another(self, sid: str) -> None:
        log.info("session %s: ended by another request; not regenerated", log_token(sid))
        self._dirty.clear()
        self._deleted.clear()
        self._flashes_out.clear()
        self._flashes_taken = False
        self._force_save = False
        self.cookie_action = "delete"
        self._start_fresh()

    def _undo_session(self, sid: str) -> None:
        """Delete a session this request just stored (record and variables)."""
        self._delete_keys(sid, self._record)

    def destroy(self) -> None:
        """Delete every key of the session on the server and expire the cookie.

        If the session's node cannot be reached, the deletion is kept and
        completed when it answers again (see ``Store.defer``).
        """
        self._ensure_loaded()
        if self._sid is not None and self._state in ("stored", "unavailable"):
            self._delete_everything(self._sid)
        elif self._ending is not None:
            # Marked by a regeneration under way: deleting it makes that
            # regeneration undo its copy.
            self._delete_everything(self._ending, _UNLOADED)
        self._dirty.clear()
        self._deleted.clear()
        self._flashes_out.clear()
        self._flashes_taken = False
        self.cookie_action = "delete"
        self._start_fresh()

    def _delete_everything(self, sid: str, known: Record | None = None) -> None:
        """Mark the session dead, then delete the record and every variable.

        Two round trips, however busy the session: appending ``!dead`` and
        reading the names happen in one batch, so any name appended before the
        mark is read here, and any writer after it undoes its own writes.
        """
        record = known or self._record
        record_key = self._ks.record(sid)
        marked = self._execute_or_defer(
            sid, [Set(record_key, DEAD_LINE + b"\n", mode="append"), Get(record_key)], record
        )
        if marked is None:
            return
        current = _parse_or_none(marked[1])
        if current is not None:
            record = dataclasses.replace(
                record, ever=record.ever | current.ever, flashes=record.flashes or current.flashes
            )
        self._delete_keys(sid, record)

    def _delete_keys(self, sid: str, record: Record) -> None:
        self._execute_or_defer(sid, self._deletion_ops(sid, record), record)

    def _deletion_ops(self, sid: str, record: Record) -> list[Op]:
        ks = self._ks
        ops: list[Op] = [Delete(ks.record(sid))]
        ops += [Delete(key) for key in ks.variables(sid, sorted(record.ever))]
        if record.flashes:
            ops.append(Delete(ks.internal(sid, "flashes")))
        return ops

    def _execute_or_defer(
        self, sid: str, ops: Sequence[Op], record: Record
    ) -> list[Result] | None:
        """Run part of a deletion; if the store fails, leave the rest to it.

        Without the record the session cannot be loaded again, so once the
        node answers, deleting it (and the variables known here) completes
        the logout; variables it did not know of expire with their TTL.
        """
        try:
            return self.store.execute(sid, ops)
        except SessionUnavailableError:
            self._store_failed = True
            self.store.defer(sid, self._deletion_ops(sid, record))
            log.error(
                "session %s: could not be deleted now (%s unavailable); "
                "deleting it when the node answers again",
                log_token(sid),
                self.store.describe(sid),
            )
            if self.config.strict:
                raise
            return None

    # ------------------------------------------------------------------ atomic updates

    def incr(self, name: str, delta: int = 1) -> int:
        """Add ``delta`` to an integer variable atomically on the server.

        A missing variable counts as 0. Counters are unsigned, as memcached's
        are: subtracting below zero gives 0. Raises ``TypeError`` if the
        variable holds anything but a non-negative int. Runs at once (one round
        trip, after storing a new session) rather than at the end of dispatch.
        """
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise TypeError("delta must be an int")
        name_suffix(name)
        if abs(delta) >= 1 << 64:
            raise ValueError("delta must be smaller than 2**64 in size")
        ttl = self.config.ttl
        # Counters live as decimal text (memcached's own format) under the JSON
        # flags, whichever serializer the session uses.
        result = self._atomic(
            name,
            lambda key: [Set(key, b"0", FLAGS_JSON, ttl, mode="add"), Incr(key, delta, ttl)],
        )
        if result is None:
            cached = self._values.get(name, _MISSING)
            return cached if isinstance(cached, int) else 0
        if isinstance(result[1], Failed):
            raise TypeError(
                f"session variable {name!r} does not hold a counter "
                "(an int from 0 to 2**64-1 stored as a counter or with the JSON serializer)"
            )
        value = result[1] if isinstance(result[1], int) else 0
        self._values[name] = value
        self._items.pop(name, None)
        return value

    def update_var(self, name: str, fn: Callable[[Any], Any], attempts: int = 10) -> Any:
        """Replace the value with ``fn(current)`` by compare-and-set.

        ``fn`` gets ``None`` when the variable is missing and may run more than
        once. Raises ``UpdateConflictError`` after ``attempts`` lost races.
        Returns the stored value (``None`` if the store is unavailable).
        """
        name_suffix(name)
        self._flush_for_atomic()
        flags, ttl = self.config.serializer.flags, self.config.ttl
        for _ in range(attempts):
            sid = self._sid
            if sid is None or self._state != "stored":
                return None
            key = self._ks.variable_fast(sid, name)
            got = self._execute(sid, [Get(key, touch=ttl)])
            if got is None:
                return None
            item = got[0] if isinstance(got[0], Item) else None
            self._values.pop(name, None)
            self._remember(name, item)
            current = self._values.get(name, _MISSING)
            new = fn(None if current is _MISSING else current)
            data = self._serialize(name, new)
            if item is None:
                write = Set(key, data, flags, ttl, mode="add")
            else:
                write = Set(key, data, flags, ttl, cas=item.cas)
            result = self._atomic(name, _constant([write]))
            if result is None:
                return None
            if result[0] is True:
                self._values[name] = new
                self._items.pop(name, None)
                return new
        raise UpdateConflictError(name, attempts)

    def _flush_for_atomic(self) -> None:
        """Atomic operations need the session stored; store it now if it is new."""
        self._ensure_loaded()
        if self._state == "unavailable":
            # Its node is down: the update is not saved, and the session (still
            # there) is neither replaced nor adopted unverified.
            log.error(
                "session %s: atomic update not saved, %s unavailable",
                self._tag(),
                self.store.describe(self._sid or ""),
            )
            return
        if self._state == "new":
            self._force_save = True
        if self.modified:
            # Pending sets and deletes come first, as the handler wrote them.
            self.save()

    def _atomic(self, name: str, build: Callable[[str], list[Op]]) -> list[Result] | None:
        self._flush_for_atomic()
        sid = self._sid
        if sid is None or self._state != "stored":
            return None
        results = self._guarded_write(sid, build(self._ks.variable_fast(sid, name)), {name}, set())
        if results is not None:
            self._dirty.pop(name, None)
            self._deleted.discard(name)
        return results


def _parse_or_none(item: Result) -> Record | None:
    """The record in ``item``, or None if it is missing or not a record."""
    if not isinstance(item, Item):
        return None
    try:
        return Record.parse(item)
    except ValueError:
        return None


def _constant(ops: list[Op]) -> Callable[[str], list[Op]]:
    return lambda _key: ops
