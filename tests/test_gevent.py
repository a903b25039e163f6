"""Sessions under gevent: a monkey-patched WSGIServer in a child process.

Three promises used to break under gevent (``gunicorn -k gevent``): a
``threading.local`` per greenlet opened a connection per request and never
closed it; kernel socket timeouts did not apply to gevent's sockets, so a hung
node made requests wait forever; and a ``gevent.Timeout`` in the middle of a
read handed the queued replies to the next visitor. The app runs in
``tests/gevent_server.py`` so this process is never monkey-patched; it is
driven over loopback by many client threads, against a real memcached.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import importlib.util
import json
import os
import random
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from memcached import MemcachedServer

import webapp2_sessions

SERVER_SCRIPT = Path(__file__).with_name("gevent_server.py")
#: Bounds every client request; a hang must fail the test, not stall it.
CLIENT_TIMEOUT = 20.0
#: For everything that is not itself about a timeout (a loaded 2-core machine).
PATIENT = 10.0


# --------------------------------------------------------------------------- the child server


class GeventServer:
    """``tests/gevent_server.py`` in a child process, stopped by its PID."""

    def __init__(self, memcached: MemcachedServer, stderr: Any, **settings: Any) -> None:
        self.memcached = memcached
        self.args = [f"--memcache-servers={memcached.address}"]
        self.args += [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        #: A file the child's stderr goes to (a pipe nobody reads could fill up).
        self._stderr = stderr

    def start(self) -> GeventServer:
        if importlib.util.find_spec("gevent") is None:
            pytest.fail("gevent is not installed: pip install -e '.[test]'")
        # The child imports the very package this process tests (a checkout,
        # or an installed wheel when the sources are not on sys.path).
        root = os.path.dirname(os.path.dirname(os.path.abspath(webapp2_sessions.__file__)))
        env = {**os.environ, "PYTHONPATH": root, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        assert self.proc.stdout is not None
        line = b""
        deadline = time.monotonic() + 30
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 256)
                if not chunk:
                    break  # the child exited
                line += chunk
        if not line.startswith(b"listening "):
            self.stop()
            pytest.fail(f"gevent server did not start: {line!r}\n{self.log()}")
        self.port = int(line.split()[1])
        return self

    def stop(self) -> None:
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self.proc = None

    def log(self) -> str:
        """What the child wrote to stderr so far."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def wait_for_log(self, text: str, within: float = PATIENT) -> str:
        deadline = time.monotonic() + within
        while text not in self.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = self.log()
        assert text in log, log
        return log

    def get(self, path: str, cookie: str | None = None) -> Response:
        return fetch(self.port, path, cookie)

    def stats(self) -> dict[str, Any]:
        response = self.get("/stats")
        assert response.status == 200, response
        stats: dict[str, Any] = json.loads(response.body)
        return stats


@contextlib.contextmanager
def gevent_server(memcached: MemcachedServer, **settings: Any) -> Iterator[GeventServer]:
    with tempfile.TemporaryFile() as stderr:
        server = GeventServer(memcached, stderr, **settings)
        try:
            yield server.start()
        finally:
            server.stop()


class Response:
    def __init__(self, status: int, body: str, cookie: str | None, seconds: float) -> None:
        self.status = status
        self.body = body
        #: The ``name=value`` of our Set-Cookie, if the response sets one.
        self.cookie = cookie
        self.seconds = seconds

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<{self.status} {self.body[:200]!r} cookie={self.cookie!r}>"


