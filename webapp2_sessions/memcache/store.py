"""The memcached store: nodes, routing, outages and deferred deletions.

A batch goes to the node the *session id* hashes to (rendezvous hashing), so
all keys of a session live together and a request talks to one server. A node
that fails is marked down for ``dead_retry`` seconds; its sessions are
unavailable meanwhile and are never re-routed to another node, where a stale
or empty copy would be served instead.

Each node's connections come from its pool (``pool.py``), one per batch.
Anything that interrupts a batch between its first byte sent and its last
reply read (a timeout, a signal, ``gevent.Timeout``, ``KeyboardInterrupt``)
closes the connection, so no request can ever read replies meant for another.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pymemcache.client.base import normalize_server_spec
from pymemcache.client.rendezvous import RendezvousHash

from ..errors import SessionUnavailableError
from ..stores import Op, Result, Store
from .meta import StaleConnectionError, encode, read_replies
from .pool import Connection, Pool

log = logging.getLogger("webapp2_sessions")

#: Deferred batches a store keeps for unreachable nodes, all nodes together.
MAX_DEFERRED = 10_000
#: The second step of a deferred batch: its results in, more operations out.
FollowUp = Callable[[Sequence[Result]], Sequence[Op]]


class _Node:
    """One memcached server: its pool, whether it is up, and deferred work."""

    def __init__(self, name: str, pool: Pool) -> None:
        self.name = name
        self.pool = pool
        self.down = False
        self.dead_until = 0.0
        #: Batches to run here once the node answers (lost deletions).
        self.deferred: list[Deferred] = []
        self._lock = threading.Lock()

    def usable(self, now: float) -> bool:
        return not self.down or self.dead_until <= now

    def mark_down(self, error: BaseException, dead_retry: float) -> None:
        with self._lock:
            self.dead_until = time.monotonic() + dead_retry
            if self.down:
                return
            self.down = True
        # Exception texts can quote keys, which hold session ids: only the
        # exception's class is logged.
        log.error(
            "memcached %s unavailable (%s); its sessions are unavailable for %gs",
            self.name,
            type(error).__name__,
            dead_retry,
        )

    def mark_up(self) -> None:
        with self._lock:
            if not self.down:
                return
            self.down = False
            self.dead_until = 0.0
        log.warning("memcached %s is answering again", self.name)


class MemcacheStore(Store):
    """Sessions on one memcached server or a cluster of them.

    ``servers`` are ``host:port`` strings (``[v6]:port`` for IPv6).
    ``max_connections`` bounds the connections each process opens to each
    node; ``retries`` is how many times a batch is resent on a fresh
    connection when a pooled one turns out to have been closed by the server
    (after a memcached restart, say) before it ran anything.
    """

    def __init__(
        self,
        servers: Sequence[str],
        *,
        connect_timeout: float = 0.25,
        timeout: float = 0.5,
        retries: int = 1,
        dead_retry: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        if not servers:
            raise ValueError("MemcacheStore needs at least one server")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.retries = retries
        self.dead_retry = dead_retry
        nodes: dict[str, _Node] = {}
        for spec in servers:
            address = normalize_server_spec(spec)
            if not isinstance(address, tuple):
                raise ValueError(f"{spec!r}: only host:port servers are supported")

            def make(address: tuple[str, int] = address) -> Connection:
                return Connection(address, connect_timeout, timeout)

            nodes[spec] = _Node(spec, Pool(make, max_connections, timeout))
        self._nodes = nodes
        self._names = list(nodes)
        self._ring = RendezvousHash(nodes=self._names)
        #: The node, when there is only one (no hashing needed).
        self._single = nodes[self._names[0]] if len(nodes) == 1 else None
        self._deferred_lock = threading.Lock()
        #: Deferred batches waiting on any node (checked on every batch).
        self._deferred_count = 0

    @property
    def servers(self) -> list[str]:
        return list(self._names)

    def node_for(self, session_id: str) -> str:
        """The ``host:port`` that holds every key of session ``session_id``."""
        if len(self._names) == 1:
            return self._names[0]
        name: str = self._ring.get_node(session_id)
        return name

    def describe(self, session_id: str) -> str:
        return self.node_for(session_id)

    def connections(self, server: str) -> int:
        """Connections this process has open to ``server`` now."""
        return self._nodes[server].pool.open

    def available(self, session_id: str) -> bool:
        """False while the node of ``session_id`` is marked down."""
        # _Node.usable(), inline, as in execute(): every new visitor asks.
        node = self._single or self._nodes[self._ring.get_node(session_id)]
        return not node.down or node.dead_until <= time.monotonic()

    def close(self) -> None:
        for node in self._nodes.values():
            node.pool.close()

    # ------------------------------------------------------------------ batches

    def execute(
        self, session_id: str, ops: Sequence[Op], *, on_sent: Callable[[], object] | None = None
    ) -> list[Result]:
        if not ops:
            if on_sent is not None:
                on_sent()
            return []
        node = self._single or self._nodes[self._ring.get_node(session_id)]
        if node.down and node.dead_until > time.monotonic():
            raise SessionUnavailableError("marked down after a failure", node.name)
        if self._deferred_count:
            return self._execute_with_deferred(node, ops, on_sent)
        return self._run(node, encode(ops), ops, on_sent)

    def _run(
        self,
        node: _Node,
        payload: bytes,
        ops: Sequence[Op],
        on_sent: Callable[[], object] | None = None,
    ) -> list[Result]:
        pool = node.pool
        attempt = 0
        failure: BaseException | None = None
        while True:
            try:
                conn, fresh = pool.take()
            except OSError as exc:  # could not connect
                node.mark_down(exc, self.dead_retry)
                raise SessionUnavailableError(
                    f"cannot connect ({type(exc).__name__})", node.name
                ) from None
            try:
                conn.sock.sendall(payload)
                if on_sent is not None:
                    # Once only, even if the batch is resent; what it raises
                    # waits until the replies are read, so the connection
                    # stays in step.
                    callback, on_sent = on_sent, None
                    try:
                        callback()
                    except BaseException as exc:  # re-raised below
                        failure = exc
                results, out_of_step = read_replies(conn.sock, ops)
            except (OSError, ValueError, IndexError) as exc:
                pool.discard(conn)
                # A pooled connection the server has since closed fails on first
                # use without the server having run anything: resend on a new one.
                stale = not fresh and isinstance(exc, (StaleConnectionError, BrokenPipeError))
                # Whatever closed this one (a restart, a failure) closed the
                # other idle connections too.
                pool.close()
                if stale and attempt < self.retries:
                    attempt += 1
                    continue
                node.mark_down(exc, self.dead_retry)
                raise SessionUnavailableError(
                    f"request failed ({type(exc).__name__})", node.name
                ) from None
            except BaseException:
                # Interrupted mid-batch (a signal's exception, a greenlet
                # timeout): replies may still be on their way, and must never
                # be read by the next batch on this connection.
                pool.discard(conn)
                raise
            if out_of_step:
                pool.discard(conn)
            else:
                pool.give_back(conn)
            if node.down:
                node.mark_up()
            if failure is not None:
                raise failure
            return results

    # ------------------------------------------------------------------ deferred work

    def defer(self, session_id: str, ops: Sequence[Op], then: FollowUp | None = None) -> None:
        """Keep ``ops`` (a lost deletion) until ``session_id``'s node answers again.

        They are run in front of the next batch this process sends to that
        node, or by the first batch to any node once the node's
        ``dead_retry`` is over, at the cost of one extra round trip then.
        ``then(results)`` gives the operations of a second step (the names a
        logout read back, to delete), run right after, in one more round trip.
        """
        node = self._nodes[self.node_for(session_id)]
        self._push_deferred(node, [Deferred(list(ops), then)])

    def _push_deferred(self, node: _Node, batches: list[Deferred]) -> None:
        with self._deferred_lock:
            node.deferred.extend(batches)
            self._deferred_count += len(batches)
            dropped = 0
            while self._deferred_count > MAX_DEFERRED:
                fullest = max(self._nodes.values(), key=lambda n: len(n.deferred))
                fullest.deferred.pop(0)
                self._deferred_count -= 1
                dropped += 1
        if dropped:
            log.error(
                "memcached: %d deferred deletion(s) dropped (more than %d waiting); "
                "those sessions expire with their TTL",
                dropped,
                MAX_DEFERRED,
            )

    def _take_deferred(self, node: _Node) -> list[Deferred]:
        with self._deferred_lock:
            batches, node.deferred = node.deferred, []
            self._deferred_count -= len(batches)
        return batches

    def _execute_with_deferred(
        self, node: _Node, ops: Sequence[Op], on_sent: Callable[[], object] | None
    ) -> list[Result]:
        now = time.monotonic()
        for other in self._nodes.values():
            if other is not node and other.deferred and other.usable(now):
                self._flush(other)
        batches = self._take_deferred(node)
        if not batches:
            return self._run(node, encode(ops), ops, on_sent)
        first = [op for batch in batches for op in batch.ops]
        try:
            results = self._run(node, encode([*first, *ops]), [*first, *ops], on_sent)
        except BaseException:
            self._push_deferred(node, batches)
            raise
        self._follow_up(node, batches, results)
        return results[len(first) :]

    def _flush(self, node: _Node) -> None:
        """Run ``node``'s deferred batches in one round trip of their own."""
        batches = self._take_deferred(node)
        if not batches:
            return
        ops = [op for batch in batches for op in batch.ops]
        try:
            results = self._run(node, encode(ops), ops)
        except SessionUnavailableError:
            self._push_deferred(node, batches)
            return
        except BaseException:
            self._push_deferred(node, batches)
            raise
        self._follow_up(node, batches, results)

    def _follow_up(self, node: _Node, batches: list[Deferred], results: list[Result]) -> None:
        """Run the second steps of deferred batches that have one (one round trip)."""
        more: list[Op] = []
        at = 0
        for batch in batches:
            if batch.then is not None:
                more += batch.then(results[at : at + len(batch.ops)])
            at += len(batch.ops)
        if more:
            try:
                self._run(node, encode(more), more)
            except SessionUnavailableError:
                self._push_deferred(node, [Deferred(more, None)])
        log.info("memcached %s: %d deferred deletion(s) completed", node.name, len(batches))


@dataclass(slots=True)
class Deferred:
    """A batch kept for a node that did not answer, with its optional second step."""

    ops: list[Op]
    then: FollowUp | None = None
