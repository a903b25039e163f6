"""The durable rows of ``bench.py --database``: sessions kept in a SQL database too.

Every row uses the benchmark's one memcached and, per database, one shared
database, set up here and thrown away at the end:

* ``sqlite``: a fresh file in a temporary folder, with SQLite's defaults (rollback
  journal, ``synchronous=FULL``); ``sqlite WAL``: a second file in WAL mode with
  ``synchronous=NORMAL`` (``webapp2_sessions.sql.sqlite_engine(path, wal=True)``),
  the documented faster, weaker option. Two files, because WAL mode stays with
  the file once set.
* ``postgresql``: a throwaway cluster (tests/postgres.py) with durable settings
  (``PostgresServer(fast=False)``: fsync and ``synchronous_commit`` on), started
  on the CPU memcached runs on and stopped by its PID at the end.

Rows per database (``Databases.builders``):

* ``<db>: bare commit``: the database's own cost and no session: the writing
  pages run one empty write transaction (``UPDATE`` of one row, then ``COMMIT``;
  the driver opens the transaction itself) on a raw connection of the same
  driver (sqlite3, psycopg), in a plain WSGI callable;
* ``ours + <db>``: webapp2_sessions with ``database`` set to an Engine;
* ``django cached_db + <db>``: Django's ``cached_db`` SessionStore, its cache on
  PyMemcacheCache at the same memcached, its table made by Django's own
  ``migrate``;
* ``beaker ext:database + <db>``: Beaker's SessionMiddleware on its
  ``ext:database`` backend (a pickled row per session, no memcached in front).

On ``sqlite WAL`` only the bare commit and ours run.

The counting instances (bench.py's untimed pass) count SQL statements: the
driver's own cursors for ours (``tests/sqlcount.py``: its writes run on the
DBAPI cursor, past SQLAlchemy's events), SQLAlchemy's
``before_cursor_execute`` for Beaker, Django's ``execute_wrapper`` for
Django, by construction for the bare commit. Each is a statement sent through
a cursor (an ``executemany`` counts once), except transaction control
(``BEGIN``, ``COMMIT``, ``ROLLBACK``): the drivers mostly send it on their
own, uncounted, but Django's SQLite backend sends its ``BEGIN`` through the
cursor, and it is left out there too so that every row counts the same thing. On PostgreSQL the
counting instances also connect through a RoundTripProxy of their own, which
counts the database's round trips on the wire (``BEGIN`` and ``COMMIT``
included).
"""

from __future__ import annotations

import contextvars
import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import peers
from peers import COOKIE_NAME, PATHS, SECRET, Impl, Proxy, ProxyFactory
from postgres import PostgresServer
from proxyhost import ProxyHost
from rtproxy import RoundTripProxy

#: The workloads that write, where the bare commit runs its transaction.
WRITING = ("new", "rw")
_WRITING_PATHS = frozenset(PATHS[w] for w in WRITING)
#: Each database's one-row table for the bare commit.
FLOOR_TABLE = "bench_commit"
_FLOOR_UPDATE = f"UPDATE {FLOOR_TABLE} SET n = n + 1 WHERE id = 1"

#: The Django database alias the current request uses (see ``_AliasRouter``).
_DJANGO_ALIAS: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "bench_django_alias", default=None
)

_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
#: Statements not counted: transaction control, which most drivers send uncounted.
_TRANSACTION_CONTROL = re.compile(r"\s*(BEGIN|COMMIT|ROLLBACK)\b", re.IGNORECASE)


class _AliasRouter:
    """Sends Django's session queries to the database alias of the row running them.

    Django's ``db`` and ``cached_db`` stores ask the router which database to use
    (``router.db_for_read`` / ``db_for_write``); each Django row sets its alias
    around its own requests.
    """

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return _DJANGO_ALIAS.get()

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return _DJANGO_ALIAS.get()


@dataclass
class Link:
    """Where one row instance reaches its database."""

    #: A SQLAlchemy URL.
    url: str
    #: The round-trip proxy in the path (counting instances on PostgreSQL), or None.
    proxy: Proxy | None
    counting: bool