def fetch(port: int, path: str, cookie: str | None = None) -> Response:
    """One request on its own loopback connection, as a visitor with ``cookie``."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
    try:
        headers = {"Connection": "close"}
        if cookie is not None:
            headers["Cookie"] = cookie
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read().decode()
        set_cookie = response.getheader("Set-Cookie")
    except TimeoutError:
        pytest.fail(f"GET {path}: no answer within {CLIENT_TIMEOUT:g}s", pytrace=False)
    finally:
        conn.close()
    new_cookie = set_cookie.split(";", 1)[0] if set_cookie else None
    return Response(response.status, body, new_cookie, time.monotonic() - started)


# --------------------------------------------------------------------------- memcached helpers


class StatsConnection:
    """One connection kept open to read memcached's stats, so that reading
    them adds nothing to ``total_connections`` (and a constant 1 to
    ``curr_connections``)."""

    def __init__(self, server: MemcachedServer) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=PATIENT)

    def stats(self) -> dict[str, int]:
        self.sock.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = self.sock.recv(65536)
            assert chunk, "memcached closed the stats connection"
            data += chunk
        out = {}
        for line in data.split(b"\r\n"):
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"STAT" and parts[2].isdigit():
                out[parts[1].decode()] = int(parts[2])
        return out

    def settled(self) -> dict[str, int]:
        """The stats once the connection counts hold still for a moment.

        The fixture's probe connection (made as memcached starts) may be
        counted after this one's first reply, by another worker thread.
        """
        keys = ("curr_connections", "total_connections")
        last, same = self.stats(), 0
        deadline = time.monotonic() + PATIENT
        while same < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
            now = self.stats()
            same = same + 1 if all(now[k] == last[k] for k in keys) else 0
            last = now
        return last

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------- 1. the pool


def test_many_concurrent_visitors_share_a_bounded_pool_of_reused_connections(memcached):
    visitors, per_visitor, max_connections, few = 200, 10, 20, 5
    watcher = StatsConnection(memcached)
    try:
        before = watcher.settled()
        peak_curr = before["curr_connections"]
        done = threading.Event()

        def watch() -> None:
            nonlocal peak_curr
            while not done.is_set():
                peak_curr = max(peak_curr, watcher.stats()["curr_connections"])
                time.sleep(0.005)

        with gevent_server(memcached, timeout=PATIENT, max_connections=max_connections) as server:
            sampler = threading.Thread(target=watch, daemon=True)
            sampler.start()
            started = time.monotonic()
            try:
                # Each visitor's first request starts its session and sets the
                # cookie, a few visitors at a time: below the cap, connections
                # follow the requests in flight.
                with ThreadPoolExecutor(max_workers=few) as pool:
                    firsts = list(pool.map(lambda _: server.get("/incr"), range(visitors)))
                warm = server.stats()
                cookies = [r.cookie for r in firsts]
                assert all(r.status == 200 and r.body == "1" for r in firsts), firsts[:3]
                assert all(cookies) and len(set(cookies)) == visitors
                # The other nine of each are shuffled among everyone's, so one
                # visitor's requests also overlap.
                with ThreadPoolExecutor(max_workers=50) as pool:
                    jobs = [v for v in range(visitors) for _ in range(per_visitor - 1)]
                    random.Random(9).shuffle(jobs)
                    rest = list(pool.map(lambda v: (v, server.get("/incr", cookies[v])), jobs))
                    finals = list(pool.map(lambda c: server.get("/get?name=n", c), cookies))
            finally:
                done.set()
                sampler.join(timeout=PATIENT)
            elapsed = time.monotonic() - started
            stats = server.stats()
            log = server.log()
        after = watcher.stats()
    finally:
        watcher.close()

    seen: dict[int, list[int]] = collections.defaultdict(list)
    for v, response in rest:
        assert response.status == 200, response
        assert response.cookie in (None, cookies[v]), response  # never a new session
        seen[v].append(int(response.body))
    for v in range(visitors):
        # incr is atomic: each visitor saw every value from 2 to 10 exactly once.
        assert sorted(seen[v]) == list(range(2, per_visitor + 1)), (v, sorted(seen[v]))
        assert finals[v].status == 200
        assert finals[v].json() == {"value": per_visitor}, (v, finals[v])

    requests = visitors * (per_visitor + 1)
    growth = after["total_connections"] - before["total_connections"]
    # Connections held by the server process, as memcached counts them: ours
    # (the stats connection, the listener) are in the baseline.
    peak_server = peak_curr - before["curr_connections"]
    opened = stats["connections"][memcached.address]
    print(
        f"\n{visitors} first requests, {few} clients: peak requests in flight "
        f"{warm['peak_requests']}, peak connections {warm['peak_connections']}"
    )
    assert 1 <= warm["peak_connections"] <= warm["peak_requests"] <= few
    print(
        f"{requests} requests in {elapsed:.1f}s; peak requests in flight "
        f"{stats['peak_requests']}, peak connections {stats['peak_connections']} "
        f"(memcached saw {peak_server}), open at the end {opened}, "
        f"total_connections grew by {growth}"
    )
    assert stats["requests"] == requests
    assert stats["peak_connections"] <= max_connections
    assert stats["peak_connections"] <= stats["peak_requests"]
    assert 1 <= opened <= stats["peak_connections"]
    # A couple more allowed: memcached may see a closed connection a moment late.
    assert peak_server <= max_connections + 2
    # Reused, not one per request (or per greenlet): every connection opened
    # is still open, so memcached saw no more than the pool's peak (one more
    # allowed in case the fixture's probe was counted after all).
    assert growth <= stats["peak_connections"] + 1, growth
    assert "unavailable" not in log and "Traceback" not in log, log


# --------------------------------------------------------------------------- 2. a hung node


def test_a_hung_node_costs_requests_their_timeout_not_their_life(memcached):
    with gevent_server(memcached, timeout=0.5, dead_retry=2, max_connections=8) as server:
        carted = server.get("/set?name=cart&value=apples")
        counted = server.get("/incr")
        assert carted.status == counted.status == 200
        cart, counter = carted.cookie, counted.cookie
        assert cart and counter
        assert server.get("/get?name=cart", cart).json() == {"value": "apples"}

        memcached.pause()  # returns once every thread is stopped
        try:
            # Several visitors at once while the node hangs: each gets its page
            # with defaults, bounded by the store's timeout and not the client's.
            paths = [("/get?name=cart", cart), ("/incr", counter)] * 5
            paths += [("/incr", None), ("/get?name=cart", None)]
            with ThreadPoolExecutor(max_workers=len(paths)) as pool:
                during = list(pool.map(lambda pc: server.get(*pc), paths))
            log = server.wait_for_log(f"memcached {memcached.address} unavailable (")
        finally:
            memcached.resume()
        slowest = max(r.seconds for r in during)
        for (path, _), response in zip(paths, during, strict=True):
            assert response.status == 200, (path, response)
            expected = "0" if path == "/incr" else '{"value": null}'
            assert response.body == expected, (path, response)
        # The cookies are kept: the sessions are still there, on the hung node.
        assert during[0].cookie is None and during[1].cookie is None
        assert log.count(f"memcached {memcached.address} unavailable") == 1, log

        # Once dead_retry is over, the sessions are served with their data.
        deadline = time.monotonic() + 2 + PATIENT
        back = server.get("/get?name=cart", cart)
        while back.json() != {"value": "apples"} and time.monotonic() < deadline:
            time.sleep(0.2)
            back = server.get("/get?name=cart", cart)
        assert back.status == 200 and back.json() == {"value": "apples"}, back
        # The increment made during the outage was not kept.
        assert server.get("/incr", counter).body == "2"
        server.wait_for_log(f"memcached {memcached.address} is answering again")
        print(f"\nslowest request while the node hung: {slowest:.2f}s")


# --------------------------------------------------------------------------- 3. gevent.Timeout


def test_a_gevent_timeout_mid_read_never_hands_its_replies_to_the_next_visitor(memcached):
    # One connection, so the next batch would reuse the interrupted one; the
    # store's own timeout is long, so only gevent.Timeout ends the read.
    with gevent_server(memcached, timeout=PATIENT, dead_retry=1, max_connections=1) as server:
        alice = server.get("/set?name=secret&value=alice-secret").cookie
        bob = server.get("/set?name=secret&value=bob-secret").cookie
        assert alice and bob
        assert server.get("/get?name=secret", bob).json() == {"value": "bob-secret"}
        for _ in range(3):
            assert server.stats()["connections"][memcached.address] == 1
            memcached.pause()
            try:
                # memcached holds alice's reply back: the read is interrupted.
                slow = server.get("/slow-read?name=secret&seconds=0.2", alice)
                assert slow.status == 200 and slow.body == "timeout", slow
                # The interrupted connection was closed, not put back.
                assert server.stats()["connections"][memcached.address] == 0
            finally:
                memcached.resume()  # alice's replies now go out, to a closed socket
            for _ in range(5):
                read = server.get("/get?name=secret", bob)
                assert read.status == 200 and read.json() == {"value": "bob-secret"}, read
            assert server.get("/get?name=secret", alice).json() == {"value": "alice-secret"}
        log = server.log()
    # An interrupt is not an outage.
    assert "unavailable" not in log and "Traceback" not in log, log
