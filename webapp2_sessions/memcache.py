"""The memcached store: one node or a cluster, one pipelined round trip a batch.

Each batch is written as memcached meta commands (``mg``, ``ms``, ``md``, ``ma``)
in a single ``send`` and the replies are read back in order. Connections are
pymemcache ``Client`` objects, one per thread and node, created with Nagle's
algorithm off and finite timeouts. Every write waits for the server's answer:
nothing is fire-and-forget.

In a cluster, a batch goes to the node the *session id* hashes to (rendezvous
hashing), so all keys of a session live together. A node that fails is marked
down for ``dead_retry`` seconds and its sessions are unavailable meanwhile;
they are never re-routed to another node, where a stale or empty copy would be
served instead.
"""

from __future__ import annotations

import logging
import math
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from pymemcache.client.base import Client
from pymemcache.client.rendezvous import RendezvousHash

from .errors import SessionUnavailableError
from .stores import Delete, Exists, Failed, Get, Incr, Item, Op, Result, Set, Store

log = logging.getLogger("webapp2_sessions")

#: Seconds a node's outage epoch is trusted before it is read again.
EPOCH_REFRESH = 1.0
#: memcached reads a larger expiry as an absolute Unix time.
_MAX_RELATIVE_EXPTIME = 30 * 24 * 3600
_MODE_FLAG = {"set": b"", "add": b" ME", "append": b" MA"}
# Bytes no key may hold, but NUL (see encode()).
_UNSAFE_KEY_CHAR = re.compile(r"[\x01-\x20\x7f]")


def exptime(ttl: int) -> int:
    """The expiry to send for a TTL of ``ttl`` seconds.

    memcached takes anything above 30 days as a Unix timestamp, so a longer TTL
    is sent as one (this relies on the server's clock being roughly right).
    """
    if ttl > _MAX_RELATIVE_EXPTIME:
        return int(time.time()) + ttl
    return ttl


def _kernel_timeouts(sock: socket.socket, timeout: float | None) -> None:
    """Enforce ``timeout`` in the kernel and leave the socket blocking.

    A Python-level socket timeout makes every send and recv poll first: one
    extra system call each, about a fifth of a loopback round trip. With
    SO_RCVTIMEO/SO_SNDTIMEO a stalled server still fails the call in time
    (as ``BlockingIOError``, an ``OSError``).
    """
    if timeout is None:
        return
    seconds = int(timeout)
    value = struct.pack("ll", seconds, int((timeout - seconds) * 1_000_000))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
    except OSError:  # a platform without them keeps Python's own timeout
        return
    sock.settimeout(None)


def encode(ops: Sequence[Op]) -> bytes:
    """The meta-protocol text of a batch."""
    # Keys are built from validated parts only; this is the last defence, run
    # once over all of them: joined by NULs, which must then number exactly
    # one fewer than the keys.
    keys = [op.key for op in ops]
    joined = "\x00".join(keys)
    if (
        not joined.isascii()
        or _UNSAFE_KEY_CHAR.search(joined) is not None
        or joined.count("\x00") != len(keys) - 1
    ):
        raise ValueError(f"refusing to send a malformed memcached key in {joined[:40]!r}")
    out: list[bytes] = []
    append = out.append
    for op, text in zip(ops, keys, strict=True):
        key = text.encode("ascii")
        if len(key) > 250 or not key:
            raise ValueError(f"refusing to send malformed memcached key {text[:40]!r}")
        kind = op.__class__
        if kind is Get:
            touch = op.touch  # type: ignore[union-attr]
            if touch is None:
                append(b"mg %s v f c\r\n" % key)
            else:
                if touch > _MAX_RELATIVE_EXPTIME:
                    touch = exptime(touch)
                append(b"mg %s v f c T%d\r\n" % (key, touch))
        elif kind is Set:
            assert isinstance(op, Set)
            value = op.value
            token = b"" if op.cas is None else b" C%d" % op.cas
            if op.mode == "append":
                append(b"ms %s %d F%d MA%s\r\n%s\r\n" % (key, len(value), op.flags, token, value))
                continue
            ttl = op.ttl
            if ttl > _MAX_RELATIVE_EXPTIME:
                ttl = exptime(ttl)
            append(
                b"ms %s %d F%d T%d%s%s\r\n%s\r\n"
                % (key, len(value), op.flags, ttl, _MODE_FLAG[op.mode], token, value)
            )
        elif kind is Delete:
            cas = op.cas  # type: ignore[union-attr]
            append(b"md %s\r\n" % key if cas is None else b"md %s C%d\r\n" % (key, cas))
        elif kind is Incr:
            assert isinstance(op, Incr)
            mode = b" MD" if op.delta < 0 else b""
            append(b"ma %s D%d T%d v%s\r\n" % (key, abs(op.delta), exptime(op.ttl), mode))
        elif kind is Exists:
            append(b"mg %s\r\n" % key)
        else:
            raise TypeError(f"unknown store operation {op!r}")
    return b"".join(out)


