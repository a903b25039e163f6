"""Load test: the example app under gunicorn and wrk, on three memcached nodes.

Usage::

    .venv/bin/python benchmarks/load.py [--duration 30] [--connections 64]
                                        [--sessions 5000] [--kill-node]

What it does, all on 127.0.0.1, every process started here and stopped by PID:

1. Starts three memcached servers (``tests/memcached.py``) and serves
   ``examples/app.py`` with gunicorn (gthread workers, one shared
   ``SESSION_SECRET`` so every worker accepts every cookie).
2. Creates ``--sessions`` sessions with one plain ``GET /`` each (so each
   starts at ``visits == 1``) and keeps their cookies. This doubles as the
   warm-up: worker memory is sampled right after it.
3. Runs wrk with ``benchmarks/load.lua`` for ``--duration`` seconds. Every
   request is ``GET /`` with one of those cookies, so every request loads the
   session and adds one to ``visits`` with ``incr_session_var`` (the page
   shows the new count as "Visit number N").
4. Reads every session's ``visits`` back, straight from memcached and then
   through the app, and compares it with the number of 200 responses the
   session got. Each one is an increment that must not be lost.

Why the count is exact. ``incr_session_var`` is memcached's own ``incr``, so
concurrent requests of one session cannot lose each other's increments; what
the check needs is to know, for every request, whether it was answered. wrk
therefore runs with as many threads as connections: each thread has a single
keep-alive connection and at most one request in flight, so the script knows
that a response belongs to the last request it generated. Thread ``i`` of
``T`` owns slots ``i, i+T, i+2T, ...`` and visits them round-robin, so no
slot is ever in flight twice. A request that got no response (a socket
error, or in flight when wrk stopped) or got a non-200 status may or may not
have reached the store; the script counts such requests as "in doubt" and
the check accepts anywhere between 0 and all of them. A session is short of
updates when its stored ``visits`` is below ``1 + (200 responses)``; the sum
of those shortfalls is the "lost updates" figure.

The exit status is 1 when any check fails (an HTTP or socket error, a lost
or impossible update, a cookie changed, a worker replaced), else 0.

``--kill-node`` kills one memcached node (SIGKILL, by PID) half-way through.
The library keeps a visitor whose node stops answering on that node: the
cookie and id stay, reads give defaults (the page shows "Visit number 0"),
writes are logged as not saved, and pages still answer 200 (README.rst, "When
a node stops answering"). So the lost-update check must hold exactly on the
surviving nodes' sessions; the killed node's sessions must all keep their
cookie, and their requests after the kill are counted as increments not
saved. After the run, brand-new visitors must still be stored, on live nodes.
Any session on a live node that got a new cookie, lost an update or was
served as unavailable is reported as UNEXPECTED and fails the run.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import http.client
import http.cookies
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pymemcache.client.base import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from memcached import MemcachedServer, free_port, memcached_binary

from webapp2_sessions.memcache import MemcacheStore

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

COOKIE_NAME = "demo_session"  # what examples/app.py uses
# Fixed, so that every gunicorn worker signs and accepts the same cookies.
SESSION_SECRET = "load-test-secret-0123456789abcdef"
LUA_SCRIPT = HERE / "load.lua"
VISIT_RE = re.compile(rb"Visit number (\d+)")
# wrk's threads each hold one connection; more than this many is a typo.
MAX_CONNECTIONS = 256
CLIENT_THREADS = 16  # parallel urllib requests for pre-creation and read-back


# --------------------------------------------------------------------- processes


def children_of(ppid: int) -> list[int]:
    """PIDs whose parent is ``ppid`` (gunicorn's workers), from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces or parentheses: split after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == ppid:
            out.append(int(entry))
    return sorted(out)


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (VmRSS), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all processors have spent busy since boot (/proc/stat)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    # user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of ``pid`` so far, 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def own_cpu_seconds(pids: Sequence[int]) -> float:
    """CPU seconds of this script, its reaped children, and the live ``pids``.

    A process in ``pids`` that is reaped between two samples (wrk, a killed
    memcached) moves from the /proc reading to RUSAGE_CHILDREN with its whole
    lifetime, so the difference of two samples stays right.
    """
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime
    return total + sum(process_cpu_seconds(pid) for pid in pids)


class Gunicorn:
    """The example app under gunicorn on a free loopback port."""

    def __init__(self, servers: Sequence[str], workers: int, threads: int, log: Path) -> None:
        self.port = free_port()
        self.servers = list(servers)
        self.workers = workers
        self.threads = threads
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.worker_pids: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Gunicorn:
        args = [sys.executable, "-m", "gunicorn", "--chdir", str(ROOT / "examples")]
        args += ["--bind", f"127.0.0.1:{self.port}", "--workers", str(self.workers)]
        args += ["--worker-class", "gthread", "--threads", str(self.threads)]
        # No --access-logfile: gunicorn then writes no access log at all.
        if "--no-control-socket" in gunicorn_help():
            args.append("--no-control-socket")  # else it leaves a socket in ~/.gunicorn
        args.append("app:make_app()")
        env = dict(os.environ)
        env["MEMCACHE_SERVERS"] = ",".join(self.servers)
        env["SESSION_SECRET"] = SESSION_SECRET
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited at start:\n{self.log_tail()}")
            pids = children_of(self.proc.pid)
            if len(pids) == self.workers and self._healthy():
                self.worker_pids = pids
                return self
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not come up within 30s:\n{self.log_tail()}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def current_workers(self) -> list[int]:
        return children_of(self.proc.pid) if self.proc is not None else []

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM to the master (it stops its workers); SIGKILL what is left."""
        if self.proc is None:
            return
        workers = set(self.worker_pids) | set(self.current_workers())
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in sorted(workers):
            # Only a worker we saw that is still a gunicorn process (not a reused PID).
            with contextlib.suppress(OSError):
                if b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
        self.proc = None


def gunicorn_help() -> str:
    out = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return out.stdout


def tool_version(args: Sequence[str]) -> str:
    """First line of a ``--version``-style output, or 'unknown'."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        out = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
        text = (out.stdout or out.stderr).strip()
        if text:
            return text.splitlines()[0].split(" Copyright")[0].strip()
    return "unknown"


def code_version() -> str:
    """The commit under test, and whether the library or the app differ from it."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "webapp2_sessions", "examples"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return f"git {head}" + (" with uncommitted changes" if dirty else " (clean)")
    return "not a git checkout"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


# --------------------------------------------------------------------- HTTP client


@dataclass
class Visit:
    """One ``GET /`` as a browser would see it."""

    status: int
    number: int | None  # "Visit number N" from the page
    # The value a Set-Cookie for COOKIE_NAME gave ("" when it cleared the
    # cookie), None when the response set none.
    cookie: str | None


def visit(base_url: str, cookie: str | None) -> Visit:
    """``GET /`` with ``cookie`` (or none); no retries, a socket error raises."""
    req = urllib.request.Request(base_url + "/")
    if cookie is not None:
        req.add_header("Cookie", f"{COOKIE_NAME}={cookie}")
    try:
        resp = urllib.request.urlopen(req, timeout=10)
    except urllib.error.HTTPError as exc:  # a status other than 2xx
        resp = exc
    with resp:
        body = resp.read()
        set_cookie: str | None = None
        for header in resp.headers.get_all("Set-Cookie") or []:
            jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
            jar.load(header)
            if COOKIE_NAME in jar:
                set_cookie = jar[COOKIE_NAME].value
        match = VISIT_RE.search(body)
        return Visit(resp.status, int(match.group(1)) if match else None, set_cookie)


def create_sessions(base_url: str, count: int) -> list[str]:
    """``count`` new sessions, each made by one cookie-less ``GET /``."""

    def one(_: int) -> str:
        got = visit(base_url, None)
        if got.status != 200 or not got.cookie or got.number != 1:
            raise RuntimeError(f"pre-creation got {got}")
        return got.cookie

    with concurrent.futures.ThreadPoolExecutor(CLIENT_THREADS) as pool:
        return list(pool.map(one, range(count)))


# --------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    """What wrk printed, parsed; latencies in milliseconds."""

    text: str
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    percentiles: dict[int, float] = field(default_factory=dict)
    socket_errors: dict[str, int] = field(
        default_factory=lambda: {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    )
    non_2xx_3xx: int = 0

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values()) + self.non_2xx_3xx


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_UNIT_S = {"us": 1e-6, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_wrk(text: str) -> WrkResult:
    """Pick the numbers out of ``wrk --latency`` output (wrk 4.x layout)."""
    result = WrkResult(text)
    if m := re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h),", text):
        result.requests = int(m.group(1))
        result.seconds = float(m.group(2)) * _UNIT_S[m.group(3)]
    if m := re.search(r"Requests/sec:\s+([\d.]+)", text):
        result.rps = float(m.group(1))
    in_distribution = False
    for line in text.splitlines():
        if "Latency Distribution" in line:
            in_distribution = True
            continue
        m = re.fullmatch(r"\s*(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*", line)
        if in_distribution and m:
            result.percentiles[int(m.group(1))] = float(m.group(2)) * _UNIT_MS[m.group(3)]
        elif in_distribution:
            in_distribution = False
    if m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    ):
        keys = ("connect", "read", "write", "timeout")
        result.socket_errors = {k: int(v) for k, v in zip(keys, m.groups(), strict=True)}
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        result.non_2xx_3xx = int(m.group(1))
    return result


@dataclass
class Slot:
    """One session slot as the Lua script saw it (see load.lua)."""

    slot: int
    ok: int  # 200 responses
    doubt: int  # requests that may or may not have been applied
    bad: int  # non-200 responses
    changed: int  # Set-Cookie headers that changed or cleared its cookie
    unsaved: int  # 200 pages showing "Visit number 0" (store unavailable, not saved)
    unread: int  # 200 pages without a "Visit number N"


def read_slots(path: Path) -> list[Slot]:
    """The slots load.lua wrote; a "pending N" line adds one doubt to slot N."""
    slots: dict[int, Slot] = {}
    pending: list[int] = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts[0] == "pending":
            pending.append(int(parts[1]))
            continue
        slot = Slot(*(int(p) for p in parts[:7]))
        slots[slot.slot] = slot
    for number in pending:
        # In flight when wrk stopped: the app may still have finished it.
        slots[number].doubt += 1
    return [slots[k] for k in sorted(slots)]


# --------------------------------------------------------------------- verification


def session_id(cookie: str) -> str:
    """The session id in a signed cookie value (``<id>.<signature>``)."""
    return cookie.split(".", 1)[0]


def read_visits(servers: dict[str, MemcachedServer], ids: Sequence[str]) -> dict[str, int]:
    """``visits`` of each session id, read from memcached without the library.

    Only sessions whose node is in ``servers`` are read; a missing key is 0.
    """
    router = MemcacheStore(list(servers))
    by_node: dict[str, list[str]] = {}
    for sid in ids:
        by_node.setdefault(router.node_for(sid), []).append(sid)
    out: dict[str, int] = {}
    for node, sids in by_node.items():
        server = servers[node]
        if server.proc is None:
            continue
        client = Client(("127.0.0.1", server.port), connect_timeout=2, timeout=10)
        try:
            for start in range(0, len(sids), 500):
                chunk = sids[start : start + 500]
                values = client.get_many([f"{sid}-visits" for sid in chunk])
                for sid in chunk:
                    raw = values.get(f"{sid}-visits")
                    out[sid] = int(json.loads(raw)) if raw is not None else 0
        finally:
            client.close()
    return out


@dataclass
class Check:
    """The read-back of the sessions on live nodes: every increment must be there."""

    sessions: int = 0
    expected: int = 0  # increments the 200 responses promise
    found: int = 0  # what memcached holds
    doubt: int = 0  # requests that may have counted
    lost: int = 0  # sum of shortfalls below `expected`
    extra: int = 0  # sum of excesses above `expected + doubt`
    short_sessions: int = 0
    new_cookie: int = 0  # sessions whose cookie changed (or was cleared) during the run
    unsaved: int = 0  # 200 pages during the run that showed the store unavailable
    reset_sessions: int = 0  # the app sent a Set-Cookie at read-back
    app_disagrees: int = 0  # the read-back page is not a 200 showing memcached's + 1

    def add(self, slot: Slot, found: int, app: Visit) -> None:
        expected = 1 + slot.ok  # pre-creation made it 1
        self.sessions += 1
        self.expected += expected
        self.found += found
        self.doubt += slot.doubt
        if found < expected:
            self.lost += expected - found
            self.short_sessions += 1
        self.extra += max(0, found - expected - slot.doubt)
        self.new_cookie += slot.changed > 0
        self.unsaved += slot.unsaved
        self.reset_sessions += app.cookie is not None
        self.app_disagrees += app.status != 200 or app.number != found + 1

    def line(self) -> str:
        applied = self.found - self.expected + self.lost
        return (
            f"{self.lost} in {self.short_sessions} of {self.sessions} sessions "
            f"(expected {self.expected}, found {self.found}; "
            f"{self.doubt} requests in doubt, {applied} of them applied"
            + (f"; {self.extra} more than possible" if self.extra else "")
            + ")"
        )


@dataclass
class Stranded:
    """The killed node's sessions: they stay on it, so they read as defaults."""

    sessions: int = 0
    kept: int = 0  # no cookie change during the run, none at read-back
    new_cookie: int = 0  # a cookie changed (or cleared) during the run
    ok: int = 0  # 200 responses during the run
    unsaved: int = 0  # of those, pages showing defaults: increments not saved
    readback_defaults: int = 0  # read-back: 200, "Visit number 0", no Set-Cookie
    readback_cookie: int = 0  # read-back sent a Set-Cookie
    readback_counted: int = 0  # read-back showed a count: served from elsewhere

    def add(self, slot: Slot, app: Visit) -> None:
        self.sessions += 1
        self.ok += slot.ok
        self.unsaved += slot.unsaved
        self.new_cookie += slot.changed > 0
        self.kept += slot.changed == 0 and app.cookie is None
        self.readback_cookie += app.cookie is not None
        self.readback_defaults += app.status == 200 and app.number == 0 and app.cookie is None
        self.readback_counted += bool(app.number)


@dataclass
class NewVisitors:
    """Brand-new sessions made after the kill: stored, and only on live nodes."""

    count: int = 0
    placed: int = 0  # 200, "Visit number 1", a cookie, and visits == 1 on a live node
    on_dead: int = 0  # their id routes to the killed node


def new_visitors(
    base_url: str,
    count: int,
    nodes: dict[str, MemcachedServer],
    dead: str,
) -> NewVisitors:
    """``count`` cookie-less ``GET /``; each must be stored on a live node."""
    router = MemcacheStore(list(nodes))
    with concurrent.futures.ThreadPoolExecutor(CLIENT_THREADS) as pool:
        pages = list(pool.map(lambda _: visit(base_url, None), range(count)))
    sids = [session_id(p.cookie) for p in pages if p.cookie]
    stored = read_visits(nodes, sids)
    out = NewVisitors(count=count)
    for page in pages:
        if not page.cookie:
            continue
        sid = session_id(page.cookie)
        if router.node_for(sid) == dead:
            out.on_dead += 1
        elif page.status == 200 and page.number == 1 and stored.get(sid) == 1:
            out.placed += 1
    return out


# --------------------------------------------------------------------- the run


@dataclass
class Options:
    duration: int
    connections: int
    sessions: int
    kill_node: bool
    workers: int
    threads: int


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=30, help="seconds of load (30)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--sessions", type=int, default=5000, help="distinct sessions (5000)")
    parser.add_argument(
        "--kill-node", action="store_true", help="kill one memcached node half-way through"
    )
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers (3)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (4)")
    ns = parser.parse_args(argv)
    if not 1 <= ns.connections <= MAX_CONNECTIONS:
        parser.error(f"--connections must be between 1 and {MAX_CONNECTIONS}")
    if ns.sessions < ns.connections:
        parser.error("--sessions must be at least --connections (each connection owns slots)")
    if not 1 <= ns.duration <= 600:
        parser.error("--duration must be between 1 and 600 seconds")
    if ns.workers < 1 or ns.threads < 1:
        parser.error("--workers and --threads must be at least 1")
    return Options(ns.duration, ns.connections, ns.sessions, ns.kill_node, ns.workers, ns.threads)


