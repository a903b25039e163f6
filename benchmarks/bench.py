"""Per-request cost of sessions: webapp2_sessions against its peers and two hand-written designs.

Run ``.venv/bin/python benchmarks/bench.py`` (``--quick`` for a ~10 s smoke run,
``--profile`` to see where our read-3-write-1 request spends its time,
``--compare-with REV`` to add a row for the package as it was at git revision REV,
``--database sqlite,postgresql`` (``make bench-db``) for the durable tier against
Django's cached_db and Beaker's ext:database, each database's bare commit beside
them: see dbpeers.py).

Why it is built this way:

* One process, one memcached: the script starts its own server on a free
  loopback port and stops it (by PID) on the way out, even on Ctrl-C.
* Timing is direct: the timed requests of every implementation connect to
  memcached itself, with nothing in between.
* Round trips are counted, not guessed, in a separate pass that is not timed:
  each implementation is built a second time, talking to memcached through a
  RoundTripProxy of its own (tests/rtproxy.py), which counts on the wire each
  time a client waits for an answer. That instance gets the same warm-up (so
  learned reads are in effect), then ``--count`` requests per workload; RT/req
  and ops/req (memcached's own stats) come from that pass. The proxies run in
  a child process (proxyhost.py; ``--proxy thread`` keeps them in this
  process). The micro-rows at the end show what a proxy hop would cost (the
  same get, through a proxy and direct).
* Requests are WSGI calls in-process (no HTTP server, no WebTest), so the
  numbers are the framework's and the session code's, plus memcached.
* Cells are interleaved: each round runs a block of every (implementation,
  workload) pair in a shuffled order, so drift and noise hit all rows alike.
* Every round trip costs the same: memcached runs one worker thread pinned
  to one CPU and this process is pinned to another (``--placement``). Left
  to the scheduler, a connection served by a thread that happens to share
  the caller's CPU answers several times faster than one on the other CPU,
  and rows would differ by where their connection landed.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib
import io
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

# This folder, tests/ (memcached and proxy fixtures) and the repository (webapp2_sessions).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers
from dbpeers import WRITING, Databases
from memcached import MemcachedServer
from peers import COOKIE_NAME, INITIAL, PATHS, Impl, Proxy, ProxyFactory
from proxyhost import ProxyHost
from rtproxy import RoundTripProxy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS: dict[str, str] = {
    "untouched": "untouched: a returning visitor's request whose handler never uses the session",
    "new": "new visitor: no cookie; writes a, b, c",
    "read": "returning, read 3: reads a, b, c",
    "rw": "returning, read 3 + write 1: reads a, b, c; writes a + 1 to a",
}
#: Which cookie each workload sends: none for a new visitor, the warm-up session's otherwise.
SENDS_COOKIE = {"untouched": True, "new": False, "read": True, "rw": True}
#: memcached counters that make up "ops", one per key. A get that also resets the TTL
#: (``gat``, or ``mg`` with ``T`` on a hit) counts as a touch, not a get, so both are summed.
OP_STATS = (
    "cmd_get",
    "cmd_touch",
    "cmd_set",
    "delete_hits",
    "delete_misses",
    "incr_hits",
    "incr_misses",
    "decr_hits",
    "decr_misses",
)
#: Stands in for a session cookie in the baseline's requests, so every row parses alike.
BARE_COOKIE = "0" * 32
#: What ``--database`` accepts, in table order.
DATABASES = ("sqlite", "postgresql")


# ---------------------------------------------------------------------- driving WSGI apps


@dataclass
class Reply:
    status: str
    headers: list[tuple[str, str]]
    body: bytes

    def set_cookie(self) -> str | None:
        """The value of our session cookie's Set-Cookie header, if the response has one."""
        for name, value in self.headers:
            if name.lower() == "set-cookie":
                cookie = value.strip().split(";", 1)[0]
                key, _, val = cookie.partition("=")
                if key.strip() == COOKIE_NAME:
                    return val
        return None


