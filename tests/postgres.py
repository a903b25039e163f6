"""A real, throwaway PostgreSQL for the tests, on a free loopback port.

``PostgresServer().start()`` runs Debian's ``initdb`` into a fresh temporary
directory, then ``postgres`` on 127.0.0.1 with a socket directory of its own,
``trust`` authentication and a superuser role named ``postgres``. As root the
binaries run as an unprivileged user (PostgreSQL refuses root): Debian's
``postgres`` system user, else ``nobody``.

The postmaster is our child process; its backends are found through the
parent pids in ``/proc``. Everything is signalled by PID, never looked up by
name. Nothing skips: a missing binary or a server that will not start raises.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

#: Settings that trade durability for speed: right for tests, wrong for a
#: benchmark of the durable tier (pass ``fast=False`` there).
FAST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}

#: The superuser role initdb creates, whatever the OS user.
SUPERUSER = "postgres"

#: Seconds the server has to accept a real query after it was launched:
#: generous, for crash recovery on a loaded 2-core machine.
START_DEADLINE = 30.0
#: Seconds a fast shutdown may take before the server is killed.
STOP_DEADLINE = 30.0
#: Seconds a pause or resume may take to show in /proc before it is an error.
PAUSE_DEADLINE = 10.0

INSTALL_HINT = "run `make test` (it installs it) or `apt-get install postgresql`"

_database_numbers = itertools.count(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _version_key(path: str) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin/initdb; versions are "15" or "9.6".
    version = Path(path).parent.parent.name
    return tuple(int(part) for part in re.findall(r"\d+", version))


def postgres_binaries() -> tuple[str, str]:
    """``(initdb, postgres)`` of the newest Debian PostgreSQL installed.

    Raises ``RuntimeError`` saying how to install it when there is none.
    """
    found = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        server = os.path.join(os.path.dirname(initdb), "postgres")
        if os.access(initdb, os.X_OK) and os.access(server, os.X_OK):
            found.append(initdb)
    if not found:
        raise RuntimeError(f"PostgreSQL is not installed (no initdb); {INSTALL_HINT}")
    initdb = max(found, key=_version_key)
    return initdb, os.path.join(os.path.dirname(initdb), "postgres")


def _server_user() -> pwd.struct_passwd | None:
    """The user to run as when we are root, or None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root, but neither a `postgres` nor a `nobody` user exists")


def _reachable_by_others(path: str) -> bool:
    """True if every directory from / down to ``path`` lets other users through."""
    current = Path(path).resolve()
    for directory in (current, *current.parents):
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            return False
    return True