def wrk_binary() -> str:
    path = shutil.which("wrk") or "/usr/bin/wrk"
    if not os.path.exists(path):
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    return path


@contextlib.contextmanager
def memcached_nodes(count: int) -> Iterator[list[MemcachedServer]]:
    nodes: list[MemcachedServer] = []
    try:
        for _ in range(count):
            nodes.append(MemcachedServer().start())
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def log_kinds(lines: Sequence[str], top: int = 4) -> list[tuple[str, int]]:
    """The ``top`` most frequent shapes of ``lines``: logged session tags masked."""
    shapes = collections.Counter(
        _SESSION_TAG.sub("<session>", _LOG_PREFIX.sub("", line.strip())) for line in lines
    )
    return shapes.most_common(top)


_SESSION_TAG = re.compile(r"\b[0-9a-f]{12}\b")  # keys.log_token's 12 hex digits
_LOG_PREFIX = re.compile(r"^(\[[^\]]*\] )+")  # gunicorn's "[time] [pid] [LEVEL] "


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def run(opts: Options) -> int:
    """The whole test; returns the exit status (1 if any check failed)."""
    wrk = wrk_binary()
    t_start = time.monotonic()
    # Other work on the machine skews every number below: record how busy it was.
    load_before = os.getloadavg()[0]
    code = code_version()  # before the workers import it
    with (
        tempfile.TemporaryDirectory(prefix="load-") as tmp_name,
        memcached_nodes(3) as nodes,
    ):
        tmp = Path(tmp_name)
        by_address = {node.address: node for node in nodes}
        app = Gunicorn(list(by_address), opts.workers, opts.threads, tmp / "gunicorn.log")
        wrk_proc: subprocess.Popen[str] | None = None
        try:
            app.start()
            print(f"gunicorn {app.url} workers {app.worker_pids}; memcached {list(by_address)}")

            t0 = time.monotonic()
            cookies = create_sessions(app.url, opts.sessions)
            created_in = time.monotonic() - t0
            print(f"created {len(cookies)} sessions in {created_in:.1f}s")
            cookie_file = tmp / "cookies.txt"
            cookie_file.write_text("".join(c + "\n" for c in cookies))
            rss_start = {pid: rss_kib(pid) for pid in app.worker_pids}

            results_file = tmp / "slots.txt"
            env = dict(os.environ)
            env.update(
                LOAD_COOKIES=str(cookie_file),
                LOAD_RESULTS=str(results_file),
                LOAD_THREADS=str(opts.connections),
                LOAD_SESSIONS=str(opts.sessions),
                LOAD_COOKIE=COOKIE_NAME,
            )
            wrk_args = [wrk, "-t", str(opts.connections), "-c", str(opts.connections)]
            wrk_args += ["-d", f"{opts.duration}s", "--timeout", "2s", "--latency"]
            wrk_args += ["-s", str(LUA_SCRIPT), app.url + "/"]
            print(f"running wrk for {opts.duration}s: {' '.join(wrk_args[1:])}", flush=True)
            wrk_proc = subprocess.Popen(
                wrk_args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
            )
            wrk_started = time.monotonic()
            # Ours: gunicorn's master and workers, memcached and wrk (this script
            # and reaped children are added by own_cpu_seconds).
            ours = [app.proc.pid, *app.worker_pids, wrk_proc.pid] if app.proc else []
            ours += [node.proc.pid for node in nodes if node.proc is not None]
            cpu_start = (machine_busy_seconds(), own_cpu_seconds(ours))
            killed: MemcachedServer | None = None
            killed_at = 0.0
            if opts.kill_node:
                time.sleep(opts.duration / 2)
                killed = nodes[0]
                assert killed.proc is not None
                os.kill(killed.proc.pid, signal.SIGKILL)  # a crash, not a clean shutdown
                killed_at = time.monotonic() - wrk_started
                killed.stop()  # reaps it
                print(f"killed memcached {killed.address} at {killed_at:.1f}s", flush=True)
            out, _ = wrk_proc.communicate(timeout=opts.duration + 60)
            if wrk_proc.returncode != 0:
                raise RuntimeError(f"wrk failed ({wrk_proc.returncode}):\n{out}")
            wrk_proc = None
            cpu_end = (machine_busy_seconds(), own_cpu_seconds(ours))
            wrk_wall = time.monotonic() - wrk_started
            wrk_result = parse_wrk(out)
            rss_end = {pid: rss_kib(pid) for pid in app.worker_pids}
            workers_end = app.current_workers()
            print(out.rstrip())

            # Requests wrk gave up on (in flight at the end) may still be running
            # in a worker; let them finish before reading the counters back.
            time.sleep(2)
            slots = read_slots(results_file)
            report = verify(app.url, cookies, slots, by_address, killed, killed_at)
        finally:
            if wrk_proc is not None and wrk_proc.poll() is None:
                wrk_proc.kill()
                wrk_proc.wait()
            log_text = app.log_path.read_text(errors="replace") if app.log_path.exists() else ""
            app.stop()

    tracebacks = log_text.count("Traceback")
    notable = [line for line in log_text.splitlines() if "unavailable" in line or "Error" in line]
    kinds = log_kinds(notable)
    total = time.monotonic() - t_start
    restarted = sorted(set(app.worker_pids) ^ set(workers_end))
    lua_requests = sum(s.ok + s.bad for s in slots)
    lua_bad = sum(s.bad for s in slots)
    start_sum, end_sum = sum(rss_start.values()), sum(rss_end.values())
    growth = 100.0 * (end_sum - start_sum) / start_sum if start_sum else 0.0
    per_worker = ", ".join(
        f"{pid}: {mib(rss_start[pid])} -> {mib(rss_end[pid])}" for pid in app.worker_pids
    )
    p50 = wrk_result.percentiles.get(50, float("nan"))
    p99 = wrk_result.percentiles.get(99, float("nan"))
    sock = wrk_result.socket_errors

    lines = [
        "webapp2_sessions load test (benchmarks/load.py)",
        f"machine       {cpu_model()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.machine()}, Python {platform.python_version()}, "
        f"1-min load average {load_before:.2f} before the run",
        f"software      {tool_version([sys.executable, '-m', 'gunicorn', '--version'])}, "
        f"{tool_version([memcached_binary(), '-V'])} x3, {tool_version([wrk, '--version'])}",
        f"code          webapp2_sessions and examples/app.py at {code}",
        f"app           examples/app.py GET / (loads the session, incr_session_var('visits')), "
        f"{opts.workers} gthread workers x {opts.threads} threads",
        f"load          {opts.connections} connections (wrk: 1 thread each), "
        f"{opts.sessions} sessions, {opts.duration}s requested, "
        f"{wrk_result.seconds:.2f}s measured",
        f"pre-creation  {opts.sessions} requests in {created_in:.1f}s (warm-up)",
        f"requests      {wrk_result.requests} ({lua_requests} counted by load.lua)",
        f"throughput    {wrk_result.rps:.1f} requests/s",
        f"latency       p50 {p50:.2f} ms, p99 {p99:.2f} ms",
        f"errors        {wrk_result.errors} (non-2xx/3xx {wrk_result.non_2xx_3xx}, "
        f"non-200 {lua_bad}; socket: connect {sock['connect']}, read {sock['read']}, "
        f"write {sock['write']}, timeout {sock['timeout']})",
    ]
    lines += report.lines
    own_cpu = cpu_end[1] - cpu_start[1]
    other_cpu = max(0.0, (cpu_end[0] - cpu_start[0]) - own_cpu)
    cores = os.cpu_count() or 1
    lines.append(
        f"CPU           during the wrk run: this test {own_cpu:.1f} s, other processes "
        f"{other_cpu:.1f} s ({100 * other_cpu / (wrk_wall * cores):.0f}% of {cores} cores)"
    )
    lines += [
        f"worker RSS    start {mib(start_sum)}, end {mib(end_sum)}, growth {growth:+.1f}% "
        f"({per_worker})",
        f"workers       {len(app.worker_pids)} at start, {len(workers_end)} at end, "
        f"{len(restarted)} replaced",
        f"app log       {tracebacks} tracebacks, {len(notable)} lines naming an error "
        "or an unavailable node" + (", the most frequent:" if kinds else ""),
        *(f"  {count:6d} x {text}" for text, count in kinds),
        f"total time    {total:.1f}s",
    ]
    print()
    print("\n".join(lines))
    failed = report.failed or wrk_result.errors > 0 or lua_bad > 0 or bool(restarted)
    return 1 if failed else 0