def make_environ(path: str, cookie: str | None) -> dict[str, Any]:
    """A minimal GET environ; copied per request (WSGI apps write into it)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "bench.local",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "bench.local",
        "HTTP_USER_AGENT": "bench/1.0",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if cookie is not None:
        environ["HTTP_COOKIE"] = f"{COOKIE_NAME}={cookie}"
    return environ


def call(app: Any, template: dict[str, Any]) -> Reply:
    """One request, start to finish, as a WSGI server would drive it."""
    captured: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured[:] = [status, headers]
        return lambda data: None

    environ = dict(template)
    environ["wsgi.input"] = io.BytesIO()
    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return Reply(captured[0], captured[1], body)


# ---------------------------------------------------------------------- measurements


@dataclass
class Cell:
    """What one (implementation, workload) pair measured."""

    times_ns: list[int] = field(default_factory=list)
    #: Requests of the counting pass (through the proxy), and what they took.
    counted: int = 0
    round_trips: int = 0
    ops: int = 0
    #: SQL statements and database round trips of the counting pass (None: not counted;
    #: a row without a database, or round trips of an in-process SQLite).
    statements: int | None = None
    db_round_trips: int | None = None
    cookie_in: int | None = None
    cookie_out: int | None = None

    def median_us(self) -> float:
        return percentile(self.times_ns, 0.5) / 1000

    def p90_us(self) -> float:
        return percentile(self.times_ns, 0.9) / 1000


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class Runner:
    """An implementation ready to be run: its app and the cookie of its warm-up session.

    A timed instance connects to memcached directly and only records times; a
    counting instance goes through a proxy and only records round trips and ops.
    """

    impl: Impl
    cookie: str | None = None
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    cells: dict[str, Cell] = field(default_factory=dict)

    #: Read-3-write-1 requests run so far (each adds 1 to ``a`` on the server).
    rw_requests: int = 0

    @property
    def is_bare(self) -> bool:
        return self.impl.baseline

    @property
    def workloads(self) -> tuple[str, ...]:
        return self.impl.workloads

    def prepare(self) -> None:
        """Create the returning visitor's session, then build each workload's environ."""
        if self.is_bare or self.impl.db_floor:
            self.cookie = BARE_COOKIE
        else:
            reply = call(self.impl.app, make_environ(PATHS["new"], None))
            check(self.impl, "new", reply)
            self.cookie = reply.set_cookie()
            if not self.cookie:
                raise RuntimeError(f"{self.impl.name}: the warm-up request set no cookie")
        for workload in self.workloads:
            cookie = self.cookie if SENDS_COOKIE[workload] else None
            self.templates[workload] = make_environ(PATHS[workload], cookie)
            self.cells[workload] = Cell(cookie_in=len(cookie) if cookie else None)

    def warm(self, count: int) -> None:
        """Untimed requests: connections opened, code paths and learned reads settled."""
        for workload in self.workloads:
            for _ in range(count):
                reply = call(self.impl.app, self.templates[workload])
                check(self.impl, workload, reply)
        self.rw_requests += count

    def run_block(self, workload: str, count: int) -> None:
        """``count`` timed requests (nothing else is measured around them)."""
        app = self.impl.app
        template = self.templates[workload]
        cell = self.cells[workload]
        clock = time.perf_counter_ns
        times = cell.times_ns
        reply: Reply | None = None
        for _ in range(count):
            start = clock()
            reply = call(app, template)
            times.append(clock() - start)
            if reply.status[:3] != "200":
                check(self.impl, workload, reply)
        if reply is not None:
            out = reply.set_cookie()
            cell.cookie_out = len(out) if out is not None else None
        if workload == "rw":
            self.rw_requests += count

    def count_block(self, workload: str, count: int, memcached: MemcachedServer) -> None:
        """``count`` untimed requests; round trips and memcached ops are taken around them.

        Nothing else talks to memcached meanwhile, so its stats are this block's.
        """
        app = self.impl.app
        template = self.templates[workload]
        cell = self.cells[workload]
        proxy = self.impl.proxy
        db_proxy, statements = self.impl.db_proxy, self.impl.statements
        if proxy is not None and self.impl.sync is not None:
            self.impl.sync()  # earlier noreply writes are processed before the count starts
        before_ops = op_count(memcached) if proxy else 0
        before_rt = proxy.round_trips if proxy else 0
        before_sql = statements() if statements else 0
        before_db_rt = db_proxy.round_trips if db_proxy else 0
        for _ in range(count):
            check(self.impl, workload, call(app, template))
        cell.counted += count
        if statements:
            cell.statements = (cell.statements or 0) + statements() - before_sql
        if db_proxy:
            cell.db_round_trips = (cell.db_round_trips or 0) + db_proxy.round_trips - before_db_rt
        if proxy:
            cell.round_trips += proxy.round_trips - before_rt
            if self.impl.sync is not None:
                self.impl.sync()  # outside the count; only its ops are left to be taken
            cell.ops += op_count(memcached) - before_ops
        if workload == "rw":
            self.rw_requests += count

    def read_back(self) -> list[Any]:
        """What the returning visitor's session holds now, through the app itself."""
        reply = call(self.impl.app, self.templates["read"])
        check(self.impl, "read", reply)
        values: list[Any] = json.loads(reply.body)
        return values

    def verify(self) -> None:
        """The reads must see what the new-visitor request stored (catches silent misses)."""
        if self.is_bare or self.impl.db_floor:
            return
        a, b, c = self.read_back()
        counter_ok = isinstance(a, int) and a >= INITIAL["a"]
        if not counter_ok or b != INITIAL["b"] or c != INITIAL["c"]:
            raise RuntimeError(f"{self.impl.name}: read back {[a, b, c]!r}, not what was stored")

    def lost_writes(self) -> int | None:
        """How many of the read-3-write-1 increments are missing from the server (None: n/a).

        Requests run one at a time, so every increment must be there. A cookie
        store cannot be checked this way: each request starts again from the
        cookie the script sends, which never changes.
        """
        if self.impl.keeps_data != "server":
            return None
        expected = INITIAL["a"] + self.rw_requests
        return int(expected - self.read_back()[0])


def check(impl: Impl, workload: str, reply: Reply) -> None:
    if reply.status[:3] != "200":
        raise RuntimeError(
            f"{impl.name} / {workload}: {reply.status}\n{reply.body.decode(errors='replace')}"
        )


def op_count(memcached: MemcachedServer) -> int:
    stats = memcached.stats()
    return sum(stats.get(name, 0) for name in OP_STATS)


def run_interleaved(
    blocks: list[Callable[[], None]],
    rounds: int,
    seed: int,
    progress: Callable[[str], None],
) -> None:
    """Run every block once per round, in a fresh shuffled order each round."""
    order = list(blocks)
    rng = random.Random(seed)
    for number in range(rounds):
        rng.shuffle(order)
        for block in order:
            block()
        progress(f"round {number + 1}/{rounds}")


class Micro:
    """The floor micro-rows: one get and one 3-key get_many, direct and through a proxy.

    Timed in the same interleaved rounds as the requests, so they see the same
    machine state. The timed requests connect directly, like the "direct"
    column; the "via proxy" column shows what a proxy hop would add.
    """

    KEYS = ("micro:a", "micro:b", "micro:c")
    OPS = ("get", "get_many")
    ROUTES = ("via proxy", "direct")

    def __init__(self, memcached: MemcachedServer, make_proxy: ProxyFactory) -> None:
        from pymemcache.client.base import Client

        self.proxy = make_proxy()
        self.clients: dict[str, Client] = {}
        for route, address in zip(
            self.ROUTES, (self.proxy.address, memcached.address), strict=True
        ):
            host, port = address.rsplit(":", 1)
            self.clients[route] = Client((host, int(port)), no_delay=True, default_noreply=False)
        self.clients["direct"].set_many(dict.fromkeys(self.KEYS, "12345"), expire=3600)
        for client in self.clients.values():  # connect outside the timed loop
            client.get(self.KEYS[0])
        self.samples: dict[tuple[str, str], list[int]] = {
            (op, route): [] for op in self.OPS for route in self.ROUTES
        }

    def run_block(self, op: str, route: str, count: int) -> None:
        client = self.clients[route]
        times = self.samples[(op, route)]
        clock = time.perf_counter_ns
        keys = list(self.KEYS)
        for _ in range(count):
            start = clock()
            if op == "get":
                client.get(keys[0])
            else:
                client.get_many(keys)
            times.append(clock() - start)

    def median_us(self, op: str, route: str) -> float:
        return percentile(self.samples[(op, route)], 0.5) / 1000

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.proxy.close()


