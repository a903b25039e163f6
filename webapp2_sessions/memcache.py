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
import re
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from pymemcache.client.base import Client
from pymemcache.client.rendezvous import RendezvousHash

from .errors import SessionUnavailableError
from .stores import Delete, Exists, Failed, Get, Incr, Item, Op, Result, Set, Store

log = logging.getLogger("webapp2_sessions")

#: memcached reads a larger expiry as an absolute Unix time.
_MAX_RELATIVE_EXPTIME = 30 * 24 * 3600
_MODE_FLAG = {"set": b"", "add": b" ME", "append": b" MA"}
_UNSAFE_KEY_BYTE = re.compile(rb"[\x00-\x20\x7f]")
_SET_RESULTS = {b"HD": True, b"NS": False, b"EX": False, b"NF": False}


def exptime(ttl: int) -> int:
    """The expiry to send for a TTL of ``ttl`` seconds.

    memcached takes anything above 30 days as a Unix timestamp, so a longer TTL
    is sent as one (this relies on the server's clock being roughly right).
    """
    if ttl > _MAX_RELATIVE_EXPTIME:
        return int(time.time()) + ttl
    return ttl


def _check_key(key: str) -> bytes:
    # Keys are built from validated parts only; this is the last line of defence.
    raw = key.encode("ascii")
    if not 0 < len(raw) <= 250 or _UNSAFE_KEY_BYTE.search(raw):
        raise ValueError(f"refusing to send malformed memcached key {key[:40]!r}")
    return raw


def encode(ops: Sequence[Op]) -> bytes:
    """The meta-protocol text of a batch."""
    out: list[bytes] = []
    for op in ops:
        key = _check_key(op.key)
        if isinstance(op, Get):
            touch = b"" if op.touch is None else b" T%d" % exptime(op.touch)
            out.append(b"mg " + key + b" v f c" + touch + b"\r\n")
        elif isinstance(op, Set):
            head = b"ms %s %d F%d" % (key, len(op.value), op.flags)
            if op.mode != "append":
                head += b" T%d" % exptime(op.ttl)
            head += _MODE_FLAG[op.mode]
            if op.cas is not None:
                head += b" C%d" % op.cas
            out.append(head + b"\r\n" + op.value + b"\r\n")
        elif isinstance(op, Delete):
            cas = b"" if op.cas is None else b" C%d" % op.cas
            out.append(b"md " + key + cas + b"\r\n")
        elif isinstance(op, Incr):
            mode = b" MD" if op.delta < 0 else b""
            out.append(b"ma %s D%d T%d v%s\r\n" % (key, abs(op.delta), exptime(op.ttl), mode))
        elif isinstance(op, Exists):
            out.append(b"mg " + key + b"\r\n")
        else:
            raise TypeError(f"unknown store operation {op!r}")
    return b"".join(out)


class _Reader:
    """Buffered reads of lines and value blocks from a socket."""

    __slots__ = ("buf", "pos", "sock", "started")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.pos = 0
        self.started = False

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("memcached closed the connection")
        self.started = True
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0

    def line(self) -> bytes:
        while True:
            end = self.buf.find(b"\r\n", self.pos)
            if end >= 0:
                line = self.buf[self.pos : end]
                self.pos = end + 2
                return line
            self._fill()

    def block(self, size: int) -> bytes:
        while len(self.buf) - self.pos < size + 2:
            self._fill()
        data = self.buf[self.pos : self.pos + size]
        self.pos += size + 2
        return data


def _parse_get(head: bytes, reader: _Reader) -> Item:
    parts = head.split()
    data = reader.block(int(parts[1]))
    flags = cas = 0
    for token in parts[2:]:
        if token[:1] == b"f":
            flags = int(token[1:])
        elif token[:1] == b"c":
            cas = int(token[1:])
    return Item(data, flags, cas)