@dataclass
class Database:
    """One database the durable rows share."""

    key: str
    label: str
    #: The durability settings asked for, as the header prints them.
    settings: str
    path: str | None = None
    wal: bool = False
    server: PostgresServer | None = None
    name: str = ""
    #: Makes round-trip proxies to the PostgreSQL server (counting instances).
    make_proxy: ProxyFactory | None = None
    #: Whether Django's and Beaker's rows run on it too (not on the WAL variant).
    peers: bool = True
    #: The proxy Django's counting alias connects through (made before Django is set up).
    django_proxy: Proxy | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.path is not None

    def url(self, address: str | None = None) -> str:
        if self.path is not None:
            return f"sqlite:///{self.path}"
        assert self.server is not None
        return f"postgresql+psycopg://{self.server.user}@{address}/{self.name}"

    def direct_address(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.port}"

    def link(self, counting: bool) -> Link:
        """A new instance's way in: on PostgreSQL, counting ones get a proxy of their own."""
        if self.is_sqlite or not counting:
            address = None if self.is_sqlite else self.direct_address()
            return Link(self.url(address), None, counting)
        assert self.make_proxy is not None
        proxy = self.make_proxy()
        return Link(self.url(proxy.address), proxy, counting)

    def engine(self, link: Link) -> Any:
        """A SQLAlchemy Engine with this database's durability settings."""
        import sqlalchemy as sa

        from webapp2_sessions.sql import sqlite_engine

        if self.path is not None:
            engine = sqlite_engine(self.path, wal=self.wal)
        else:
            engine = sa.create_engine(link.url)
        if link.counting:
            from sqlcount import counted

            counted(engine)
        return engine

    def raw_connect(self, link: Link) -> Any:
        """A DBAPI connection of the driver SQLAlchemy uses, in its default transaction mode."""
        if self.path is not None:
            conn = sqlite3.connect(self.path)
            if self.wal:  # as sqlite_engine(path, wal=True) sets up each connection
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            return conn
        import psycopg

        host, port = (link.proxy.address if link.proxy else self.direct_address()).split(":")
        assert self.server is not None
        return psycopg.connect(
            f"host={host} port={port} user={self.server.user} dbname={self.name}"
        )

    # ------------------------------------------------------------------ durability

    def queries(self) -> list[tuple[str, str]]:
        """The settings that decide whether a commit survives a crash, and how to read them."""
        if self.is_sqlite:
            return [
                ("journal_mode", "PRAGMA journal_mode"),
                ("synchronous", "PRAGMA synchronous"),
            ]
        return [
            ("fsync", "SHOW fsync"),
            ("synchronous_commit", "SHOW synchronous_commit"),
            ("full_page_writes", "SHOW full_page_writes"),
        ]

    def describe(self, values: list[Any]) -> str:
        parts = []
        for (name, _sql), value in zip(self.queries(), values, strict=True):
            if name == "synchronous":
                value = f"{_SYNCHRONOUS.get(int(value), value)}"
            parts.append(f"{name}={value}")
        return ", ".join(parts)

    def durability_of_engine(self, engine: Any) -> Callable[[], str]:
        def read() -> str:
            with engine.connect() as conn:
                return self.describe(
                    [conn.exec_driver_sql(sql).scalar() for _name, sql in self.queries()]
                )

        return read

    def durability_of_dbapi(self, conn: Any) -> Callable[[], str]:
        def read() -> str:
            values = []
            for _name, sql in self.queries():
                cursor = conn.cursor()
                cursor.execute(sql)
                values.append(cursor.fetchone()[0])
                cursor.close()
            conn.rollback()  # psycopg opened a transaction for the SHOWs
            return self.describe(values)

        return read