_NEGATIVE = {b"NS", b"EX", b"NF"}
_VALUE_FC = re.compile(rb"VA (\d+) f(\d+) c(\d+)\r\n")


def read_replies(sock: socket.socket, ops: Sequence[Op]) -> tuple[list[Result], bool]:
    """Read one reply per op from ``sock``.

    Returns the results and whether the connection must be closed afterwards
    (bytes left over, or an error that may have left the stream out of step).
    Raises ``ConnectionResetError`` if the server closes the connection and
    ``StaleConnectionError`` if it does so before sending anything.
    """
    try:
        buf = sock.recv(65536)
    except ConnectionResetError:
        raise StaleConnectionError("memcached reset the connection") from None
    if not buf:
        raise StaleConnectionError("memcached closed the connection")
    pos = 0
    results: list[Result] = []
    append = results.append
    desynced = False
    for op in ops:
        # The usual reply to ``mg <key> v f c`` in one match; anything else
        # (other flags, other orders, other replies) goes the general way.
        value = _VALUE_FC.match(buf, pos)
        if value is not None:
            size = int(value[1])
            start = value.end()
            pos = start + size + 2
            if pos <= len(buf) and op.__class__ is Get:
                append(Item(buf[start : pos - 2], int(value[2]), int(value[3])))
                continue
            pos = value.start()
        end = buf.find(b"\r\n", pos)
        while end < 0:
            buf = buf[pos:] + _more(sock)
            pos = 0
            end = buf.find(b"\r\n")
        head = buf[pos:end]
        pos = end + 2
        status = head[:2]
        kind = op.__class__
        if status == b"VA":
            parts = head.split()
            size = int(parts[1])
            while len(buf) < pos + size + 2:
                buf = buf[pos:] + _more(sock)
                pos = 0
            data = buf[pos : pos + size]
            pos += size + 2
            if kind is Incr:
                append(int(data.strip() or b"0"))
                continue
            flags = cas = 0
            for token in parts[2:]:
                first = token[0]
                if first == 102:  # f
                    flags = int(token[1:])
                elif first == 99:  # c
                    cas = int(token[1:])
            append(Item(data, flags, cas))
        elif status == b"HD":
            append(True)
        elif status == b"EN":
            append(False if kind is Exists else None)
        elif status in _NEGATIVE:
            append(None if kind is Incr else False)
        elif head.startswith((b"CLIENT_ERROR", b"SERVER_ERROR", b"ERROR")):
            # Only an error about the data block can leave bytes unread.
            desynced = desynced or head.startswith((b"CLIENT_ERROR bad", b"ERROR"))
            append(Failed(head.decode("ascii", "replace")))
        else:
            raise ConnectionError(f"unexpected reply {head[:32]!r}")
    return results, desynced or pos != len(buf)