def decode(ops: Sequence[Op], reader: _Reader) -> tuple[list[Result], bool]:
    """Read one reply per op; also say whether the stream may be out of step."""
    results: list[Result] = []
    desynced = False
    for op in ops:
        head = reader.line()
        if head.startswith((b"CLIENT_ERROR", b"SERVER_ERROR", b"ERROR")):
            # Only a CLIENT_ERROR about the data block can leave bytes unread.
            desynced = desynced or head.startswith((b"CLIENT_ERROR bad", b"ERROR"))
            results.append(Failed(head.decode("ascii", "replace")))
        elif isinstance(op, Get):
            results.append(_parse_get(head, reader) if head.startswith(b"VA") else None)
        elif isinstance(op, Exists):
            results.append(head.startswith(b"HD"))
        elif isinstance(op, Incr):
            if head.startswith(b"VA"):
                results.append(int(_parse_get(head, reader).value.strip() or b"0"))
            else:
                results.append(None)
        elif isinstance(op, (Set, Delete)):
            status = head.split(b" ", 1)[0]
            if status not in _SET_RESULTS:
                raise ConnectionError(f"unexpected reply {head[:32]!r}")
            results.append(_SET_RESULTS[status])
    return results, desynced


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
        self.dead_until = 0.0
        self.down = False
        #: Wall-clock time this process first failed to reach the node.
        self.down_since = 0.0

    def client(self) -> Client:
        if self._shared is not None:
            return self._shared
        client: Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._make_client()
            self._local.client = client
        return client

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
        """Record success; after an outage, return when the outage began."""
        with self._state_lock:
            if not self.down:
                return None
            self.down = False
            self.dead_until = 0.0
        log.warning("memcached %s is answering again", self.name)
        return self.down_since


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

    def available(self, route: str) -> bool:
        """False while the node of ``route`` is marked down."""
        node = self._nodes[self.node_for(route)]
        return not node.down or node.dead_until <= time.monotonic()

    def execute(self, route: str, ops: Sequence[Op]) -> list[Result]:
        if not ops:
            return []
        node = self._nodes[self.node_for(route)]
        if node.down and node.dead_until > time.monotonic():
            raise SessionUnavailableError("marked down after a failure", node.name)
        payload = encode(ops)
        lock = node.lock()
        if lock is not None:
            with lock:
                return self._run(node, payload, ops)
        return self._run(node, payload, ops)

    def _run(self, node: _Node, payload: bytes, ops: Sequence[Op]) -> list[Result]:
        client = node.client()
        attempt = 0
        while True:
            fresh = client.sock is None
            reader: _Reader | None = None
            try:
                if fresh:
                    client._connect()  # pymemcache's connect: timeouts, TCP_NODELAY
                sock = client.sock
                assert sock is not None
                sock.sendall(payload)
                reader = _Reader(sock)
                results, desynced = decode(ops, reader)
            except (OSError, ValueError, IndexError) as exc:
                client.close()
                # A pooled connection the server has since closed fails on first
                # use without the server having run anything: retry on a new one.
                stale = (
                    not fresh
                    and isinstance(exc, ConnectionError)
                    and (reader is None or not reader.started)
                )
                if stale and attempt < self.retries:
                    attempt += 1
                    continue
                node.mark_down(exc, self.dead_retry)
                raise SessionUnavailableError(
                    f"request failed ({type(exc).__name__})", node.name
                ) from None
            if desynced or reader.pos != len(reader.buf):
                client.close()
            down_since = node.mark_up()
            if down_since is not None:
                self._record_outage(node, down_since, ops, results)
            return results

    def _record_outage(
        self, node: _Node, down_since: float, ops: Sequence[Op], results: list[Result]
    ) -> None:
        """Raise the node's epoch to ``down_since`` (never lower it).

        A logout during the outage could not delete its session there, and a
        partitioned (not restarted) node still holds it: every session born on
        the node before the outage is therefore ended when next loaded.
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
        for index, op in enumerate(ops):
            if isinstance(op, Get) and op.key == self.epoch_key:
                results[index] = Item(value, 0)

    def close(self) -> None:
        for node in self._nodes.values():
            node.client().close()  # pymemcache's close never raises
