"""RoundTripProxies (tests/rtproxy.py) run in a child process.

In the benchmark's own process a proxy thread competes with the app for the
GIL on every round trip, which shows up as time spent in ``sendall``/``recv``
and grows with the app's own Python work. In a child process the proxy only
adds its network hop. The parent asks for counts over a pipe, outside the
timed requests.

Run as a script it is the child: it reads commands on stdin (``new``,
``count <i>``, ``close <i>``) and answers one line each; it exits when stdin
closes, so it never outlives the benchmark.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading


class ProxyHost:
    """The child process, started on construction and stopped (by PID) by ``close``."""

    def __init__(self, target_port: int) -> None:
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), str(target_port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            # Ctrl-C goes to the benchmark, which then stops this process itself.
            start_new_session=True,
        )

    def ask(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self._lock:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"proxy host exited (status {self.proc.poll()})")
        return answer.strip()

    def new_proxy(self) -> RemoteProxy:
        index, port = self.ask("new").split()
        return RemoteProxy(self, int(index), int(port))

    def close(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class RemoteProxy:
    """The parent's handle on one proxy; the same interface as RoundTripProxy."""

    def __init__(self, host: ProxyHost, index: int, port: int) -> None:
        self.host = host
        self.index = index
        self.port = port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def round_trips(self) -> int:
        return int(self.host.ask(f"count {self.index}"))

    def reset(self) -> None:
        self.host.ask(f"reset {self.index}")

    def close(self) -> None:
        if self.host.proc.poll() is None:
            self.host.ask(f"close {self.index}")


def _serve(target_port: int) -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tests"))
    from rtproxy import RoundTripProxy

    proxies: list[RoundTripProxy] = []
    try:
        for line in sys.stdin:
            command, *args = line.split()
            if command == "new":
                proxies.append(RoundTripProxy(target_port))
                answer = f"{len(proxies) - 1} {proxies[-1].port}"
            elif command == "count":
                answer = str(proxies[int(args[0])].round_trips)
            elif command == "reset":
                proxies[int(args[0])].reset()
                answer = "ok"
            elif command == "close":
                proxies[int(args[0])].close()
                answer = "ok"
            else:
                answer = f"error unknown command {command!r}"
            sys.stdout.write(answer + "\n")
            sys.stdout.flush()
    finally:
        for proxy in proxies:
            proxy.close()


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