@dataclass
class Databases:
    """The databases of one run: made by ``start``, thrown away by ``close``."""

    keys: list[str]
    #: CPUs the PostgreSQL server is pinned to (memcached's, ``taskset -c`` syntax).
    server_cpus: str | None = None
    #: Where the counting instances' PostgreSQL proxies run: "process" or "thread".
    proxy_mode: str = "process"
    folder: str = ""
    items: list[Database] = field(default_factory=list)
    server: PostgresServer | None = None
    host: ProxyHost | None = None
    #: Why a kind of row cannot run (row name prefix -> reason), shown in its place.
    unavailable: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="webapp2-sessions-bench-db-")
        os.makedirs(os.path.join(self.folder, "beaker-locks"))
        if "sqlite" in self.keys:
            self.items.append(
                Database(
                    "sqlite",
                    "sqlite",
                    "rollback journal, synchronous=FULL (SQLite's defaults)",
                    path=os.path.join(self.folder, "sessions.db"),
                )
            )
            self.items.append(
                Database(
                    "sqlite_wal",
                    "sqlite WAL",
                    "journal_mode=WAL, synchronous=NORMAL (sqlite_engine(path, wal=True)): "
                    "faster, weaker: the last commits before a power loss may be lost",
                    path=os.path.join(self.folder, "sessions-wal.db"),
                    wal=True,
                    peers=False,
                )
            )
        if "postgresql" in self.keys:
            self.server = PostgresServer(fast=False, cpus=self.server_cpus).start()
            if self.proxy_mode == "process":
                self.host = ProxyHost(self.server.port)
                make_proxy: ProxyFactory = self.host.new_proxy
            else:
                server = self.server

                def make_proxy() -> Proxy:
                    proxy: Proxy = RoundTripProxy(server.port)
                    return proxy

            self.items.append(
                Database(
                    "postgresql",
                    "postgresql",
                    "fsync=on, synchronous_commit=on (PostgresServer(fast=False): "
                    "PostgreSQL's defaults)",
                    server=self.server,
                    name=self.server.create_database("bench"),
                    make_proxy=make_proxy,
                )
            )
        for db in self.items:
            self._make_floor_table(db)
        self._setup_django()

    def _make_floor_table(self, db: Database) -> None:
        conn = db.raw_connect(db.link(counting=False))
        try:
            conn.execute(f"CREATE TABLE {FLOOR_TABLE} (id INTEGER PRIMARY KEY, n INTEGER)")
            conn.execute(f"INSERT INTO {FLOOR_TABLE} (id, n) VALUES (1, 0)")
            conn.commit()
        finally:
            conn.close()

    def _setup_django(self) -> None:
        """Configure Django once for this process, with every database alias the rows use.

        Django reads its settings once, so every alias is declared here (the
        timed instance's and the counting instance's, which on PostgreSQL goes
        through a proxy made now). ``migrate`` makes the sessions table.
        """
        try:
            import django
            from django.conf import settings
            from django.core.management import call_command

            databases: dict[str, Any] = {"default": {}}
            for db in self.items:
                if not db.peers:
                    continue
                if db.path is not None:
                    conf = {"ENGINE": "django.db.backends.sqlite3", "NAME": db.path}
                    databases[db.key] = {**conf, "CONN_MAX_AGE": None}
                    databases[f"{db.key}_count"] = {**conf, "CONN_MAX_AGE": None}
                    continue
                assert db.server is not None and db.make_proxy is not None
                db.django_proxy = db.make_proxy()
                for alias, address in [
                    (db.key, db.direct_address()),
                    (f"{db.key}_count", db.django_proxy.address),
                ]:
                    host, port = address.split(":")
                    databases[alias] = {
                        "ENGINE": "django.db.backends.postgresql",
                        "NAME": db.name,
                        "USER": db.server.user,
                        "HOST": host,
                        "PORT": port,
                        "CONN_MAX_AGE": None,
                    }
            settings.configure(
                SECRET_KEY=SECRET,
                INSTALLED_APPS=["django.contrib.sessions"],
                USE_TZ=True,
                SESSION_COOKIE_NAME=COOKIE_NAME,
                # Every row names a cache alias of its own (peers.build_django adds them).
                CACHES={"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}},
                DATABASES=databases,
                DATABASE_ROUTERS=[_AliasRouter()],
            )
            django.setup()
            for db in self.items:
                if db.peers:
                    call_command("migrate", "sessions", database=db.key, verbosity=0)
        except Exception as exc:
            self.unavailable["django"] = f"{type(exc).__name__}: {exc}"

    def close(self) -> None:
        """Close Django's connections, stop PostgreSQL (by its PID), remove the files."""
        try:
            from django.conf import settings

            if settings.configured:
                from django.db import connections

                connections.close_all()
        except ImportError:
            pass
        for db in self.items:
            if db.django_proxy is not None:
                db.django_proxy.close()
        if self.host is not None:
            self.host.close()
        if self.server is not None:
            self.server.stop()
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    # ------------------------------------------------------------------ rows

    def builders(
        self, make_proxy: ProxyFactory, counting: bool, revision: Any = None
    ) -> list[tuple[str, Callable[[], Impl]]]:
        """Each database's rows, in table order: bare commit, ours (and ours at
        ``revision``, bench.py's ``--compare-with``), Django, Beaker."""
        out: list[tuple[str, Callable[[], Impl]]] = []
        for db in self.items:
            out.append((f"{db.label}: bare commit", _bind(build_floor, db, counting)))
            out.append(
                (f"ours + {db.label}", _bind(build_ours_db, db, counting, make_proxy=make_proxy))
            )
            if revision is not None:
                name = f"{revision.row_name} + {db.label}"
                out.append(
                    (
                        name,
                        _bind(
                            build_ours_db,
                            db,
                            counting,
                            make_proxy=make_proxy,
                            name=name,
                            package=revision.package,
                        ),
                    )
                )
            if not db.peers:
                continue
            name = f"django cached_db + {db.label}"
            if "django" in self.unavailable:
                out.append((name, _fail(self.unavailable["django"])))
            else:
                out.append(
                    (name, _bind(build_django_cached_db, db, counting, make_proxy=make_proxy))
                )
            lock_dir = os.path.join(self.folder, "beaker-locks")
            out.append(
                (
                    f"beaker ext:database + {db.label}",
                    _bind(build_beaker_db, db, counting, lock_dir=lock_dir),
                )
            )
        return out

    def header_lines(self) -> list[str]:
        import sqlalchemy as sa

        versions = f"SQLAlchemy {sa.__version__}"
        if self.server is not None:
            import psycopg

            versions += f", psycopg {psycopg.__version__}"
        lines = [f"databases: {versions}"]
        for db in self.items:
            if db.is_sqlite:
                where = f"SQLite {sqlite3.sqlite_version} (sqlite3), file {db.path}"
            else:
                assert db.server is not None
                with db.server.connect() as conn:
                    version = conn.execute("SHOW server_version").fetchone()[0]
                where = (
                    f"PostgreSQL {version} (psycopg), started by this script on 127.0.0.1:"
                    f"{db.server.port}, pid {db.server.proc.pid if db.server.proc else '-'}"
                    + (f", pinned to CPU {self.server_cpus}" if self.server_cpus else "")
                )
            lines.append(f"  {db.label}: {where}")
            lines.append(f"    durability asked for: {db.settings}")
        return lines


def _bind(build: Callable[..., Impl], db: Database, counting: bool, **kwargs: Any) -> Any:
    return lambda: build(db, counting, **kwargs)


def _fail(reason: str) -> Callable[[], Impl]:
    def build() -> Impl:
        raise RuntimeError(reason)

    return build


def _sa_counter(engine: Any) -> tuple[Callable[[], int], Callable[[], None]]:
    """Count the statements ``engine`` sends; returns (count, stop counting)."""
    import sqlalchemy as sa

    count = [0]

    def counted(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not _TRANSACTION_CONTROL.match(statement):
            count[0] += 1

    sa.event.listen(engine, "before_cursor_execute", counted)
    return (lambda: count[0]), (lambda: sa.event.remove(engine, "before_cursor_execute", counted))


# ---------------------------------------------------------------------- the rows


def build_floor(db: Database, counting: bool) -> Impl:
    """The database's own cost: one empty write transaction per writing request."""
    link = db.link(counting)
    conn = db.raw_connect(link)
    count = [0]
    update = _FLOOR_UPDATE

    if counting:

        def commit() -> None:
            conn.execute(update)
            conn.commit()
            count[0] += 1

    else:

        def commit() -> None:
            conn.execute(update)
            conn.commit()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] in _WRITING_PATHS:
            commit()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    driver = "sqlite3" if db.is_sqlite else "psycopg"
    note = (
        f"no session: a plain WSGI callable whose writing pages run `{update}` and commit on "
        f"one {driver} connection (the driver sends BEGIN itself); 1 statement by construction"
    )
    return Impl(
        f"{db.label}: bare commit",
        note,
        app,
        keeps_data="",
        closers=[conn.close],
        workloads=WRITING,
        database=db.label,
        db_floor=True,
        statements=(lambda: count[0]) if counting else None,
        db_proxy=link.proxy,
        durability=db.durability_of_dbapi(conn),
    )


def build_ours_db(
    db: Database,
    counting: bool,
    *,
    make_proxy: ProxyFactory,
    name: str | None = None,
    package: str = "webapp2_sessions",
) -> Impl:
    """webapp2_sessions (or the copy of an earlier revision imported as
    ``package``) with ``database`` set to an Engine on ``db``."""
    link = db.link(counting)
    engine = db.engine(link)
    impl = peers.build_ours(
        make_proxy, name=name or f"ours + {db.label}", package=package, database=engine
    )
    impl.database = db.label
    impl.db_proxy = link.proxy
    impl.durability = db.durability_of_engine(engine)
    if counting:
        from sqlcount import tally_of

        tally = tally_of(engine)
        impl.statements = lambda: tally.count
    impl.closers.append(engine.dispose)
    how = "sqlite_engine(path, wal=True)" if db.wal else "sqlalchemy.create_engine(url)"
    impl.note += f"; the Engine: {how}"
    return impl


def build_django_cached_db(db: Database, counting: bool, *, make_proxy: ProxyFactory) -> Impl:
    """Django's ``cached_db`` store: memcached (PyMemcacheCache) in front of ``db``."""
    import django
    import webapp2
    from django.conf import settings
    from django.contrib.sessions.backends.cached_db import SessionStore as CachedDBStore
    from django.contrib.sessions.backends.db import SessionStore as DBStore
    from django.core.cache import caches
    from django.db import connections

    proxy = make_proxy()
    cache_alias = f"bench{len(settings.CACHES)}"
    settings.CACHES[cache_alias] = {  # the same dict django.core.cache.caches reads
        "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
        "LOCATION": proxy.address,
    }
    alias = f"{db.key}_count" if counting else db.key

    class SessionStore(CachedDBStore):  # type: ignore[misc]
        """cached_db's store, reading this row's cache alias (as it reads SESSION_CACHE_ALIAS)."""

        def __init__(self, session_key: str | None = None) -> None:
            self._cache = caches[cache_alias]
            DBStore.__init__(self, session_key)

    inner = webapp2.WSGIApplication(peers.django_routes(SessionStore, f"DjangoDB{alias}"))

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        token = _DJANGO_ALIAS.set(alias)
        try:
            return inner(environ, start_response)
        finally:
            _DJANGO_ALIAS.reset(token)

    connection = connections[alias]
    closers: list[Callable[[], None]] = []
    statements = None
    if counting:
        count = [0]

        def counted(execute: Any, sql: Any, params: Any, many: Any, context: Any) -> Any:
            if not _TRANSACTION_CONTROL.match(sql):
                count[0] += 1
            return execute(sql, params, many, context)

        connection.execute_wrappers.append(counted)
        statements = lambda: count[0]  # noqa: E731
        closers.append(lambda: connection.execute_wrappers.remove(counted))
    closers.append(connection.close)

    def durability() -> str:
        with connection.cursor() as cursor:
            values = []
            for _name, sql in db.queries():
                cursor.execute(sql)
                values.append(cursor.fetchone()[0])
        return db.describe(values)

    note = (
        f"django {django.get_version()} SessionStore (backends.cached_db): PyMemcacheCache "
        f"at the same memcached, database alias {db.key!r} (persistent connection), table "
        "made by `migrate sessions`; Django's default options otherwise"
    )
    return Impl(
        f"django cached_db + {db.label}",
        note,
        app,
        proxy,
        closers=closers,
        database=db.label,
        statements=statements,
        db_proxy=db.django_proxy if counting else None,
        durability=durability,
    )


def build_beaker_db(db: Database, counting: bool, *, lock_dir: str) -> Impl:
    """Beaker's SessionMiddleware on its ``ext:database`` backend (no memcached)."""
    import beaker
    import sqlalchemy as sa
    from beaker.ext.database import DatabaseNamespaceManager

    link = db.link(counting)
    # The engine Beaker makes for this URL (and shares between instances with the
    # same URL), made here first so that it can be counted and checked.
    engine = DatabaseNamespaceManager.binds.get(
        link.url, lambda: sa.engine_from_config({"sa.url": link.url}, "sa.")
    )
    config = {
        "session.type": "ext:database",
        "session.url": link.url,
        "session.key": COOKIE_NAME,
        "session.secret": SECRET,
        "session.lock_dir": lock_dir,
    }
    app = peers.beaker_app(config, "BeakerDB")
    impl = Impl(
        f"beaker ext:database + {db.label}",
        f"beaker {beaker.__version__} SessionMiddleware, type ext:database (its table "
        "beaker_cache: one pickled row per session, no memcached), signed cookie, defaults "
        "otherwise (an accessed session is saved again for its access time)",
        app,
        database=db.label,
        db_proxy=link.proxy,
        durability=db.durability_of_engine(engine),
    )
    if counting:
        impl.statements, stop = _sa_counter(engine)
        impl.closers.append(stop)
        if link.proxy is not None:  # an engine of its own, through the proxy
            impl.closers.append(engine.dispose)
    return impl