# ---------------------------------------------------------------------- an earlier revision

#: An import statement that names the package absolutely (the package itself uses
#: relative imports; these would load the working tree's modules instead).
_ABSOLUTE_IMPORT = re.compile(r"^(\s*(?:from|import)\s+)webapp2_sessions\b", re.MULTILINE)


_COMPARE_PREFIX = "bench-compare-"
#: The temporary folder of a materialised revision, in a profile's file names.
_COMPARE_FOLDER = re.compile(rf".*/{_COMPARE_PREFIX}[^/]+/")


@dataclass
class Revision:
    """webapp2_sessions as it was at a git revision, importable under a name of its own."""

    commit: str
    short: str
    subject: str
    #: The top-level package name it is imported as (``webapp2_sessions_at_<short>``).
    package: str
    #: The temporary folder on ``sys.path`` that holds it; removed by ``close``.
    folder: str
    #: Absolute ``webapp2_sessions`` imports rewritten to ``package`` (0 if it has none).
    rewritten: int = 0

    @property
    def row_name(self) -> str:
        return f"ours @{self.short}"

    def describe(self) -> str:
        return (
            f"git {self.short} ({self.subject}), webapp2_sessions/ from `git archive`, "
            f"imported as {self.package}; {self.rewritten} absolute imports rewritten"
        )

    def close(self) -> None:
        if self.folder in sys.path:
            sys.path.remove(self.folder)
        shutil.rmtree(self.folder, ignore_errors=True)


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", ROOT, *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def materialise(rev: str) -> Revision:
    """Extract ``rev``'s webapp2_sessions/ into a temporary folder, renamed, and import it.

    Raises RuntimeError if ``rev`` is not a commit that has the package, or if
    the imported copy reaches for a module of the working tree's package.
    """
    try:
        commit = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        short = git("rev-parse", "--short", commit)
        subject = git("log", "-1", "--format=%s", commit)
        archive = subprocess.run(
            ["git", "-C", ROOT, "archive", commit, "webapp2_sessions"],
            capture_output=True,
            check=True,
        ).stdout
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"--compare-with {rev}: {exc.stderr or 'not a commit'}") from exc
    package = f"webapp2_sessions_at_{short}"
    folder = tempfile.mkdtemp(prefix=_COMPARE_PREFIX)
    revision = Revision(commit, short, subject, package, folder)
    try:
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        os.rename(os.path.join(folder, "webapp2_sessions"), os.path.join(folder, package))
        for here, _dirs, files in os.walk(os.path.join(folder, package)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(here, name)
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
                text, n = _ABSOLUTE_IMPORT.subn(rf"\g<1>{package}", text)
                if n:
                    revision.rewritten += n
                    with open(path, "w", encoding="utf-8") as fh:
                        fh.write(text)
        sys.path.insert(0, folder)
        importlib.import_module(package)
        _check_isolated(package, folder)
    except BaseException:
        revision.close()
        raise
    return revision


def _check_isolated(package: str, folder: str) -> None:
    """Every module of the copy comes from ``folder`` and none refers to the working tree's."""
    for name, module in list(sys.modules.items()):
        if name != package and not name.startswith(package + "."):
            continue
        where = os.path.abspath(getattr(module, "__file__", None) or "")
        if not where.startswith(os.path.abspath(folder) + os.sep):
            raise RuntimeError(f"{name} was imported from {where}, not from {folder}")
        for value in vars(module).values():
            owner = value if isinstance(value, ModuleType) else None
            owner_name = owner.__name__ if owner else getattr(value, "__module__", None)
            if isinstance(owner_name, str) and (
                owner_name == "webapp2_sessions" or owner_name.startswith("webapp2_sessions.")
            ):
                raise RuntimeError(f"{name} uses {owner_name} from the working tree")


# ---------------------------------------------------------------------- report


def machine_lines(memcached: MemcachedServer, source: str) -> list[str]:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    version = memcached.raw(b"version\r\n").decode().strip().removeprefix("VERSION ")

    def ver(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "-"

    packages = ", ".join(
        f"{name} {ver(dist)}"
        for name, dist in [
            ("webapp2_sessions", "webapp2-sessions"),
            ("webapp2", "webapp2"),
            ("WebOb", "WebOb"),
            ("pymemcache", "pymemcache"),
            ("Beaker", "Beaker"),
            ("python-memcached", "python-memcached"),
            ("Django", "Django"),
        ]
    )
    return [
        f"machine:   {platform.platform()}, {cpu}, {os.cpu_count()} CPUs",
        f"source:    {source}",
        f"python:    {platform.python_implementation()} {platform.python_version()}",
        f"memcached: {version} on 127.0.0.1 (started by this script)",
        f"packages:  {packages}",
    ]


def source_state() -> str:
    """The commit measured, and whether webapp2_sessions/ differs from it.

    Uncommitted changes are named by a digest of the diff and of untracked files,
    so two runs can tell whether they measured the same tree. Taken before the
    package is imported and again at the end (others may edit the tree meanwhile).
    """
    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "webapp2_sessions")
        if not dirty:
            return f"git {head}, webapp2_sessions/ clean"
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(
            subprocess.run(
                ["git", "-C", ROOT, "diff", "--binary", "HEAD", "--", "webapp2_sessions"],
                capture_output=True,
                check=True,
            ).stdout
        )
        untracked = git("ls-files", "--others", "--exclude-standard", "--", "webapp2_sessions")
        for name in sorted(untracked.splitlines()):
            digest.update(name.encode())
            try:
                with open(os.path.join(ROOT, name), "rb") as fh:
                    digest.update(fh.read())
            except FileNotFoundError:  # removed since it was listed
                pass
    except (OSError, subprocess.CalledProcessError):
        return f"not a git checkout: {ROOT}"
    return (
        f"git {head}, webapp2_sessions/ with uncommitted changes "
        f"(diff and untracked files: sha1 {digest.hexdigest()[:12]})"
    )


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def workload_table(runners: list[Runner], workload: str, sql: bool = False) -> list[str]:
    """One workload's rows; with ``sql``, the SQL/req and db RT/req columns too."""
    bare = next((r for r in runners if r.is_bare), None)
    base = bare.cells[workload].median_us() if bare else None
    width = max([29] + [len(r.impl.name) + 2 for r in runners])
    head = (
        f"{'implementation':<{width}}{'median µs':>10}{'p90 µs':>9}{'x bare':>8}"
        f"{'RT/req':>8}{'ops/req':>9}"
    )
    if sql:
        head += f"{'SQL/req':>9}{'db RT/req':>11}"
    head += f"{'cookie in/out B':>17}"
    lines = [WORKLOADS[workload], head, "-" * len(head)]
    for runner in runners:
        name = runner.impl.name
        if runner.impl.unavailable:
            lines.append(f"{name:<{width}}n/a: {runner.impl.unavailable}"[: 160 if sql else 120])
            continue
        if workload not in runner.workloads:
            continue
        cell = runner.cells[workload]
        median = cell.median_us()
        uses_server = runner.impl.proxy is not None
        if not uses_server:
            rt_text = ops_text = "0.00"
        elif cell.counted:
            rt_text = f"{cell.round_trips / cell.counted:.2f}"
            ops_text = f"{cell.ops / cell.counted:.2f}"
        else:
            rt_text = ops_text = "-"  # its counting instance could not be built
        cookie_in = (
            "-"
            if runner.is_bare or runner.impl.db_floor or cell.cookie_in is None
            else str(cell.cookie_in)
        )
        cookie_out = "-" if cell.cookie_out is None else str(cell.cookie_out)
        ratio = median / base if base else None
        line = (
            f"{name:<{width}}{median:>10.1f}{cell.p90_us():>9.1f}{fmt(ratio, '.2f'):>8}"
            f"{rt_text:>8}{ops_text:>9}"
        )
        if sql:
            line += f"{sql_text(runner, cell, 'statements'):>9}"
            line += f"{sql_text(runner, cell, 'db_round_trips'):>11}"
        lines.append(line + f"{cookie_in + '/' + cookie_out:>17}")
    return lines


def sql_text(runner: Runner, cell: Cell, what: str) -> str:
    """Statements or database round trips per request ("-": nothing to count)."""
    if runner.impl.database is None:
        return "0"  # no database at all
    value = getattr(cell, what)
    if not cell.counted or value is None:
        return "-"  # SQLite's round trips (in-process), or no counting instance
    return f"{value / cell.counted:.2f}"


def median_ratio_interval(
    mine: list[int], theirs: list[int], block: int, resamples: int = 1000, seed: int = 1
) -> tuple[float, float]:
    """A 95% interval for median(mine) / median(theirs), bootstrapped over rounds.

    Both rows ran one block per interleaved round, appended in round order, so
    the samples are cut back into their rounds and whole rounds are drawn with
    replacement, the same rounds for both rows: a slow spell of the machine
    stays paired, as it was in the run.
    """
    return paired_interval([mine, theirs], block, lambda m: m[0] / m[1], resamples, seed)


def paired_interval(
    series: list[list[int]],
    block: int,
    statistic: Callable[[list[float]], float],
    resamples: int = 1000,
    seed: int = 1,
) -> tuple[float, float]:
    """A 95% interval for ``statistic(medians of series)``, bootstrapped over rounds.

    As in ``median_ratio_interval``: every series ran one block per round, so the
    same whole rounds are redrawn for all of them.
    """
    rounds = min(len(times) for times in series) // block
    if rounds < 2:
        return float("nan"), float("nan")
    blocks = [[times[i * block : (i + 1) * block] for i in range(rounds)] for times in series]
    rng = random.Random(seed)
    values = []
    for _ in range(resamples):
        picks = rng.choices(range(rounds), k=rounds)
        medians = [percentile([t for i in picks for t in chunks[i]], 0.5) for chunks in blocks]
        values.append(statistic(medians))
    values.sort()
    return values[int(0.025 * resamples)], values[int(0.975 * resamples) - 1]


def comparison_lines(runners: list[Runner], revision: Revision, block: int) -> list[str]:
    """Ours against the earlier revision and the rows the targets name, per workload."""
    by_name = {r.impl.name: r for r in runners if not r.impl.unavailable}
    ours, before = by_name.get("ours"), by_name.get(revision.row_name)
    if ours is None or before is None:
        return [f"comparison with {revision.row_name}: a row is missing, nothing to compare"]
    floor, bare = by_name.get("floor (hand-written)"), by_name.get("bare webapp2")
    head = (
        f"{'workload':<12}{'ours / @' + revision.short:>16}{'95% interval':>18}"
        f"{'ours / ref':>12}{'@' + revision.short + ' / ref':>16}  ref"
    )
    lines = [
        f"ours (the working tree) against {revision.row_name} (git {revision.commit}), "
        "ratio of medians",
        "  interval: bootstrap over the interleaved rounds (whole rounds redrawn, paired)",
        "  ref: bare webapp2 for untouched, the hand-written floor otherwise",
        head,
        "-" * len(head),
    ]
    for workload in PATHS:
        now, then = ours.cells[workload], before.cells[workload]
        low, high = median_ratio_interval(now.times_ns, then.times_ns, block)
        ref = bare if workload == "untouched" else floor
        if ref is None:
            ref_text, mine, theirs = "-", None, None
        else:
            base = ref.cells[workload].median_us()
            ref_text = ref.impl.name
            mine, theirs = now.median_us() / base, then.median_us() / base
        lines.append(
            f"{workload:<12}{now.median_us() / then.median_us():>16.3f}"
            f"{f'{low:.3f} .. {high:.3f}':>18}{fmt(mine, '.3f'):>12}{fmt(theirs, '.3f'):>16}"
            f"  {ref_text}"
        )
    return lines


def durability_lines(runners: list[Runner]) -> list[str]:
    """What each database row's own connection reports, grouped by database."""
    by_db: dict[str, dict[str, list[str]]] = {}
    for runner in runners:
        impl = runner.impl
        if impl.durability is None or impl.database is None:
            continue
        try:
            value = impl.durability()
        except Exception as exc:
            value = f"could not be read ({type(exc).__name__}: {exc})"
        by_db.setdefault(impl.database, {}).setdefault(value, []).append(impl.name)
    lines = ["  durability as each row's own connection reports it (after its warm-up):"]
    for label, values in by_db.items():
        if len(values) == 1:
            ((value, names),) = values.items()
            lines.append(f"    {label}: {value} (the same on all {len(names)} rows)")
            continue
        lines.append(f"    {label}: the rows DIFFER:")
        lines += [f"      {value}: {', '.join(names)}" for value, names in values.items()]
    return lines


#: "Costs the same": the read-only request with a database within this of ours without.
SAME_COST = 0.05
#: Most that what ours adds above the bare commit may be, in ours-without-database requests.
ADDED_LIMIT = 1.5


def database_targets(runners: list[Runner], dbs: Databases, block: int) -> list[str]:
    """The durable tier's three targets, evaluated on this run's medians."""
    by_name = {r.impl.name: r for r in runners if not r.impl.unavailable}
    ours = by_name.get("ours")
    interval_note = "95% interval: bootstrap over the interleaved rounds (paired)"
    lines = [f"targets (--database); {interval_note}"]
    if ours is None:
        return [*lines, "  ours (memcached only) did not run: nothing to evaluate"]

    def interval(series: list[Runner], workload: str, stat: Callable[[list[float]], float]) -> str:
        low, high = paired_interval([r.cells[workload].times_ns for r in series], block, stat)
        return f"{low:.2f}..{high:.2f}"

    # 1. Faster than Django's cached_db on every workload.
    lines.append(
        "1. faster than django cached_db on every workload: median of ours + db / django's"
    )
    lines.append(f"   {'database':<12}" + "".join(f"{w:>20}" for w in PATHS))
    verdicts = []
    for db in dbs.items:
        if not db.peers:
            continue
        mine = by_name.get(f"ours + {db.label}")
        theirs = by_name.get(f"django cached_db + {db.label}")
        if mine is None or theirs is None:
            lines.append(f"   {db.label:<12}a row did not run: not evaluated")
            verdicts.append(False)
            continue
        cells = []
        holds = True
        for workload in PATHS:
            ratio = mine.cells[workload].median_us() / theirs.cells[workload].median_us()
            holds = holds and ratio < 1
            span = interval([mine, theirs], workload, lambda m: m[0] / m[1])
            cells.append(f"{f'{ratio:.2f} ({span})':>20}")
        verdicts.append(holds)
        lines.append(f"   {db.label:<12}" + "".join(cells) + f"  {'holds' if holds else 'FAILS'}")
    lines.append(f"   -> {'holds' if verdicts and all(verdicts) else 'does NOT hold'}")

    # 2. A read-only returning visitor costs the same as without a database, no SQL.
    lines.append(
        f"2. read 3 costs the same as without a database (ratio within 1 ± {SAME_COST:g}) "
        "and runs 0 statements"
    )
    lines.append(f"   {'database':<12}{'ours + db / ours':>18}{'95% interval':>15}{'SQL/req':>9}")
    verdicts = []
    for db in dbs.items:
        mine = by_name.get(f"ours + {db.label}")
        if mine is None:
            lines.append(f"   {db.label:<12}did not run: not evaluated")
            verdicts.append(False)
            continue
        cell = mine.cells["read"]
        ratio = cell.median_us() / ours.cells["read"].median_us()
        statements = cell.statements
        sql = statements / cell.counted if cell.counted and statements is not None else None
        holds = abs(ratio - 1) <= SAME_COST and sql == 0
        verdicts.append(holds)
        span = interval([mine, ours], "read", lambda m: m[0] / m[1])
        lines.append(
            f"   {db.label:<12}{ratio:>18.3f}{span:>15}{fmt(sql, '.2f'):>9}"
            f"  {'holds' if holds else 'FAILS'}"
        )
    lines.append(f"   -> {'holds' if verdicts and all(verdicts) else 'does NOT hold'}")

    # 3. What ours adds above the bare commit, against ours without a database.
    lines.append(
        f"3. (ours + db - bare commit) / ours <= {ADDED_LIMIT:g} on the writing workloads "
        "(medians, µs)"
    )
    lines.append(
        f"   {'database':<12}{'workload':<10}{'ours + db':>11}{'bare commit':>13}{'ours':>9}"
        f"{'added / ours':>14}{'95% interval':>15}"
    )
    verdicts = []
    for db in dbs.items:
        mine = by_name.get(f"ours + {db.label}")
        floor = by_name.get(f"{db.label}: bare commit")
        for workload in WRITING:
            if mine is None or floor is None:
                lines.append(f"   {db.label:<12}{workload:<10}a row did not run: not evaluated")
                verdicts.append(False)
                continue
            with_db = mine.cells[workload].median_us()
            commit = floor.cells[workload].median_us()
            alone = ours.cells[workload].median_us()
            added = (with_db - commit) / alone
            holds = added <= ADDED_LIMIT
            if db.peers:  # the WAL variant is shown, not judged: its durability is weaker
                verdicts.append(holds)
            span = interval([mine, floor, ours], workload, lambda m: (m[0] - m[1]) / m[2])
            lines.append(
                f"   {db.label:<12}{workload:<10}{with_db:>11.1f}{commit:>13.1f}{alone:>9.1f}"
                f"{added:>14.2f}{span:>15}  {'holds' if holds else 'FAILS'}"
                + ("" if db.peers else " (weaker durability: shown, not judged)")
            )
    lines.append(f"   -> {'holds' if verdicts and all(verdicts) else 'does NOT hold'}")
    return lines


@dataclass
class WriteCheck:
    """Every increment of the read-3-write-1 workload must have reached memcached."""

    ok: dict[str, int] = field(default_factory=dict)
    bad: list[str] = field(default_factory=list)

    def run(self, label: str, runners: list[Runner]) -> None:
        """Check ``runners`` (their apps must still be open) as the ``label`` pass."""
        self.ok[label] = 0
        for runner in runners:
            lost = runner.lost_writes()
            if lost is None:
                continue
            if lost == 0:
                self.ok[label] += 1
            else:
                self.bad.append(
                    f"{runner.impl.name} ({label} pass): {lost} of {runner.rw_requests} "
                    "increments missing"
                )

    def lines(self) -> list[str]:
        oks = ", ".join(f"ok for {n} rows in the {label} pass" for label, n in self.ok.items())
        lines = [f"write check (a == 1 + read-3-write-1 requests run): {oks}"]
        lines += [f"  MISMATCH {line}" for line in self.bad]
        return lines


def legend(runners: list[Runner], sql: bool = False) -> list[str]:
    lines = ["implementations:"]
    for runner in runners:
        if runner.impl.note:
            text = f"{runner.impl.name}: {runner.impl.note}"
            lines += textwrap.wrap(text, 96, initial_indent="  ", subsequent_indent="      ")
    lines += [
        "columns:",
        "  median/p90 µs: wall time of one in-process WSGI request (app call + body),",
        "          connected to memcached directly (no proxy in the path)",
        "  x bare: median over bare webapp2's median for the same workload",
        "  RT/req: memcached round trips the client waited for, counted on the wire by a proxy",
        "          in a separate, untimed pass (a second instance of each row, same warm-up)",
        "          (a noreply write is not waited for: it rides with the next command's burst)",
        "  ops/req: memcached key operations (get/touch/set/delete/incr, per key; server stats),",
        "          taken in the same counting pass",
        "  cookie in/out B: bytes of the session cookie value sent / set in the response",
    ]
    if sql:
        lines += [
            "  SQL/req: SQL statements sent through a cursor (ours: the driver's cursor;",
            "          Beaker: SQLAlchemy before_cursor_execute; Django: execute_wrapper;",
            "          the bare commit's 1 by construction; an executemany counts once), in",
            "          the same pass; transaction control (BEGIN, COMMIT) is not counted, whether",
            "          the driver sends it or the library (Django's SQLite backend sends BEGIN)",
            "  db RT/req: PostgreSQL round trips (BEGIN and COMMIT included), counted on the wire",
            "          by a proxy in the same pass; - for SQLite (in-process, no round trips)",
        ]
    return lines


# ---------------------------------------------------------------------- profiling


def profile_ours(
    make_direct: ProxyFactory,
    requests: int,
    profiler: str,
    workload: str = "rw",
    revision: Revision | None = None,
) -> None:
    """Run one workload of ours (or of ``revision``'s row), connected directly, under a
    profiler; print the top 25."""
    if revision is None:
        impl = peers.build_ours(make_direct)
    else:
        impl = peers.build_ours(make_direct, name=revision.row_name, package=revision.package)
    try:
        runner = Runner(impl)
        runner.prepare()
        runner.warm(50)  # learn the reads, open the connection
        runner.verify()
        template, app = runner.templates[workload], impl.app

        def work() -> None:
            for _ in range(requests):
                reply = call(app, template)
                if reply.status[:3] != "200":
                    check(impl, workload, reply)

        if profiler == "auto":
            try:
                import pyinstrument  # noqa: F401

                profiler = "pyinstrument"
            except ImportError:
                profiler = "cprofile"
        print(
            f"profile: {impl.name}, {WORKLOADS[workload]}; {requests} requests under {profiler}, "
            "memcached direct"
        )
        print("(times are per request and include the profiler's own overhead)")
        rows = _pyinstrument_rows(work) if profiler == "pyinstrument" else _cprofile_rows(work)
        print(f"{'cum µs':>9}{'own µs':>9}{'calls':>7}  function")
        for cum, own, calls, where in rows[:25]:
            calls_text = "-" if calls is None else f"{calls / requests:.1f}"
            print(
                f"{cum / requests * 1e6:>9.1f}{own / requests * 1e6:>9.1f}{calls_text:>7}  {where}"
            )
    finally:
        impl.close()


def _short(path: str) -> str:
    if _COMPARE_FOLDER.match(path):  # an earlier revision's copy: its package name says which
        return _COMPARE_FOLDER.sub("", path, count=1)
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return os.path.relpath(path, ROOT) if path.startswith(ROOT) else path


def _cprofile_rows(work: Callable[[], None]) -> list[tuple[float, float, int | None, str]]:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.runcall(work)
    stats: dict[Any, Any] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    rows = []
    for (path, line, func), (_cc, calls, own, cum, _callers) in stats.items():
        if func == "work" or (path == "~" and func.startswith("<method 'disable'")):
            continue
        where = func if path == "~" else f"{func}  {_short(path)}:{line}"
        rows.append((cum, own, calls, where))
    rows.sort(key=lambda r: r[0], reverse=True)
    return rows


def _pyinstrument_rows(work: Callable[[], None]) -> list[tuple[float, float, int | None, str]]:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0001)
    profiler.start()
    work()
    session = profiler.stop()
    root = session.root_frame()
    cum: dict[str, float] = {}
    own: dict[str, float] = {}

    def find_work(frame: Any) -> Any:
        if frame.function == "work":
            return frame
        for child in frame.children:
            found = find_work(child)
            if found is not None:
                return found
        return None

    def walk(frame: Any, active: frozenset[str]) -> None:
        if frame.is_synthetic:  # "[self]" and similar: already in the parent's own time
            return
        key = f"{frame.function}  {_short(frame.file_path or '?')}:{frame.line_no}"
        if key not in active:  # a recursive call is already counted by its outer frame
            cum[key] = cum.get(key, 0.0) + frame.time
        own[key] = own.get(key, 0.0) + frame.total_self_time
        for child in frame.children:
            walk(child, active | {key})

    work_frame = find_work(root) if root is not None else None
    for child in work_frame.children if work_frame is not None else []:
        walk(child, frozenset())
    rows: list[tuple[float, float, int | None, str]] = [
        (t, own.get(k, 0.0), None, k) for k, t in cum.items()
    ]
    rows.sort(key=lambda r: r[0], reverse=True)
    return rows