def _more(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionResetError("memcached closed the connection mid-reply")
    return chunk


class StaleConnectionError(ConnectionResetError):
    """The server had closed a pooled connection before this batch."""


class _Node:
    """One memcached server: its connections and whether it is up."""

    def __init__(self, name: str, make_client: Any, shared: Client | None = None) -> None:
        self.name = name
        self._make_client = make_client
        self._local = threading.local()
        # A client handed to us by the application is one socket: share it
        # between threads under a lock.
        self._shared = shared
        self._shared_lock = threading.Lock() if shared is not None else None
        self._state_lock = threading.Lock()
        self._clients: list[Client] = []  # every thread's, so close() reaches them all
        self.dead_until = 0.0
        self.down = False
        #: A session deletion failed here during the current outage.
        self.deletion_lost = False
        #: Wall-clock time this process first failed to reach the node.
        self.down_since = 0.0

    def client(self) -> Client:
        if self._shared is not None:
            return self._shared
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._make_client()
            self._local.client = client
            with self._state_lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        if self._shared is not None:
            self._shared.close()
            return
        with self._state_lock:
            clients = list(self._clients)
        for client in clients:
            client.close()  # the owning thread reconnects on next use

    def lock(self) -> threading.Lock | None:
        return self._shared_lock

    def mark_down(self, error: BaseException, dead_retry: float) -> None:
        with self._state_lock:
            self.dead_until = time.monotonic() + dead_retry
            if self.down:
                return
            self.down = True
            self.down_since = time.time()
        # pymemcache's exception texts can quote keys, which hold session ids,
        # so only the exception's class goes to the log.
        log.error(
            "memcached %s unavailable (%s); its sessions read as empty for %gs",
            self.name,
            type(error).__name__,
            dead_retry,
        )

    def mark_up(self) -> float | None:
        """Record success; after an outage that cost a deletion, return its start."""
        if not self.down:
            return None
        with self._state_lock:
            if not self.down:
                return None
            self.down = False
            self.dead_until = 0.0
            lost, self.deletion_lost = self.deletion_lost, False
        log.warning("memcached %s is answering again", self.name)
        return self.down_since if lost else None


class MemcacheStore(Store):
    """Sessions on one memcached server or a cluster of them.

    ``servers`` are ``host:port`` strings. ``client`` may instead be a
    ready-made pymemcache ``Client`` (shared by all threads under a lock) or
    ``HashClient`` (its nodes are used; routing stays by session id).
    """

    def __init__(
        self,
        servers: Sequence[str] = (),
        *,
        client: Any = None,
        connect_timeout: float = 0.25,
        timeout: float = 0.5,
        retries: int = 1,
        dead_retry: float = 10.0,
        epoch_key: str = "webapp2_sessions!epoch",
    ) -> None:
        from pymemcache.client.hash import HashClient

        from .config import parse_server

        self.retries = retries
        self.dead_retry = dead_retry
        #: Key on every node holding the start of its last outage seen by any
        #: process; sessions born before it are not trusted (see ``Session``).
        self.epoch_key = epoch_key
        self._epochs: dict[str, tuple[float, float]] = {}
        nodes: dict[str, _Node] = {}
        if client is None:
            if not servers:
                raise ValueError("MemcacheStore needs servers or a client")
            for spec in servers:
                address = parse_server("memcache_servers", spec)

                def make(address: tuple[str, int] = address) -> Client:
                    return Client(
                        address,
                        connect_timeout=connect_timeout,
                        timeout=timeout,
                        no_delay=True,
                        default_noreply=False,
                    )

                nodes[spec] = _Node(spec, make)
        elif isinstance(client, HashClient):
            for name, node_client in client.clients.items():
                nodes[str(name)] = _Node(str(name), None, shared=node_client)
        elif isinstance(client, Client):
            server = client.server
            name = f"{server[0]}:{server[1]}" if isinstance(server, tuple) else str(server)
            nodes[name] = _Node(name, None, shared=client)
        else:
            raise TypeError("client must be a pymemcache Client or HashClient")
        self._nodes = nodes
        self._names = list(nodes)
        self._ring = RendezvousHash(nodes=self._names)

    @property
    def servers(self) -> list[str]:
        return list(self._names)

    def node_for(self, route: str) -> str:
        """The ``host:port`` that holds every key of session ``route``."""
        if len(self._names) == 1:
            return self._names[0]
        name: str = self._ring.get_node(route)
        return name

    def describe(self, route: str) -> str:
        return self.node_for(route)

    def deletion_lost(self, route: str) -> None:
        """A logout could not delete session ``route``: its node is down.

        When the node answers again its outage epoch is recorded (see
        ``_record_outage``), so the session cannot come back to life.
        """
        self._nodes[self.node_for(route)].deletion_lost = True

    def known_epoch(self, route: str) -> float | None:
        """The outage epoch of ``route``'s node, or None if it must be re-read.

        Sessions born before it are not trusted (see ``_record_outage``).
        """
        cached = self._epochs.get(self.node_for(route))
        if cached is None or time.monotonic() - cached[1] > EPOCH_REFRESH:
            return None
        return cached[0]

    def note_epoch(self, route: str, item: Result) -> float:
        """Remember the epoch just read (a Get of ``epoch_key``) and return it."""
        value = 0.0
        if isinstance(item, Item):
            try:
                value = float(item.value)
                if not math.isfinite(value):
                    raise ValueError("non-finite")
            except ValueError:
                log.warning("memcached %s: unreadable outage epoch ignored", self.node_for(route))
        self._epochs[self.node_for(route)] = (value, time.monotonic())
        return value

    def available(self, route: str) -> bool:
        """False while the node of ``route`` is marked down."""
        node = self._nodes[self.node_for(route)]
        return not node.down or node.dead_until <= time.monotonic()

    def execute(
        self, route: str, ops: Sequence[Op], *, on_sent: Callable[[], object] | None = None
    ) -> list[Result]:
        if not ops:
            if on_sent is not None:
                on_sent()
            return []
        node = self._nodes[self.node_for(route)]
        if node.down and node.dead_until > time.monotonic():
            raise SessionUnavailableError("marked down after a failure", node.name)
        payload = encode(ops)
        lock = node.lock()
        if lock is not None:
            with lock:
                return self._run(node, payload, ops, on_sent)
        return self._run(node, payload, ops, on_sent)

    def _run(
        self,
        node: _Node,
        payload: bytes,
        ops: Sequence[Op],
        on_sent: Callable[[], object] | None = None,
    ) -> list[Result]:
        client = node.client()
        attempt = 0
        failure: BaseException | None = None
        while True:
            fresh = client.sock is None
            try:
                if fresh:
                    client._connect()  # pymemcache's connect: timeouts, TCP_NODELAY
                    assert client.sock is not None
                    _kernel_timeouts(client.sock, client.timeout)
                sock = client.sock
                assert sock is not None
                sock.sendall(payload)
                if on_sent is not None:
                    # Once only, even if the batch is retried; whatever it
                    # raises waits until the replies are read, so the
                    # connection stays in step.
                    callback, on_sent = on_sent, None
                    try:
                        callback()
                    except BaseException as exc:  # re-raised below
                        failure = exc
                results, close = read_replies(sock, ops)
            except (OSError, ValueError, IndexError) as exc:
                client.close()
                # A pooled connection the server has since closed fails on first
                # use without the server having run anything: retry on a new one.
                stale = not fresh and isinstance(exc, (StaleConnectionError, BrokenPipeError))
                if stale and attempt < self.retries:
                    attempt += 1
                    continue
                node.mark_down(exc, self.dead_retry)
                raise SessionUnavailableError(
                    f"request failed ({type(exc).__name__})", node.name
                ) from None
            if close:
                client.close()
            if node.down:
                down_since = node.mark_up()
                if down_since is not None:
                    self._record_outage(node, down_since, ops, results)
            if failure is not None:
                raise failure
            return results

    def _record_outage(
        self, node: _Node, down_since: float, ops: Sequence[Op], results: list[Result]
    ) -> None:
        """Raise the node's epoch to ``down_since`` (never lower it).

        Called only when a logout during the outage could not delete its
        session there: a partitioned (not restarted) node still holds it, so
        every session born on the node before the outage is ended when next
        loaded. An outage that cost no deletion (a slow reply, a restart)
        ends nothing.
        """
        value = b"%.3f" % down_since
        for _ in range(5):
            try:
                got = self._run(node, encode([Get(self.epoch_key)]), [Get(self.epoch_key)])
                current = got[0]
                if isinstance(current, Item):
                    if float(current.value or 0) >= down_since:
                        break
                    write = Set(self.epoch_key, value, 0, 0, cas=current.cas)
                else:
                    write = Set(self.epoch_key, value, 0, 0, mode="add")
                if self._run(node, encode([write]), [write])[0] is True:
                    break
            except (SessionUnavailableError, ValueError):
                return
        # The batch that noticed the return must not serve a stale session.
        self._epochs[node.name] = (down_since, time.monotonic())
        for index, op in enumerate(ops):
            if isinstance(op, Get) and op.key == self.epoch_key:
                results[index] = Item(value, 0)

    def close(self) -> None:
        for node in self._nodes.values():
            node.close()
