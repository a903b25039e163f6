"""The storage contract, and the embedded in-process store.

A store runs a *batch* of operations, all on the node that holds the session
they belong to, in one round trip. The session builds at most one batch
to read and one to write per request, which is what keeps per-variable keys
as cheap as a whole-session blob.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from .errors import SessionUnavailableError

log = logging.getLogger("webapp2_sessions")

SetMode = Literal["set", "add", "append"]

# Operations and results are values: built once, read by the store, never
# changed. They are not frozen only because a frozen dataclass costs twice as
# much to build, and a request builds about a dozen of them.


@dataclass(slots=True)
class Item:
    """A stored value with its client flags and compare-and-set token."""

    value: bytes
    flags: int
    cas: int = 0


@dataclass(slots=True)
class Get:
    """Fetch ``key``. ``touch`` also resets its TTL, in the same command."""

    key: str
    touch: int | None = None


@dataclass(slots=True)
class Set:
    """Store ``value``: ``set`` always, ``add`` only if absent, ``append`` only if present.

    With ``cas``, the write happens only if the item still has that token.
    """

    key: str
    value: bytes
    flags: int = 0
    ttl: int = 0
    mode: SetMode = "set"
    cas: int | None = None


@dataclass(slots=True)
class Delete:
    """Delete ``key`` (only if its token is still ``cas``, when given)."""

    key: str
    cas: int | None = None


@dataclass(slots=True)
class Incr:
    """Add ``delta`` (negative subtracts, stopping at 0) to a decimal counter."""

    key: str
    delta: int
    ttl: int


Op = Get | Set | Delete | Incr


@dataclass(slots=True)
class Failed:
    """One operation the server refused (e.g. a non-numeric value for Incr)."""

    reason: str


#: What ``execute`` returns per operation: Get gives ``Item | None``; Set and
#: Delete give ``bool``; Incr gives ``int`` or ``None`` if missing;
#: any of them may give ``Failed``.
Result = Item | None | bool | int | Failed


class Batch:
    """The operations of one round trip, in named parts.

    Whoever builds a batch names each part (``"record"``, ``"values"``...) and
    reads the results back by those names, never by position.
    """

    __slots__ = ("_parts", "ops")

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._parts: dict[str, tuple[int, int]] = {}

    def add(self, part: str, *ops: Op) -> None:
        start = len(self.ops)
        self.ops.extend(ops)
        self._parts[part] = (start, len(self.ops))

    def read(self, results: Sequence[Result]) -> BatchResults:
        return BatchResults(results, self._parts)


class BatchResults:
    """The results of a ``Batch``, by part name."""

    __slots__ = ("_parts", "_results")

    def __init__(self, results: Sequence[Result], parts: dict[str, tuple[int, int]]) -> None:
        self._results = results
        self._parts = parts

    def one(self, part: str) -> Result:
        """The result of the single operation of ``part``."""
        return self._results[self._parts[part][0]]


class Store(abc.ABC):
    """Where session data lives. Implementations must be thread-safe.

    ``execute`` either runs every operation and returns one result each, in
    order, or raises ``SessionUnavailableError`` when the node could not be
    reached (some operations may then have been applied).
    """

    @abc.abstractmethod
    def execute(
        self, session_id: str, ops: Sequence[Op], *, on_sent: Callable[[], object] | None = None
    ) -> list[Result]:
        """Run ``ops`` in one round trip on the node that owns ``session_id``.

        ``on_sent`` is called once the batch is on its way, before waiting
        for the replies, so that work which does not depend on them (the
        response's headers, say) overlaps the round trip. A store that does
        not wait calls it before returning. An exception it raises is raised
        by ``execute`` once the replies have been read.
        """

    def close(self) -> None:  # noqa: B027 - optional for stores without connections
        """Release connections; the store reconnects if used again."""

    def describe(self, session_id: str) -> str:
        """Where ``session_id`` lives, for log lines (``host:port`` or a name)."""
        return type(self).__name__

    def available(self, session_id: str) -> bool:
        """False while the node of ``session_id`` is known to be unreachable.

        New sessions are given ids whose node is available; existing ones are
        never moved.
        """
        return True

    def defer(
        self,
        session_id: str,
        ops: Sequence[Op],
        then: Callable[[Sequence[Result]], Sequence[Op]] | None = None,
    ) -> None:
        """Run ``ops`` on ``session_id``'s node as soon as it answers again.

        For deletions that must not be lost to an outage (a logout).
        ``then(results)`` gives the operations of a second step, run right
        after. A store whose nodes cannot be unreachable runs them at once.
        """
        try:
            results = self.execute(session_id, ops)
            if then is not None:
                more = then(results)
                if more:
                    self.execute(session_id, more)
        except SessionUnavailableError as exc:
            log.error("%s: deferred operations lost (%s)", self.describe(session_id), exc)


#: Bytes memcached 1.6 counts against ``-I`` beside an item's key and value
#: (its header, CAS and the value's CRLF), as measured.
_ITEM_OVERHEAD = 59
_TOO_LARGE = Failed("SERVER_ERROR object too large for cache")


class MemoryStore(Store):
    """A thread-safe in-process store with TTLs and LRU eviction.

    For development and single-process deployments: every process has its own
    copy, so sessions do not survive a restart and are not shared between
    workers. It follows memcached's semantics closely enough that code tested
    against it behaves the same on a server.
    """

    def __init__(
        self,
        max_items: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        *,
        item_size_max: int = 1024 * 1024,
    ) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        self.max_items = max_items
        #: Largest item (key, value and memcached's per-item overhead), as ``-I``.
        self.item_size_max = item_size_max
        self._clock = clock
        self._data: OrderedDict[str, tuple[bytes, int, float, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._next_cas = 1
        #: Batches executed so far: what a memcached round trip would cost.
        self.batches = 0
        #: Items dropped to stay under ``max_items``.
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._data)

    def execute(
        self, session_id: str, ops: Sequence[Op], *, on_sent: Callable[[], object] | None = None
    ) -> list[Result]:
        with self._lock:
            self.batches += 1
            now = self._clock()
            results = [self._run(op, now) for op in ops]
        if on_sent is not None:
            on_sent()
        return results

    def describe(self, session_id: str) -> str:
        return "embedded store"

    @staticmethod
    def _expiry(now: float, ttl: int) -> float:
        return float("inf") if ttl == 0 else now + ttl  # 0: never, as in memcached

    def _live(self, key: str, now: float) -> tuple[bytes, int, float, int] | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[2] <= now:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return entry

    def _put(self, key: str, value: bytes, flags: int, expires: float) -> None:
        self._next_cas += 1
        self._data[key] = (value, flags, expires, self._next_cas)
        self._data.move_to_end(key)
        while len(self._data) > self.max_items:
            self._data.popitem(last=False)
            self.evictions += 1

    def _too_large(self, key: str, value: bytes) -> bool:
        return len(key) + len(value) + _ITEM_OVERHEAD > self.item_size_max

    def _run(self, op: Op, now: float) -> Result:
        entry = self._live(op.key, now)
        if isinstance(op, Get):
            if entry is None:
                return None
            if op.touch is not None:
                expires = self._expiry(now, op.touch)
                self._data[op.key] = (entry[0], entry[1], expires, entry[3])
            return Item(entry[0], entry[1], entry[3])
        if isinstance(op, Delete):
            if entry is None or (op.cas is not None and entry[3] != op.cas):
                return False
            del self._data[op.key]
            return True
        if isinstance(op, Set):
            if op.cas is not None and (entry is None or entry[3] != op.cas):
                return False
            if op.mode == "add" and entry is not None:
                return False
            if op.mode == "append":
                if entry is None:
                    return False
                value = entry[0] + op.value
                if self._too_large(op.key, value):
                    return False  # memcached answers NOT_STORED here

                self._put(op.key, value, entry[1], entry[2])
                return True
            if self._too_large(op.key, op.value):
                return _TOO_LARGE
            self._put(op.key, op.value, op.flags, self._expiry(now, op.ttl))
            return True
        if isinstance(op, Incr):
            if entry is None:
                return None
            text = entry[0].strip()
            if not text.isdigit() or int(text) >= 1 << 64:
                return Failed("cannot increment or decrement non-numeric value")
            number = max(0, int(text) + op.delta) % (1 << 64)  # memcached wraps up
            self._put(op.key, str(number).encode(), entry[1], self._expiry(now, op.ttl))
            return number
        raise TypeError(f"unknown store operation {op!r}")
