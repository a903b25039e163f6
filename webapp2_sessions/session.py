"""The per-request session: a lazy, change-tracking view of per-variable keys.

Costs, in store round trips: nothing until the session is used; one batch to
read the session record together with every variable the handler is known to
read; one batch at the end of the request with every change. Each variable is
its own key, so two requests that write different variables never undo each
other's work.

The session record (``<prefix><id>``) is what makes an id real: the server
adopts only ids whose record exists. It holds the creation time, optional
client bindings and, appended line by line, the name of every variable the
session ever stored, so that logout can find and delete them all, including
names added by requests running at the same time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from .config import SessionConfig
from .errors import SessionUnavailableError, UpdateConflictError
from .ids import KeyScheme, log_token, name_suffix, new_session_id
from .stores import Delete, Exists, Failed, Get, Incr, Item, Op, Result, Set, Store

log = logging.getLogger("webapp2_sessions")

#: Client flags of session records and of the flash list.
FLAGS_RECORD = 0x5753_0010
FLAGS_FLASHES = 0x5753_0011
_FLASHES_LINE = b"!flashes"
_MISSING: Any = object()
_DESTROY_ATTEMPTS = 8
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
        self._learned: set[str] = set()
        self._lock = threading.Lock()
        #: The handler reads flashes, so fetch them with the first batch.
        self.flashes = False

    def names(self) -> frozenset[str]:
        with self._lock:
            return self.declared | self._learned

    def saw(self, name: str) -> None:
        if not self.learn or name in self.declared or name in self._learned:
            return
        with self._lock:
            if len(self._learned) < _MAX_LEARNED:
                self._learned.add(name)


def _constant(ops: list[Op]) -> Callable[[str], list[Op]]:
    return lambda _key: ops


def _hash(text: str | None) -> str | None:
    if text is None:
        return None
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:32]


class Session(MutableMapping[str, Any]):
    """One request's view of one session.

    Reads go through a per-request cache, so reading a name twice, or reading
    what this request wrote, costs nothing. Writes are kept until ``save()``,
    which the handler mixin calls at the end of dispatch.
    """

    def __init__(
        self,
        config: SessionConfig,
        store: Store,
        cookie_sid: str | None,
        *,
        cookie_present: bool = False,
        client: ClientInfo | None = None,
        prefetch: Prefetch | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self._ks = KeyScheme(config.key_prefix)
        self.client = client or ClientInfo()
        self.prefetch = prefetch or Prefetch()
        self._clock = clock
        self._sid: str | None = cookie_sid
        # 'unloaded': a cookie names an id not yet checked on the server;
        # 'stored': the id's record exists; 'new': nothing stored yet;
        # 'unavailable': the store failed, reads give defaults.
        self._state = "unloaded" if cookie_sid else "new"
        self._created = clock()
        self._names: set[str] = set()  # variable names the record lists
        self._has_flashes = False  # the record lists the flash key
        self._force_save = False
        self._values: dict[str, Any] = {}
        self._items: dict[str, Item] = {}
        self._dirty: dict[str, bytes] = {}
        self._deleted: set[str] = set()
        self._flashes_out: list[bytes] = []
        self._flash_item: Item | object | None = _MISSING
        self._flashes_taken = False
        #: The request depended on the session (for Vary: Cookie).
        self.accessed = False
        #: What the response must do with the cookie: None, 'set' or 'delete'.
        self.cookie_action: str | None = "delete" if cookie_present and not cookie_sid else None

    # ------------------------------------------------------------------ identity

    @property
    def session_id(self) -> str:
        """The id; a new visitor gets one that is stored on the first write."""
        self._ensure_loaded()
        if self._sid is None:
            self._sid = self._fresh_id()
        return self._sid

    @property
    def is_new(self) -> bool:
        """True until something of this session is stored on the server."""
        self._ensure_loaded()
        return self._state != "stored"

    def _fresh_id(self) -> str:
        available = getattr(self.store, "available", None)
        sid = new_session_id()
        # In a cluster, prefer an id whose node is up: a visitor whose node
        # just died can then start over at once on a live one.
        for _ in range(16):
            if available is None or available(sid):
                break
            sid = new_session_id()
        return sid

    # ------------------------------------------------------------------ loading

    def load(self, *names: str) -> None:
        """Fetch the session and ``names`` (plus the handler's usual names) now.

        Later reads of those names cost nothing. Calling it when the session is
        already loaded fetches whichever of ``names`` are not cached yet.
        """
        for name in names:
            name_suffix(name)
        self._ensure_loaded(names)
        if self._state == "stored":
            self._fetch([n for n in names if n not in self._values and n in self._names])

    def _ensure_loaded(self, extra: Iterable[str] = ()) -> None:
        self.accessed = True
        if self._state != "unloaded":
            return
        assert self._sid is not None
        wanted = [n for n in self.prefetch.names().union(extra) if n not in self._values]
        sid = self._sid
        ops: list[Op] = [Get(self._ks.record(sid), touch=self.config.record_ttl)]
        ops += [Get(self._ks.variable(sid, n), touch=self.config.ttl) for n in wanted]
        flashes = self.prefetch.flashes and self._flash_item is _MISSING
        if flashes:
            ops.append(Get(self._ks.internal(sid, "flashes"), touch=self.config.ttl))
        results = self._execute(sid, ops)
        if results is None:
            self._state = "unavailable"
            return
        record = results[0]
        if not self._adopt(sid, record):
            return
        self._state = "stored"
        for name, result in zip(wanted, results[1:], strict=False):
            self._remember(name, result)
        if flashes:
            self._flash_item = results[-1] if isinstance(results[-1], Item) else None

    def _adopt(self, sid: str, record: Result) -> bool:
        """Accept the record of ``sid``, or start afresh; say which."""
        parsed = self._parse_record(sid, record)
        if parsed is None:
            self._start_fresh()
            return False
        header, names = parsed
        now = self._clock()
        created = header.get("c")
        reason = None
        if not isinstance(created, (int, float)):
            reason = "malformed record"
        elif self.config.absolute_timeout and now - created > self.config.absolute_timeout:
            reason = "absolute timeout"
        elif self.config.bind_user_agent and header.get("ua") != _hash(self.client.user_agent):
            reason = "user agent changed"
        elif self.config.bind_ip and header.get("ip") != _hash(self.client.remote_addr):
            reason = "client address changed"
        if reason is not None:
            log.info("session %s ended: %s", log_token(sid), reason)
            self._names, self._has_flashes = names
            self._state = "stored"
            self._delete_everything(sid)
            self._start_fresh()
            return False
        self._created = float(created)  # type: ignore[arg-type]
        self._names, self._has_flashes = names
        return True

    def _parse_record(
        self, sid: str, record: Result
    ) -> tuple[dict[str, Any], tuple[set[str], bool]] | None:
        if not isinstance(record, Item):
            return None
        if record.flags != FLAGS_RECORD:
            log.warning("session %s: record has foreign flags, ignored", log_token(sid))
            return None
        try:
            head, _, rest = record.value.partition(b"\n")
            header = json.loads(head)
            names: set[str] = set()
            flashes = False
            for line in rest.split(b"\n"):
                if line.startswith(b'"'):
                    names.add(json.loads(line))
                elif line == _FLASHES_LINE:
                    flashes = True
            if not isinstance(header, dict):
                raise ValueError("header is not an object")
        except (ValueError, UnicodeDecodeError, RecursionError):
            log.warning("session %s: unreadable record, ignored", log_token(sid))
            return None
        return header, (names, flashes)

    def _start_fresh(self) -> None:
        self._state = "new"
        self._sid = None
        self._created = self._clock()
        self._names = set()
        self._has_flashes = False
        self._values.clear()
        self._items.clear()
        self._flash_item = _MISSING
        if self.cookie_action is None:
            self.cookie_action = "delete"

    def _fetch(self, names: list[str]) -> None:
        if not names or self._sid is None:
            return
        sid = self._sid
        ops = [Get(self._ks.variable(sid, n), touch=self.config.ttl) for n in names]
        results = self._execute(sid, ops)
        for name, result in zip(names, results or [None] * len(names), strict=False):
            self._remember(name, result)

    def _remember(self, name: str, result: Result) -> None:
        if not isinstance(result, Item):
            self._values[name] = _MISSING
            return
        serializer = self.config.serializer
        try:
            if result.flags != serializer.flags:
                raise ValueError(f"flags {result.flags:#x}")
            value = serializer.loads(result.value)
        except ValueError as exc:
            log.warning(
                "session %s: value of a variable is not ours (%s), ignored",
                log_token(self._sid or ""),
                str(exc)[:60],
            )
            self._values[name] = _MISSING
            return
        self._values[name] = value
        self._items[name] = result

    def _execute(self, sid: str, ops: Sequence[Op]) -> list[Result] | None:
        """Run a batch; None when the store is down and strict mode is off."""
        try:
            return self.store.execute(sid, ops)
        except SessionUnavailableError:
            if self.config.strict:
                raise
            return None

    # ------------------------------------------------------------------ reading

    def get(self, name: str, default: Any = None) -> Any:
        value = self._get(name)
        return default if value is _MISSING else value

    def _get(self, name: str) -> Any:
        name_suffix(name)  # type and emptiness checks
        self.prefetch.saw(name)
        if name in self._values:
            self._ensure_loaded()
            return self._values[name]
        self._ensure_loaded((name,))
        if name not in self._values:
            if self._state == "stored" and name in self._names:
                self._fetch([name])
            else:
                self._values[name] = _MISSING
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
        names = set(self._names)
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
        room = self.config.item_size_max - 300  # key, header and memcached's overhead
        if len(data) > room:
            raise ValueError(
                f"session variable {name!r} is {len(data)} bytes serialized; "
                f"items are limited to {room} (item_size_max={self.config.item_size_max})"
            )
        return data

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
        self._flashes_out.append(line.replace(b"\n", b"\\n") + b"\n")

    def get_flashes(self) -> list[tuple[Any, str | None]]:
        """Every flash stored so far, oldest first; they are then cleared."""
        self.prefetch.flashes = self.prefetch.learn or self.prefetch.flashes
        self._ensure_loaded()
        if self._flash_item is _MISSING:
            self._flash_item = None
            if self._state == "stored" and self._has_flashes and self._sid is not None:
                got = self._execute(
                    self._sid, [Get(self._ks.internal(self._sid, "flashes"), self.config.ttl)]
                )
                if got is not None and isinstance(got[0], Item):
                    self._flash_item = got[0]
        out: list[tuple[Any, str | None]] = []
        item = self._flash_item
        if isinstance(item, Item) and item.flags == FLAGS_FLASHES:
            for line in item.value.split(b"\n"):
                if not line:
                    continue
                try:
                    value, level = json.loads(line)
                    out.append((value, level))
                except (ValueError, TypeError, RecursionError):
                    log.warning("session %s: unreadable flash ignored", log_token(self._sid or ""))
            self._flashes_taken = True
        # Flashes queued by this very request were never stored: hand them back too.
        for line in self._flashes_out:
            value, level = json.loads(line)
            out.append((value, level))
        self._flashes_out.clear()
        return out

    # ------------------------------------------------------------------ saving

    def save(self) -> None:
        """Write every change in one batch. Called at the end of dispatch."""
        if not self.modified:
            return
        self._ensure_loaded()
        if self._state == "unavailable":
            # The session's node is down: start over on a live one (in a
            # cluster) rather than lose this request's writes as well.
            self._start_fresh()
        if self._state == "new":
            self._save_new()
        else:
            self._save_stored()

    def _header(self) -> bytes:
        header: dict[str, Any] = {"v": 1, "c": round(self._created, 3)}
        if self.config.bind_user_agent:
            header["ua"] = _hash(self.client.user_agent)
        if self.config.bind_ip:
            header["ip"] = _hash(self.client.remote_addr)
        return json.dumps(header, separators=(",", ":")).encode() + b"\n"

    @staticmethod
    def _index_lines(names: Iterable[str], flashes: bool = False) -> bytes:
        lines = [json.dumps(n).encode() + b"\n" for n in sorted(names)]
        if flashes:
            lines.append(_FLASHES_LINE + b"\n")
        return b"".join(lines)

    def _variable_ops(self, sid: str) -> list[Op]:
        ttl = self.config.ttl
        flags = self.config.serializer.flags
        ops: list[Op] = [
            Set(self._ks.variable(sid, n), data, flags, ttl) for n, data in self._dirty.items()
        ]
        ops += [Delete(self._ks.variable(sid, n)) for n in sorted(self._deleted)]
        if self._flashes_taken and isinstance(self._flash_item, Item):
            cas = self._flash_item.cas or None
            ops.append(Delete(self._ks.internal(sid, "flashes"), cas=cas))
        if self._flashes_out:
            key = self._ks.internal(sid, "flashes")
            ops.append(Set(key, b"", FLAGS_FLASHES, ttl, mode="add"))
            ops.append(Set(key, b"".join(self._flashes_out), mode="append"))
        return ops

    def _save_new(self) -> None:
        names = set(self._dirty)
        for _ in range(3):
            sid = self._sid or self._fresh_id()
            self._sid = sid
            record = Set(
                self._ks.record(sid),
                self._header() + self._index_lines(names, bool(self._flashes_out)),
                FLAGS_RECORD,
                self.config.record_ttl,
                mode="add",
            )
            results = self._execute(sid, [record, *self._variable_ops(sid)])
            if results is None:
                self._after_failed_write(sid)
                return
            if results[0] is True:
                self._state = "stored"
                self._names = names
                self._has_flashes = bool(self._flashes_out)
                self.cookie_action = "set"
                self._report(sid, results[1:])
                self._clear_changes()
                return
            # An id already taken (or a ghost of one): never share it.
            self._sid = None
        raise RuntimeError("could not find a free session id")  # pragma: no cover

    def _save_stored(self) -> None:
        sid = self._sid
        assert sid is not None
        new_names = set(self._dirty) - self._names
        new_flashes = bool(self._flashes_out) and not self._has_flashes
        appended = bool(new_names) or new_flashes
        ops: list[Op] = []
        if appended:
            index = self._index_lines(new_names, new_flashes)
            ops.append(Set(self._ks.record(sid), index, mode="append"))
        ops += self._variable_ops(sid)
        # Checked last: if the record vanished while this batch ran (logout in
        # another request, expiry), the writes above must not outlive it.
        ops.append(Exists(self._ks.record(sid)))
        results = self._execute(sid, ops)
        if results is None:
            self._after_failed_write(sid)
            return
        if results[-1] is not True or (appended and results[0] is not True):
            log.info("session %s ended during the request; its writes undone", log_token(sid))
            self._undo(sid, ops)
            self._clear_changes()
            self._start_fresh()
            return
        self._names |= new_names
        self._has_flashes = self._has_flashes or new_flashes
        self._report(sid, results[1 if appended else 0 : -1])
        if self.config.cookie_args.max_age is not None:
            self.cookie_action = "set"  # slide the persistent cookie's expiry
        self._clear_changes()

    def _undo(self, sid: str, ops: list[Op]) -> None:
        keys = {op.key for op in ops if isinstance(op, Set) and op.key != self._ks.record(sid)}
        if keys:
            self._execute(sid, [Delete(k) for k in sorted(keys)])

    def _report(self, sid: str, results: list[Result]) -> None:
        failed = [r for r in results if isinstance(r, Failed)]
        if failed:
            log.error(
                "session %s: %d write(s) refused by %s: %s",
                log_token(sid),
                len(failed),
                self.store.describe(sid),
                failed[0].reason[:80],
            )
            if self.config.strict:
                raise SessionUnavailableError(failed[0].reason, self.store.describe(sid))

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
        """Move every variable to a new id; the old id is dead from now on."""
        self._ensure_loaded()
        if self._state != "stored":
            self._sid = self._fresh_id()
            return
        old = self._sid
        assert old is not None
        names = sorted(self._names)
        self._fetch([n for n in names if n not in self._values])
        if self._has_flashes and self._flash_item is _MISSING:
            got = self._execute(old, [Get(self._ks.internal(old, "flashes"))])
            self._flash_item = got[0] if got and isinstance(got[0], Item) else None
        for name in names:
            value = self._values.get(name, _MISSING)
            if value is not _MISSING and name not in self._dirty and name not in self._deleted:
                item = self._items.get(name)
                self._dirty[name] = item.value if item else self._serialize(name, value)
        flash = self._flash_item
        if isinstance(flash, Item) and not self._flashes_taken:
            self._flashes_out.insert(0, flash.value)
        self._deleted.clear()
        self._flashes_taken = False
        self._flash_item = _MISSING
        old_names, old_flashes = set(self._names), self._has_flashes
        self._sid = None
        self._state = "new"
        self._items.clear()
        self._force_save = True
        self._save_new()
        self._delete_everything(old, (old_names, old_flashes))
        log.info("session %s regenerated as %s", log_token(old), log_token(self._sid or ""))

    def destroy(self) -> None:
        """Delete every key of the session on the server and expire the cookie."""
        self._ensure_loaded()
        if self._state == "stored" and self._sid is not None:
            self._delete_everything(self._sid)
        self._dirty.clear()
        self._deleted.clear()
        self._flashes_out.clear()
        self._flashes_taken = False
        self.cookie_action = None
        self._start_fresh()
        self.cookie_action = "delete"

    def _delete_everything(self, sid: str, known: tuple[set[str], bool] | None = None) -> None:
        """Delete the record, then every variable it lists.

        The record is deleted only if nobody appended to it since we read it
        (compare-and-set), so a name added concurrently is always among those
        deleted; a writer that loses the race removes its own writes (see
        ``_save_stored``).
        """
        record_key = self._ks.record(sid)
        for _ in range(_DESTROY_ATTEMPTS):
            results = self._execute(sid, [Get(record_key)])
            if results is None:
                log.error("session %s: could not be deleted on the server", log_token(sid))
                return
            item = results[0]
            parsed = self._parse_record(sid, item)
            names, flashes = known or (self._names, self._has_flashes)
            if parsed:
                names, flashes = names | parsed[1][0], flashes or parsed[1][1]
            ops: list[Op] = []
            if isinstance(item, Item):
                ops.append(Delete(record_key, cas=item.cas))
            ops += [Delete(self._ks.variable(sid, n)) for n in sorted(names)]
            if flashes:
                ops.append(Delete(self._ks.internal(sid, "flashes")))
            done = self._execute(sid, ops)
            if done is None or not isinstance(item, Item) or done[0] is True:
                return
        log.error("session %s: record kept changing; deletion incomplete", log_token(sid))

    # ------------------------------------------------------------------ atomic updates

    def incr(self, name: str, delta: int = 1) -> int:
        """Add ``delta`` to an integer variable atomically on the server.

        A missing variable counts as 0. Counters are unsigned, as memcached's
        are: subtracting below zero gives 0. Raises ``TypeError`` if the variable
        holds something other than a non-negative int.
        """
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise TypeError("delta must be an int")
        name_suffix(name)
        result = self._atomic(
            name,
            lambda key: [
                Set(key, b"0", self.config.serializer.flags, self.config.ttl, mode="add"),
                Incr(key, delta, self.config.ttl),
            ],
        )
        if result is None:
            value = self._values.get(name, _MISSING)
            return int(value) if isinstance(value, int) and value is not _MISSING else 0
        if isinstance(result[1], Failed):
            raise TypeError(f"session variable {name!r} does not hold a non-negative int")
        value = result[1] if isinstance(result[1], int) else 0
        self._values[name] = value
        return value

    def update_var(self, name: str, fn: Callable[[Any], Any], attempts: int = 10) -> Any:
        """Replace the value with ``fn(current)`` by compare-and-set.

        ``fn`` gets ``None`` when the variable is missing and may run more than
        once. Raises ``UpdateConflictError`` after ``attempts`` lost races.
        """
        name_suffix(name)
        self._flush_for_atomic()
        for _ in range(attempts):
            sid = self._sid
            if sid is None:
                return None
            key = self._ks.variable(sid, name)
            got = self._execute(sid, [Get(key, touch=self.config.ttl)])
            if got is None:
                return None
            item = got[0] if isinstance(got[0], Item) else None
            self._remember(name, item)
            current = self._values.get(name, _MISSING)
            new = fn(None if current is _MISSING else current)
            data = self._serialize(name, new)
            flags = self.config.serializer.flags
            if item is None:
                write = Set(key, data, flags, self.config.ttl, mode="add")
            else:
                write = Set(key, data, flags, self.config.ttl, cas=item.cas)
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
        if self._state in ("new", "unavailable"):
            self._state = "new"
            self._force_save = True
            self.save()

    def _atomic(self, name: str, build: Callable[[str], list[Op]]) -> list[Result] | None:
        self._flush_for_atomic()
        sid = self._sid
        if sid is None or self._state != "stored":
            return None
        ops: list[Op] = []
        record = self._ks.record(sid)
        new_name = name not in self._names
        if new_name:
            ops.append(Set(record, self._index_lines([name]), mode="append"))
        body = build(self._ks.variable(sid, name))
        ops += body
        ops.append(Exists(record))
        results = self._execute(sid, ops)
        if results is None:
            return None
        if results[-1] is not True:
            self._undo(sid, ops)
            self._start_fresh()
            return None
        self._names.add(name)
        self._dirty.pop(name, None)
        self._deleted.discard(name)
        start = 1 if new_name else 0
        return results[start : start + len(body)]