@dataclass
class Report:
    lines: list[str]
    failed: bool


NEW_VISITORS = 100  # brand-new sessions made after a kill


def verify(
    base_url: str,
    cookies: Sequence[str],
    slots: Sequence[Slot],
    nodes: dict[str, MemcachedServer],
    killed: MemcachedServer | None,
    killed_at: float,
) -> Report:
    """Compare each session's stored ``visits`` with its 200 responses.

    Sessions on live nodes should hold 1 (pre-creation) plus their 200
    responses, read straight from memcached and then once more through the
    app (whose page shows the stored value plus one). Sessions of a killed
    node are not readable; they must have kept their cookie, and the app must
    answer them with defaults.
    """
    router = MemcacheStore(list(nodes))
    dead = killed.address if killed is not None else None

    current = [cookies[s.slot] for s in slots]
    sids = [session_id(c) for c in current]
    stored = read_visits(nodes, sids)
    with concurrent.futures.ThreadPoolExecutor(CLIENT_THREADS) as pool:
        pages = list(pool.map(lambda c: visit(base_url, c), current))

    live, stranded = Check(), Stranded()
    for slot, sid, page in zip(slots, sids, pages, strict=True):
        if router.node_for(sid) == dead:
            stranded.add(slot, page)
        else:
            live.add(slot, stored.get(sid, 0), page)
    unread = sum(s.unread for s in slots)

    unexpected = []
    if live.lost:
        unexpected.append(
            f"{live.lost} updates lost in {live.short_sessions} sessions on live nodes"
        )
    if live.extra:
        unexpected.append(f"{live.extra} increments more than requests on live nodes")
    if live.new_cookie:
        unexpected.append(f"{live.new_cookie} sessions on live nodes got a new cookie")
    if live.unsaved:
        unexpected.append(
            f"{live.unsaved} pages of sessions on live nodes showed the store unavailable"
        )
    if live.reset_sessions or live.app_disagrees:
        unexpected.append(
            f"read-back of live nodes' sessions: {live.app_disagrees} disagree, "
            f"{live.reset_sessions} got a Set-Cookie"
        )
    if stranded.new_cookie or stranded.readback_cookie:
        unexpected.append(
            f"{stranded.new_cookie} of the killed node's sessions got a new cookie during "
            f"the run, {stranded.readback_cookie} at read-back (they must keep theirs)"
        )
    if stranded.readback_counted:
        unexpected.append(
            f"{stranded.readback_counted} of the killed node's sessions showed a count "
            "at read-back although their node is dead"
        )
    if unread:
        unexpected.append(
            f"{unread} pages had no 'Visit number N': examples/app.py's page changed, "
            "so load.py and load.lua need adjusting"
        )

    label = "surviving nodes" if killed is not None else "all sessions"
    lines = [f"lost updates  {live.lost}", f"  {label}: {live.line()}"]
    readback = (
        f"read-back     via app: {live.app_disagrees} sessions disagree with memcached, "
        f"{live.reset_sessions} got a new cookie"
    )
    if killed is not None:
        newcomers = new_visitors(base_url, NEW_VISITORS, nodes, killed.address)
        if newcomers.placed != newcomers.count:
            unexpected.append(
                f"{newcomers.count - newcomers.placed} of {newcomers.count} new visitors "
                f"were not stored on a live node ({newcomers.on_dead} on the killed one)"
            )
        lines += [
            f"kill-node     {killed.address} killed (SIGKILL) at {killed_at:.1f}s; "
            f"{stranded.sessions} of {len(slots)} sessions lived there",
            f"  their sessions: {stranded.kept} of {stranded.sessions} kept their cookie, "
            f"{stranded.new_cookie} got a new one; {stranded.unsaved} of their "
            f"{stranded.ok} 200 responses showed defaults (increments not saved)",
            f"  new visitors after the kill: {newcomers.placed} of {newcomers.count} "
            "stored on live nodes",
        ]
        readback += (
            f"; killed node's sessions: {stranded.readback_defaults} of "
            f"{stranded.sessions} answered 200 with defaults and no new cookie"
        )
    lines.append(readback)
    lines += [f"  UNEXPECTED: {text}" for text in unexpected]
    return Report(lines, bool(unexpected))


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
