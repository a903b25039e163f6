"""Real memcached servers for the tests, started on free loopback ports.

Each server is a child process stopped by its PID; nothing here looks
processes up by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

#: Seconds a pause or resume may take to show in /proc before it is an error:
#: generous, for a loaded 2-core machine.
PAUSE_DEADLINE = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def memcached_binary() -> str:
    path = shutil.which("memcached") or "/usr/bin/memcached"
    if not os.path.exists(path):
        raise RuntimeError(
            "memcached is not installed; run `make test` (it installs it) or "
            "`apt-get install memcached`"
        )
    return path


class MemcachedServer:
    """One memcached process on 127.0.0.1."""

    def __init__(
        self,
        item_size_max: str | None = None,
        threads: int = 2,
        cpus: str | None = None,
    ) -> None:
        self.port = free_port()
        self.item_size_max = item_size_max
        self.threads = threads
        #: CPUs to pin the server to (``taskset -c`` syntax), or None.
        self.cpus = cpus
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> MemcachedServer:
        args = [memcached_binary(), "-l", "127.0.0.1", "-p", str(self.port), "-U", "0"]
        args += ["-m", "64", "-t", str(self.threads), "-c", "1024"]
        if self.item_size_max:
            args += ["-I", self.item_size_max]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        if self.cpus is not None:
            args = ["taskset", "-c", self.cpus, *args]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"memcached exited at start: {err.strip()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"memcached did not listen on port {self.port} within 10s")

    def stop(self) -> None:
        # SIGKILL to our own child: immediate, and what a crash looks like
        # (memcached's graceful SIGTERM shutdown takes about a second).
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        """Start again on the same port (memory is empty, as after a crash)."""
        self.stop()
        self.start()

    # Stalling the server. SIGSTOP is delivered asynchronously: kill() returns
    # before the kernel has stopped every thread, and a worker thread still
    # running can answer one more batch. So a pause waits until /proc shows
    # every thread of the process stopped.

    def thread_states(self) -> dict[str, str]:
        """The scheduler state (``R``, ``S``, ``T``...) of each thread, by thread id."""
        assert self.proc is not None, "memcached is not running"
        states = {}
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                text = (task / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError):  # the thread exited meanwhile
                continue
            # The state is the first field after "(comm)"; comm may hold ')'.
            states[task.name] = text[text.rindex(")") + 2 :].split(" ", 1)[0]
        return states

    def pause(self, deadline: float = PAUSE_DEADLINE) -> None:
        """SIGSTOP the server and return once every one of its threads is stopped.

        Raises ``RuntimeError`` if that has not happened within ``deadline``
        seconds (the server is resumed first, so the test does not hang).
        """
        self._signal(signal.SIGSTOP, stopped=True, deadline=deadline)

    def resume(self, deadline: float = PAUSE_DEADLINE) -> None:
        """SIGCONT the server and return once none of its threads is stopped."""
        self._signal(signal.SIGCONT, stopped=False, deadline=deadline)

    @contextlib.contextmanager
    def paused(self) -> Iterator[MemcachedServer]:
        """``with server.paused():`` the server is stalled inside, running after."""
        self.pause()
        try:
            yield self
        finally:
            self.resume()

    def _signal(self, signum: int, *, stopped: bool, deadline: float) -> None:
        assert self.proc is not None, "memcached is not running"
        if self.proc.poll() is not None:
            raise RuntimeError(f"memcached pid {self.proc.pid} exited ({self.proc.returncode})")
        os.kill(self.proc.pid, signum)  # our own child, by its PID
        until = time.monotonic() + deadline
        while True:
            states = self.thread_states()
            if states and all((state == "T") == stopped for state in states.values()):
                return
            if time.monotonic() > until:
                if stopped:
                    os.kill(self.proc.pid, signal.SIGCONT)
                action = "stop" if stopped else "continue"
                raise RuntimeError(
                    f"memcached pid {self.proc.pid} did not {action} within {deadline:g}s "
                    f"after {signal.Signals(signum).name}; thread states: {states}"
                )
            time.sleep(0.005)

    # Talking to the server directly, bypassing the code under test.

    def raw(self, command: bytes, end: bytes = b"\r\n") -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(command)
            data = b""
            while not data.endswith(end):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            return data

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for line in self.raw(b"stats\r\n", b"END\r\n").split(b"\r\n"):
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"STAT":
                with contextlib.suppress(ValueError):
                    out[parts[1].decode()] = int(parts[2])
        return out

    def mg(self, key: str) -> tuple[bytes, int, int] | None:
        """``mg <key> t v f``: (value, ttl left, client flags), or None."""
        reply = self.raw(b"mg " + key.encode() + b" t v f\r\n")
        if reply.startswith(b"EN"):
            return None
        head, _, rest = reply.partition(b"\r\n")
        parts = head.split()
        size = int(parts[1])
        tokens = {p[:1]: p[1:] for p in parts[2:]}
        return rest[:size], int(tokens[b"t"]), int(tokens[b"f"])

    def set(self, key: str, value: bytes, flags: int = 0, ttl: int = 0) -> None:
        reply = self.raw(
            b"set %s %d %d %d\r\n%s\r\n" % (key.encode(), flags, ttl, len(value), value)
        )
        assert reply == b"STORED\r\n", reply

    def keys(self) -> list[str]:
        """Every live key, through the LRU crawler (small test servers only).

        A crawl is no point-in-time snapshot and may miss an item (seen once
        under load: a key set a moment before was not listed), so the keys of
        two crawls are merged.
        """
        first = self._crawl()
        return first + [key for key in self._crawl() if key not in first]

    def _crawl(self) -> list[str]:
        from urllib.parse import unquote

        deadline = time.monotonic() + 30
        while True:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                sock.sendall(b"lru_crawler metadump all\r\n")
                out = b""
                while not (out.endswith(b"END\r\n") or out.startswith((b"BUSY", b"ERROR"))):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    out += chunk
            if out.endswith(b"END\r\n"):
                break
            # The crawler is still busy with an earlier scan: an empty list
            # here would let a "nothing left behind" check pass unlooked.
            if time.monotonic() > deadline:
                raise RuntimeError(f"memcached would not list its keys: {out[:80]!r}")
            time.sleep(0.05)
        keys = []
        for line in out.splitlines():  # metadump ends its lines with a bare newline
            if line.startswith(b"key="):
                keys.append(unquote(line.split()[0][4:].decode()))
        return keys
