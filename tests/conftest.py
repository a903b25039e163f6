"""Shared fixtures: real memcached servers and webapp2 apps built on them."""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import webapp2
import webtest
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from memcached import MemcachedServer
from postgres import PostgresServer
from rtproxy import RoundTripProxy

from webapp2_sessions import MemcacheStore, MemoryStore, SessionHandlerMixin

SECRET = "test-secret-key-0123456789abcdef"
#: memcached timeouts for tests that are not about timeouts: a busy 2-core
#: machine must never pass for an unresponsive server (the library's defaults
#: are a quarter and half a second). Tests about stalls set their own.
PATIENT: dict[str, Any] = {"timeout": 5.0, "connect_timeout": 5.0}

# No per-example deadline: on a busy 2-core CI machine one example can take
# a second, and hypothesis would report that as a failure (Flaky or
# DeadlineExceeded). Each @settings in tests/ says deadline=None as well.
# For the same reason, slow example generation is not a failed health check.
settings.register_profile(
    "webapp2_sessions", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("webapp2_sessions")

# Every MemcacheStore is closed when the test that made it ends, whether the
# test made it or an app did (webapp2 apps keep theirs in ``app.registry``): a
# store dropped unclosed leaves its sockets to the garbage collector, each a
# ResourceWarning. Those of the current test are held until its end (its
# locals may let go of them first); older ones still alive (module-scoped
# fixtures, which may open new connections in later tests) are closed again.
_made_by_this_test: list[MemcacheStore] = []
_still_alive: weakref.WeakSet[MemcacheStore] = weakref.WeakSet()


@pytest.fixture(scope="session", autouse=True)
def _track_stores_and_spool_bodies_in_memory() -> Iterator[None]:
    original = MemcacheStore.__init__

    def tracked(self: MemcacheStore, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        _made_by_this_test.append(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MemcacheStore, "__init__", tracked)
        # webapp2 sets this to 0, so webob spools every request body (a POST
        # read for its CSRF token) to a temporary file that nothing closes:
        # one ResourceWarning per form post. WebOb's own default keeps bodies
        # under 10 KiB in memory.
        patch.setattr(webapp2.Request, "request_body_tempfile_limit", 10 * 1024)
        yield
    _close_stores()


def _close_stores() -> None:
    stores = [*_made_by_this_test, *_still_alive]
    _made_by_this_test.clear()
    for store in stores:
        store.close()
        _still_alive.add(store)


@pytest.fixture(autouse=True)
def _close_every_store_at_the_end_of_the_test() -> Iterator[None]:
    yield
    _close_stores()


def _serving() -> Iterator[MemcachedServer]:
    server = MemcachedServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def memcached() -> Iterator[MemcachedServer]:
    """A fresh memcached on a free loopback port; fails (never skips) if it cannot start."""
    yield from _serving()


@pytest.fixture(scope="module")
def shared_server() -> Iterator[MemcachedServer]:
    """One memcached for all the tests of a module, for property tests with many examples."""
    yield from _serving()


@pytest.fixture
def proxy(memcached: MemcachedServer) -> Iterator[RoundTripProxy]:
    """A proxy in front of the fixture's memcached that counts round trips."""
    rt = RoundTripProxy(memcached.port)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def memcached_cluster() -> Iterator[list[MemcachedServer]]:
    servers = [MemcachedServer().start() for _ in range(3)]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


class Handler(SessionHandlerMixin, webapp2.RequestHandler):
    """A handler driven by query parameters, for tests.

    ``?set=name&value=json`` sets, ``?get=name`` reads (JSON in the body),
    ``?delete=name``, ``?incr=name``, ``?regen=1``, ``?destroy=1``.
    """

    def get(self) -> None:
        import json

        q = self.request.GET
        out: dict[str, Any] = {}
        if "regen" in q:
            self.regenerate_session_id()
        if "destroy" in q:
            self.destroy_session()
        for name in q.getall("get"):
            out[name] = self.get_session_var(name)
        for name, value in zip(q.getall("set"), q.getall("value"), strict=False):
            self.set_session_var(name, json.loads(value))
        for name in q.getall("delete"):
            self.delete_session_var(name)
        for name in q.getall("incr"):
            out[name] = self.incr_session_var(name)
        if "flash" in q:
            self.add_flash(q["flash"], "info")
        if "flashes" in q:
            out["flashes"] = self.get_flashes()
        if "sid" in q:
            out["sid"] = self.session_id
        self.response.content_type = "application/json"
        self.response.write(json.dumps(out))


class Untouched(SessionHandlerMixin, webapp2.RequestHandler):
    def get(self) -> None:
        self.response.write("ok")


def capture_errors(app: webapp2.WSGIApplication, status: int, body: str = "") -> list[Any]:
    """Answer exceptions escaping handlers with ``status``, as an app's own
    500 handler would, and return the list they are collected in."""
    seen: list[Any] = []

    def handler(request: Any, response: Any, exception: BaseException) -> None:
        seen.append(exception)
        response.set_status(status)
        if body:
            response.write(body)

    app.error_handlers[500] = handler
    return seen


def make_app(
    settings: dict[str, Any], routes: list[Any] | None = None, **kw: Any
) -> webtest.TestApp:
    config = {"webapp2_sessions": {**PATIENT, **settings}}
    app = webapp2.WSGIApplication(
        routes or [("/", Handler), ("/untouched", Untouched)], config=config, **kw
    )
    return webtest.TestApp(app)


def age_id(memcached: MemcachedServer, sid: str, seconds: float) -> None:
    """Make the session ``sid`` look created (and its id issued) ``seconds``
    earlier, as if time had passed: its record is rewritten in place."""
    import json

    value, ttl, flags = memcached.mg(sid)
    head, _, rest = value.partition(b"\n")
    header = json.loads(head)
    header["c"] -= seconds
    if "i" in header:
        header["i"] -= seconds
    memcached.set(sid, json.dumps(header).encode() + b"\n" + rest, flags, ttl)


@pytest.fixture
def app_on(memcached: MemcachedServer) -> Any:
    """``app_on(**settings)``: a TestApp on the fixture's memcached."""

    def build(routes: list[Any] | None = None, **settings: Any) -> webtest.TestApp:
        settings.setdefault("memcache_servers", [memcached.address])
        settings.setdefault("cookie_name", "sid")
        return make_app(settings, routes)

    return build


# The SQL tier's databases: a throwaway PostgreSQL cluster and SQLite files.


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the whole run (initdb takes a second or more).

    Fails (never skips) when PostgreSQL is not installed or will not start.
    Tests get their own database through ``pg_url``.
    """
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> Iterator[str]:
    """A SQLAlchemy URL to a fresh, empty database of this test's own, dropped after it.

    A server the test left paused is resumed, and one it killed is restarted,
    so that the next test finds it serving.
    """
    postgres.ensure_running()
    name = postgres.create_database()
    try:
        yield postgres.url_for(name)
    finally:
        postgres.ensure_running()
        postgres.drop_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLAlchemy URL to a SQLite file (not yet created) in the test's own directory."""
    return f"sqlite:///{tmp_path / 'sessions.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[Any]:
    """A SQLite file, or a fresh database on the run's throwaway PostgreSQL; its
    statements are counted (``sqlcount.tally_of``)."""
    from sqlcount import counting_engine

    url = sqlite_url if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = counting_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture(params=["memcached", "embedded"])
def store(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Each store a session can live in: a real memcached, and the embedded one."""
    if request.param == "embedded":
        yield MemoryStore()
        return
    server = MemcachedServer().start()
    try:
        yield MemcacheStore([server.address], **PATIENT)
    finally:
        server.stop()