def _stat_fields(pid: int | str) -> tuple[str, int] | None:
    """``(state, parent pid)`` of a process or thread from its stat file, or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The fields after "(comm)"; comm may itself hold ')' or spaces.
    state, ppid = text[text.rindex(")") + 2 :].split(" ", 2)[:2]
    return state, int(ppid)


def _thread_states(pid: int) -> list[str]:
    """The scheduler state (``R``, ``S``, ``T``, ``Z``...) of each thread of ``pid``."""
    states = []
    # A process that exits meanwhile: its folder is gone (ENOENT), or going
    # while it is reaped (ESRCH).
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            fields = _stat_fields(f"{pid}/task/{task.name}")
            if fields is not None:
                states.append(fields[0])
    return states


def _descendants(root: int) -> list[int]:
    """The pids of every live descendant of ``root``, from the parent pids in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(entry)
            if fields is not None:
                children.setdefault(fields[1], []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal_pid(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


class PostgresServer:
    """One throwaway PostgreSQL cluster on 127.0.0.1.

    ``settings`` are extra ``-c name=value`` server settings, applied over
    :data:`FAST_SETTINGS` unless ``fast`` is False (durable defaults, for
    benchmarks). ``cpus`` pins the server (``taskset -c`` syntax).
    ``start_deadline`` is how long a start may take before it is an error.
    """

    def __init__(
        self,
        settings: Mapping[str, str] | None = None,
        *,
        fast: bool = True,
        cpus: str | None = None,
        start_deadline: float = START_DEADLINE,
    ) -> None:
        self.settings = {**(FAST_SETTINGS if fast else {}), **(settings or {})}
        self.cpus = cpus
        self.start_deadline = start_deadline
        self.initdb, self.postgres = postgres_binaries()
        self.os_user = _server_user()
        self.port = 0
        self.base: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        #: Seconds the last initdb and the last launch (up to a served query) took.
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ addresses

    @property
    def user(self) -> str:
        """The database role to connect as (a superuser, trusted without a password)."""
        return SUPERUSER

    def url_for(self, database: str) -> str:
        """A SQLAlchemy URL (psycopg 3 driver) for ``database`` on this server."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        """A SQLAlchemy URL for the ``postgres`` maintenance database."""
        return self.url_for("postgres")

    def conninfo(self, database: str = "postgres") -> str:
        """A libpq connection string, for psycopg directly."""
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={database}"

    def connect(self, database: str = "postgres", **kwargs: Any) -> Any:
        """A psycopg connection (autocommit unless said otherwise), 10 s connect timeout."""
        import psycopg

        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("connect_timeout", 10)
        return psycopg.connect(self.conninfo(database), **kwargs)

    # ------------------------------------------------------------------ paths

    def _path(self, name: str) -> Path:
        assert self.base is not None, "the server has not been started"
        return self.base / name

    @property
    def data_dir(self) -> Path:
        return self._path("data")

    @property
    def socket_dir(self) -> Path:
        return self._path("run")

    @property
    def log_path(self) -> Path:
        """The server's stdout and stderr, across restarts."""
        return self._path("postgres.log")

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (AssertionError, FileNotFoundError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> PostgresServer:
        """initdb into a fresh temporary directory, launch, and wait until a query is served.

        Raises ``RuntimeError`` (with the server's log) if it is not serving
        within ``start_deadline`` seconds.
        """
        assert self.base is None, "already started; use restart()"
        self._make_base()
        try:
            self._initdb()
            for attempt in itertools.count(1):
                self.port = free_port()
                try:
                    self._launch()
                    return self
                except _PortTaken:
                    # Another process took the port between free_port() and
                    # the server's bind: pick another.
                    if attempt == 3:
                        raise
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Shut the server down (fast shutdown, then SIGKILL) and remove its directory."""
        self._shutdown()
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def restart(self) -> None:
        """Shut down and start again on the same port, keeping the data directory.

        After :meth:`kill` this starts crash recovery, as after a crash.
        """
        self._shutdown()
        self._launch()

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash: no shutdown checkpoint.

        Its backends are killed too, so that nothing still holds the shared
        memory when :meth:`restart` runs crash recovery (a backend left alone
        would only exit once it noticed the postmaster's death).
        """
        if self.proc is None:
            return
        children = []
        if self.proc.poll() is None:  # else its pid, reaped, may be another's now
            # Stopped first, the postmaster forks no backend we would miss.
            with contextlib.suppress(RuntimeError):
                self.pause()
            children = _descendants(self.proc.pid)
            self.proc.kill()
            for pid in children:
                _signal_pid(pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        self._wait_gone(children)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ensure_running(self) -> None:
        """Resume a paused server and restart a dead one (after a test that left it so)."""
        if self.base is None:
            raise RuntimeError("the server has not been started")
        if self.running:
            self.resume()
        else:
            self.restart()

    def _make_base(self) -> None:
        parent = tempfile.gettempdir()
        if self.os_user is not None and not _reachable_by_others(parent):
            parent = "/tmp"  # world-traversable, unlike e.g. /root/tmp
        self.base = Path(tempfile.mkdtemp(prefix="webapp2-sessions-pg-", dir=parent))
        self.socket_dir.mkdir(mode=0o700)
        if self.os_user is not None:
            for path in (self.base, self.socket_dir):
                os.chown(path, self.os_user.pw_uid, self.os_user.pw_gid)

    def _as_server_user(self) -> dict[str, Any]:
        """Popen arguments that run a binary as the server's user, in a clean environment."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        # English messages, which _launch reads; no locale needed in the cluster.
        env.update(LC_ALL="C", LANG="C", HOME=str(self.base))
        kwargs: dict[str, Any] = {"env": env, "cwd": self.base}
        if self.os_user is not None:
            kwargs.update(user=self.os_user.pw_uid, group=self.os_user.pw_gid, extra_groups=[])
        return kwargs

    def _initdb(self) -> None:
        args = [self.initdb, "-D", str(self.data_dir), "-U", SUPERUSER, "-A", "trust"]
        # -N: no fsync of the new cluster; the directory is thrown away anyway.
        args += ["-E", "UTF8", "--no-locale", "-N"]
        began = time.monotonic()
        try:
            done = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=120,
                check=False,
                **self._as_server_user(),
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"initdb did not finish within {exc.timeout:g}s") from exc
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace").strip()
            raise RuntimeError(f"initdb failed ({done.returncode}): {output}")
        self.timings["initdb"] = time.monotonic() - began

    def _launch(self) -> None:
        assert self.proc is None, "the server is running"
        # Only a postmaster of ours could have written it, and it is gone
        # (after kill() its pid may since have been reused).
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / "postmaster.pid").unlink()
        args = [self.postgres, "-D", str(self.data_dir), "-p", str(self.port)]
        args += ["-k", str(self.socket_dir), "-c", "listen_addresses=127.0.0.1"]
        for name, value in self.settings.items():
            args += ["-c", f"{name}={value}"]
        setpriv = shutil.which("setpriv")
        if setpriv:
            # If the test run dies without stopping us, the postmaster goes
            # with it (its backends follow once they see it gone). setpriv
            # runs after the switch of user, which would clear the setting,
            # and execs: the pid stays the postmaster's.
            args = [setpriv, "--pdeathsig=KILL", "--", *args]
        if self.cpus is not None:
            args = ["taskset", "-c", self.cpus, *args]
        with open(self.log_path, "ab") as log:
            began = time.monotonic()
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Keep the terminal's Ctrl-C for pytest, which then stops us.
                start_new_session=True,
                **self._as_server_user(),
            )
        try:
            self._wait_ready(began + self.start_deadline)
        except BaseException:
            self.kill()
            raise
        self.timings["launch"] = time.monotonic() - began

    def _wait_ready(self, until: float) -> None:
        import psycopg

        assert self.proc is not None
        error: Exception | None = None
        while True:
            if self.proc.poll() is not None:
                log = self.log_tail()
                if "Address already in use" in log.rsplit("starting PostgreSQL", 1)[-1]:
                    raise _PortTaken(self.port)
                raise RuntimeError(
                    f"postgres exited at start ({self.proc.returncode}) on port "
                    f"{self.port}; its log ends:\n{log}"
                )
            try:
                # A TCP connect first: cheap, and quiet until the port is open.
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                with self.connect(connect_timeout=5) as conn:
                    conn.execute("SELECT 1")
                return
            except (OSError, psycopg.Error) as exc:
                error = exc  # "the database system is starting up", or not listening yet
            if time.monotonic() > until:
                raise RuntimeError(
                    f"postgres pid {self.proc.pid} did not serve a query on port "
                    f"{self.port} within {self.start_deadline:g}s (last error: "
                    f"{error}); its log ends:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _shutdown(self) -> None:
        """Stop the server process, keeping its directory."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # A paused server would never handle the shutdown signal.
            for pid in [self.proc.pid, *_descendants(self.proc.pid)]:
                _signal_pid(pid, signal.SIGCONT)
            # SIGINT is PostgreSQL's "fast" shutdown: it ends client sessions
            # and checkpoints. Its SIGTERM ("smart") would wait for every
            # client to disconnect, and a test's leftover pool never does.
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self.proc.wait()
        self.proc = None

    def _wait_gone(self, pids: list[int], deadline: float = PAUSE_DEADLINE) -> None:
        """Wait until none of ``pids`` runs any more (exited, or a zombie)."""
        until = time.monotonic() + deadline
        while True:
            alive = [p for p in pids if any(s not in "ZX" for s in _thread_states(p))]
            if not alive:
                return
            if time.monotonic() > until:
                raise RuntimeError(f"postgres processes {alive} survived SIGKILL")
            time.sleep(0.005)

    # ------------------------------------------------------------------ databases

    def create_database(self, name: str | None = None) -> str:
        """``CREATE DATABASE`` (a fresh name unless given); returns its name."""
        if name is None:
            name = f"test_{os.getpid()}_{next(_database_numbers)}"
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """``DROP DATABASE ... WITH (FORCE)``: connections still open are ended."""
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # ------------------------------------------------------------------ stalling
    # SIGSTOP is delivered asynchronously, and the postmaster may fork a new
    # backend while its children are being stopped. So the postmaster is
    # stopped first, and the pause returns only once /proc shows it and every
    # one of its descendants stopped.

    def processes(self) -> list[int]:
        """The postmaster's pid, then its descendants' (backends, background workers)."""
        assert self.proc is not None, "postgres is not running"
        return [self.proc.pid, *_descendants(self.proc.pid)]

    def pause(self, deadline: float = PAUSE_DEADLINE) -> None:
        """SIGSTOP the server and return once all of its processes are stopped.

        Raises ``RuntimeError`` if that has not happened within ``deadline``
        seconds (the server is resumed first, so the test does not hang).
        """
        self._signal_all(signal.SIGSTOP, stopped=True, deadline=deadline)

    def resume(self, deadline: float = PAUSE_DEADLINE) -> None:
        """SIGCONT the server and return once none of its processes is stopped."""
        self._signal_all(signal.SIGCONT, stopped=False, deadline=deadline)

    @contextlib.contextmanager
    def paused(self) -> Iterator[PostgresServer]:
        """``with server.paused():`` the server is stalled inside, running after."""
        self.pause()
        try:
            yield self
        finally:
            self.resume()

    def _signal_all(self, signum: int, *, stopped: bool, deadline: float) -> None:
        assert self.proc is not None, "postgres is not running"
        if self.proc.poll() is not None:
            raise RuntimeError(f"postgres pid {self.proc.pid} exited ({self.proc.returncode})")
        os.kill(self.proc.pid, signum)  # our own child, by its PID
        signalled = {self.proc.pid}
        until = time.monotonic() + deadline
        while True:
            states = {}
            for pid in self.processes():
                if pid not in signalled:
                    _signal_pid(pid, signum)
                    signalled.add(pid)
                threads = _thread_states(pid)
                if threads:
                    states[pid] = threads
            # A zombie (a backend that exited, unreaped by a stopped
            # postmaster) runs no more than a stopped process does.
            if all(
                (state in "TZX") == stopped or (state in "ZX")
                for threads in states.values()
                for state in threads
            ):
                return
            if time.monotonic() > until:
                if stopped:
                    for pid in self.processes():
                        _signal_pid(pid, signal.SIGCONT)
                action = "stop" if stopped else "continue"
                raise RuntimeError(
                    f"postgres pid {self.proc.pid} did not {action} within {deadline:g}s "
                    f"after {signal.Signals(signum).name}; states: {states}"
                )
            time.sleep(0.005)


class _PortTaken(RuntimeError):
    def __init__(self, port: int) -> None:
        super().__init__(f"port {port} was taken before postgres could bind it")