# ---------------------------------------------------------------------- main


def build_all(
    make_proxy: ProxyFactory,
    with_prefetch_row: bool,
    revision: Revision | None = None,
    dbs: Databases | None = None,
    counting: bool = False,
) -> list[Impl]:
    """Every row, in table order; a row that cannot be built says why instead.

    With a ``revision``, its "ours @<rev>" row follows the current "ours" rows.
    With ``dbs`` (``--database``), the rows are bare webapp2, ours and Django's cache
    sessions on memcached alone, then each database's rows (dbpeers.py); ``counting``
    says whether the instances are the counting pass's.
    """
    if dbs is not None:
        builders: list[tuple[str, Callable[[], Impl]]] = [
            ("bare webapp2", peers.build_bare),
            ("ours", lambda: peers.build_ours(make_proxy)),
            ("django cache sessions", lambda: peers.build_django(make_proxy)),
            *dbs.builders(make_proxy, counting, revision),
        ]
        with_prefetch_row = False
    else:
        builders = [
            ("bare webapp2", peers.build_bare),
            ("naive (noreply sets)", lambda: peers.build_naive(make_proxy)),
            ("floor (hand-written)", lambda: peers.build_floor(make_proxy)),
            ("webapp2_extras securecookie", peers.build_extras),
            ("beaker ext:memcached", lambda: peers.build_beaker(make_proxy)),
            ("django cache sessions", lambda: peers.build_django(make_proxy)),
            ("ours", lambda: peers.build_ours(make_proxy)),
            (
                "ours, unsigned",
                lambda: peers.build_ours(make_proxy, signed=False, name="ours, unsigned"),
            ),
        ]
    if with_prefetch_row:
        builders.append(
            (
                "ours, session_prefetch",
                lambda: peers.build_ours(make_proxy, prefetch=True, name="ours, session_prefetch"),
            )
        )
    if revision is not None:
        builders.append(
            (
                revision.row_name,
                lambda: peers.build_ours(
                    make_proxy,
                    name=revision.row_name,
                    package=revision.package,
                    source=f"webapp2_sessions at git {revision.short}",
                ),
            )
        )
    impls = []
    for name, build in builders:
        try:
            impls.append(build())
        except Exception as exc:
            impls.append(Impl(name, "", unavailable=f"{type(exc).__name__}: {exc}"))
    return impls


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per cell")
    parser.add_argument(
        "--block",
        type=int,
        default=20,
        help="requests per interleaved block (small blocks spread the machine's slow spells "
        "evenly over the rows)",
    )
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests per cell")
    parser.add_argument(
        "--count",
        type=int,
        default=200,
        help="requests per cell in the untimed round-trip counting pass (through the proxies)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the block order")
    parser.add_argument("--quick", action="store_true", help="a ~10 s run (fewer requests)")
    parser.add_argument(
        "--proxy",
        choices=["process", "thread"],
        default="process",
        help="where the counting pass's round-trip proxies run (thread: in this process)",
    )
    parser.add_argument(
        "--placement",
        choices=["split", "shared", "free"],
        default="split",
        help="where memcached (one worker thread) and this process run: split (the default): "
        "each pinned to a CPU of its own; shared: both on one CPU; free: left to the scheduler",
    )
    parser.add_argument(
        "--no-prefetch-row", action="store_true", help="skip the 'ours, session_prefetch' row"
    )
    parser.add_argument(
        "--compare-with",
        metavar="REV",
        help="also run webapp2_sessions as it was at git revision REV (extracted with git "
        "archive into a temporary folder, imported under another name) as an 'ours @REV' "
        "row, in the same run and interleaving; with --profile, profile it too",
    )
    parser.add_argument(
        "--database",
        metavar="DBS",
        type=database_list,
        help="instead of the usual rows, the durable tier against its peers on these "
        "databases (comma-separated: sqlite, postgresql): each database's bare commit, ours, "
        "Django's cached_db and Beaker's ext:database, with ours and Django's cache sessions "
        "on memcached alone; sqlite also brings its WAL variant (ours and its bare commit)",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="auto",
        choices=["auto", "cprofile", "pyinstrument"],
        help="only profile ours on one workload, --profile-workload (auto: pyinstrument if "
        "installed)",
    )
    parser.add_argument(
        "--profile-workload",
        choices=list(PATHS),
        default="rw",
        help="the workload --profile runs (default: rw, read 3 + write 1)",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.profile and args.database:
        parser.error("--profile profiles ours on memcached alone: drop --database")
    if args.quick:
        args.requests, args.block, args.warmup, args.count = 600, 20, 20, 100
    if args.requests < 1 or args.block < 1 or args.count < 1:
        parser.error("--requests, --block and --count must be positive")
    args.block = min(args.block, args.requests)
    return args


def database_list(text: str) -> list[str]:
    """``--database``'s value: known names, each once, in the table's order."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(DATABASES))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(DATABASES)}, not {text!r}"
        )
    return [name for name in DATABASES if name in names]


def place(placement: str) -> tuple[str | None, str]:
    """Pin this process and choose memcached's CPU; return (its CPUs, a description).

    A loopback round trip costs very different amounts depending on whether
    the server's thread wakes on the caller's CPU (a context switch) or on
    another one (a cross-CPU wake-up, far dearer under a hypervisor). Left to
    the scheduler, each connection lands on one of memcached's worker threads
    and each thread on some CPU, so two implementations in one run could pay
    different prices for the same round trip. One worker thread and fixed
    CPUs give every row the same round trip.
    """
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if placement == "free" or len(allowed) < 2 or shutil.which("taskset") is None:
        return None, "memcached -t 1, CPUs left to the scheduler"
    os.sched_setaffinity(0, {allowed[0]})
    if placement == "shared":
        return str(allowed[0]), f"memcached -t 1 and this process both pinned to CPU {allowed[0]}"
    return str(allowed[-1]), (
        f"memcached -t 1 pinned to CPU {allowed[-1]}, this process to CPU {allowed[0]} "
        "(every round trip crosses CPUs, as it crosses hosts in production)"
    )


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def count_pass(
    memcached: MemcachedServer,
    make_proxy: ProxyFactory,
    timed: list[Runner],
    args: argparse.Namespace,
    progress: Callable[[str], None],
    writes: WriteCheck,
    revision: Revision | None,
    dbs: Databases | None = None,
) -> None:
    """Build every row again through its own proxy and count what its requests cost.

    Untimed, and alone on memcached: each instance gets the timed rows' warm-up
    (so learned reads are in effect), then ``args.count`` requests per workload.
    The counts land in the matching timed runner's cells; the instances' writes
    are checked into ``writes`` before they are closed.
    """
    impls = build_all(make_proxy, not args.no_prefetch_row, revision, dbs, counting=True)
    runners = [Runner(impl) for impl in impls]
    try:
        for number, (counter, runner) in enumerate(zip(runners, timed, strict=True)):
            if counter.impl.unavailable or runner.impl.unavailable:
                continue
            counter.prepare()
            counter.warm(args.warmup)
            counter.verify()
            for workload in counter.workloads:
                counter.count_block(workload, args.count, memcached)
                cell, counted = runner.cells[workload], counter.cells[workload]
                cell.counted, cell.round_trips, cell.ops = (
                    counted.counted,
                    counted.round_trips,
                    counted.ops,
                )
                cell.statements, cell.db_round_trips = counted.statements, counted.db_round_trips
            progress(f"counting pass {number + 1}/{len(runners)}")
        writes.run("counting", [r for r in runners if r.cells])
    finally:
        for impl in impls:
            impl.close()


def main(argv: Iterable[str] | None = None) -> int:
    args = parse_args(argv)
    revision: Revision | None = None
    if args.compare_with:
        try:
            revision = materialise(args.compare_with)
        except RuntimeError as exc:
            print(f"bench.py: {exc}", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    source = source_state()  # before any row imports the package
    server_cpus, placement = place(args.placement)
    memcached = MemcachedServer(threads=1, cpus=server_cpus)
    impls: list[Impl] = []
    micro: Micro | None = None
    host: ProxyHost | None = None
    dbs: Databases | None = None
    try:
        memcached.start()
        make_direct: ProxyFactory = functools.partial(peers.Direct, memcached.address)
        if args.profile:
            profile_ours(make_direct, args.requests, args.profile, args.profile_workload)
            if revision is not None:
                print()
                profile_ours(
                    make_direct, args.requests, args.profile, args.profile_workload, revision
                )
            return 0
        if args.proxy == "process":
            host = ProxyHost(memcached.port)
            make_proxy: ProxyFactory = host.new_proxy
        else:

            def make_proxy() -> Proxy:
                return RoundTripProxy(memcached.port)

        def progress(text: str) -> None:
            print(f"\r{text} ({time.monotonic() - started:.0f}s)", end="", file=sys.stderr)

        if args.database:
            dbs = Databases(args.database, server_cpus, args.proxy)
            progress(f"setting up {', '.join(args.database)}")
            dbs.start()

        # The timed instances: connected to memcached directly.
        impls = build_all(make_direct, not args.no_prefetch_row, revision, dbs)
        runners = [Runner(impl) for impl in impls]
        live = [r for r in runners if not r.impl.unavailable]
        for runner in live:
            runner.prepare()
            runner.warm(args.warmup)
            runner.verify()
        durability = durability_lines(live) if dbs is not None else []

        # The counting instances: through the proxies, untimed, closed before the timing.
        writes = WriteCheck()
        count_pass(memcached, make_proxy, runners, args, progress, writes, revision, dbs)
        print(file=sys.stderr)

        micro = Micro(memcached, make_proxy)
        rounds = max(1, args.requests // args.block)
        blocks: list[Callable[[], None]] = [
            functools.partial(runner.run_block, workload, args.block)
            for runner in live
            for workload in runner.workloads
        ]
        blocks += [
            functools.partial(micro.run_block, op, route, args.block)
            for op in Micro.OPS
            for route in Micro.ROUTES
        ]
        run_interleaved(blocks, rounds, args.seed, progress)
        print(file=sys.stderr)

        source_now = source_state()
        if source_now != source:
            source += f"; at the end: {source_now} (the tree changed during the run)"
        lines = machine_lines(memcached, source)
        if revision is not None:
            lines.append(f"compared:  {revision.row_name} = {revision.describe()}")
        lines.append(f"placement: {placement}")
        where = "a child process" if args.proxy == "process" else "this process (threads)"
        lines.append("timing:    every implementation connects to memcached directly (no proxy)")
        lines.append(
            f"counting:  a second instance per implementation through its own RoundTripProxy "
            f"in {where}, untimed, {args.warmup} warm-up + {args.count} counted per cell"
        )
        cells = sum(len(r.workloads) for r in live)
        shape = f"{len(live)} implementations x {len(PATHS)} workloads"
        if cells != len(live) * len(PATHS):  # the bare commits run only the writing ones
            shape = f"{len(live)} implementations, {cells} (implementation, workload) cells"
        lines.append(
            f"requests:  {rounds * args.block} timed per cell ({rounds} interleaved rounds of "
            f"{args.block}), {args.warmup} warm-up per cell, {shape}"
        )
        if dbs is not None:
            lines += dbs.header_lines()
            lines += durability
            if dbs.unavailable:
                lines += [f"  unavailable: {k}: {why}" for k, why in dbs.unavailable.items()]
        lines.append("")
        for workload in PATHS:
            lines += workload_table(runners, workload, sql=dbs is not None)
            lines.append("")
        lines.append(
            "floor micro-rows: pymemcache Client(no_delay=True, default_noreply=False), "
            "keys present, 5-byte values"
        )
        lines.append(f"{'':<36}{'direct µs':>12}{'via proxy µs':>14}")
        for op, label in [("get", "get, 1 key (1 RT)"), ("get_many", "get_many, 3 keys (1 RT)")]:
            direct, via = micro.median_us(op, "direct"), micro.median_us(op, "via proxy")
            lines.append(f"{label:<36}{direct:>12.1f}{via:>14.1f}")
        lines.append("")
        if revision is not None:
            lines += comparison_lines(runners, revision, args.block)
            lines.append("")
        if dbs is not None:
            lines += database_targets(runners, dbs, args.block)
            lines.append("")
        writes.run("timed", live)
        lines += writes.lines()
        lines.append("")
        lines += legend(runners, sql=dbs is not None)
        lines.append(f"total run time: {time.monotonic() - started:.0f}s")
        print("\n".join(lines))
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; stopping memcached, databases and proxies", file=sys.stderr)
        return 130
    finally:
        for impl in impls:
            impl.close()
        if micro is not None:
            micro.close()
        if host is not None:
            host.close()
        if dbs is not None:
            dbs.close()
        memcached.stop()
        if revision is not None:
            revision.close()


if __name__ == "__main__":
    sys.exit(main())
