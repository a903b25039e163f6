"""Connections to one memcached node, and the bounded pool that holds them.

Connections are plain sockets kept in a small pool per node: taken for one
batch, handed back only when every reply of that batch was read. The store
(``store.py``) closes a connection instead whenever a batch is interrupted
between its first byte sent and its last reply read, so no request can ever
read replies meant for another; the pool only counts and hands them out.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time
from collections.abc import Callable

from ..errors import SessionUnavailableError


class Connection:
    """One socket to a node, set up for short request/response exchanges."""

    __slots__ = ("generation", "sock")

    def __init__(self, address: tuple[str, int], connect_timeout: float, timeout: float) -> None:
        sock = socket.create_connection(address, timeout=connect_timeout)
        try:
            # Batches are written in one send and answered at once: Nagle's
            # algorithm would hold each one back for the previous ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _set_timeouts(sock, timeout)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        #: The pool's generation when opened; a ``close()`` since retires it.
        self.generation = 0

    def close(self) -> None:
        self.sock.close()


def _set_timeouts(sock: socket.socket, timeout: float) -> None:
    """Make every send and recv on ``sock`` give up after ``timeout`` seconds.

    On Linux and the BSDs a kernel timeout (SO_RCVTIMEO/SO_SNDTIMEO) does it
    without the extra poll() a Python-level timeout makes before each call
    (about a fifth of a loopback round trip). Elsewhere (Windows reads the
    option as milliseconds) and for cooperative sockets (gevent's, whose
    reads never block in the kernel) Python's own timeout is kept.
    """
    sock.settimeout(timeout)
    if not _KERNEL_TIMEOUTS or type(sock).__module__ != "socket":
        return
    seconds = int(timeout)
    value = struct.pack("ll", seconds, int((timeout - seconds) * 1_000_000))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
    except OSError:
        return  # keep Python's timeout
    sock.settimeout(None)


_KERNEL_TIMEOUTS = sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd", "darwin"))


class Pool:
    """Idle connections of one node, at most ``size`` open at a time.

    A connection is opened only when none is idle, so a process holds no
    more than its peak number of concurrent batches (and never more than
    ``size``). Past the cap a batch waits up to ``wait`` seconds for a
    connection to come back. The most recently used connection is reused
    first; the others may be closed by the server without harm (a stale
    connection is detected and replaced, see ``MemcacheStore``).
    """

    def __init__(self, make: Callable[[], Connection], size: int, wait: float) -> None:
        self._make = make
        self._size = size
        self._wait = wait
        # A list: pop() and append() are atomic, and the request's other code
        # uses lists too, where a deque would be one more type's code to run.
        self._idle: list[Connection] = []
        self._open = 0
        # A plain lock on the common path; the condition, on the same lock,
        # only for batches waiting at the cap.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiting = 0
        self._generation = 0

    @property
    def open(self) -> int:
        """Connections open now, idle or in use."""
        return self._open

    def take(self) -> tuple[Connection, bool]:
        """A connection, and whether it was just opened."""
        # The common case without the lock: list.pop() and append() are
        # atomic, and every path that counts or drains connections pops
        # them one by one too, so each connection has exactly one owner.
        try:
            return self._idle.pop(), False
        except IndexError:
            pass
        deadline = None
        with self._lock:
            # A connection seen idle here may still be popped by a lock-free
            # take() first: hence the loop, within one overall wait.
            while True:
                try:
                    return self._idle.pop(), False
                except IndexError:
                    pass
                if self._open < self._size:
                    break
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self._wait
                self._waiting += 1
                try:
                    freed = now < deadline and self._cond.wait_for(
                        lambda: self._idle or self._open < self._size, deadline - now
                    )
                finally:
                    self._waiting -= 1
                if not freed:
                    raise SessionUnavailableError(
                        f"all {self._size} connections busy for {self._wait:g}s (max_connections)"
                    )
            self._open += 1
            generation = self._generation
        try:
            conn = self._make()
        except BaseException:
            self._forget()
            raise
        conn.generation = generation
        return conn, True

    def give_back(self, conn: Connection) -> None:
        """Return a connection whose replies have all been read."""
        if conn.generation != self._generation:
            self.discard(conn)  # opened before a close(): retire it
            return
        self._idle.append(conn)
        # A waiter counts itself under the lock before it looks for an idle
        # connection, so one of the two always sees the other.
        if self._waiting:
            with self._lock:
                self._cond.notify()
        if conn.generation != self._generation:
            # A close() ran between the check and the append: it may have
            # missed this connection, so drain again.
            self.close()

    def discard(self, conn: Connection) -> None:
        """Close a connection that may be out of step; never reuse it."""
        try:
            conn.close()
        finally:
            self._forget()

    def _forget(self) -> None:
        with self._lock:
            self._open -= 1
            if self._waiting:
                self._cond.notify()

    def close(self) -> None:
        """Close every connection: idle ones now, those in use when handed back.

        Also what follows a sign that the server restarted or failed: the
        idle connections all predate it.
        """
        idle: list[Connection] = []
        with self._lock:
            self._generation += 1
            while True:  # one pop at a time: take() pops without the lock
                try:
                    idle.append(self._idle.pop())
                except IndexError:
                    break
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            conn.close()
