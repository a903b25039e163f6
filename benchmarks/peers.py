"""The session implementations bench.py compares, each a webapp2 app with the same four pages.

Every app answers the same paths, so the harness drives them all alike:

``/untouched``  the handler never touches the session;
``/new``        writes ``a=1``, ``b="hello"``, ``c=[1, 2, 3]``;
``/read``       reads a, b and c and answers them as JSON;
``/rw``         reads a, b and c, then writes ``a + 1`` to a.

The pages are written once, against two methods (``read_vars`` and
``write_var``) that each implementation's base handler provides, so the only
thing that differs between rows is the session code.

Each builder that uses memcached takes a factory for the address it connects
to, and each build gets one of its own: a ``Direct`` (memcached itself, no hop
and no counting) for the timed requests, or a RoundTripProxy for the separate,
untimed pass that counts round trips on the wire, so counts are never mixed
between rows.
"""

from __future__ import annotations

import importlib
import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import webapp2

#: The variables every workload reads, in this order.
NAMES = ("a", "b", "c")
#: What the new-visitor page stores.
INITIAL: dict[str, Any] = {"a": 1, "b": "hello", "c": [1, 2, 3]}
COOKIE_NAME = "sid"
SECRET = "bench-secret-key-0123456789abcdef-not-for-production"
TTL = 86400
PATHS = {"untouched": "/untouched", "new": "/new", "read": "/read", "rw": "/rw"}

_HEX32 = re.compile(r"[0-9a-f]{32}")


class Proxy(Protocol):
    """Where an implementation connects: a counting proxy to memcached, or memcached itself."""

    @property
    def address(self) -> str: ...

    @property
    def round_trips(self) -> int: ...

    def close(self) -> None: ...


class Direct:
    """memcached itself, behind the Proxy protocol: no hop in the path, nothing counted."""

    round_trips = 0

    def __init__(self, address: str) -> None:
        self.address = address

    def close(self) -> None:
        pass


#: Makes a new connection target (a proxy, or ``Direct``) for one implementation.
ProxyFactory = Callable[[], Proxy]


@dataclass
class Impl:
    """One row of the table: an app, its connection target (if it uses memcached), its setup."""

    name: str
    note: str
    app: Any = None
    proxy: Proxy | None = None
    #: Why the row could not be built (the table then says so instead of timing it).
    unavailable: str | None = None
    #: The baseline row: no session at all, the denominator of every ratio.
    baseline: bool = False
    #: Where the data lives: "server" (memcached), "cookie", or "" (no session).
    keeps_data: str = "server"
    #: Waits until memcached has processed everything the app sent (needed for noreply).
    sync: Callable[[], None] | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)
    #: The workloads the row runs (a database's bare commit runs only the writing ones).
    workloads: tuple[str, ...] = tuple(PATHS)
    #: The database the row keeps sessions in (its label), if any (bench.py --database).
    database: str | None = None
    #: A database's own cost, no session: its pages run one empty write transaction.
    db_floor: bool = False
    #: SQL statements run so far (counting instances of database rows only).
    statements: Callable[[], int] | None = None
    #: The database's round trips, counted on the wire (counting instances, PostgreSQL).
    db_proxy: Proxy | None = None
    #: The durability settings the row's own database connection reports.
    durability: Callable[[], str] | None = None

    def close(self) -> None:
        for close in self.closers:
            close()
        if self.proxy is not None:
            self.proxy.close()
        if self.db_proxy is not None:
            self.db_proxy.close()


# ---------------------------------------------------------------------- the pages


class Workloads(webapp2.RequestHandler):
    """The session API the pages use; each implementation supplies it."""

    def read_vars(self, names: Sequence[str]) -> list[Any]:
        raise NotImplementedError

    def write_var(self, name: str, value: Any) -> None:
        raise NotImplementedError


class UntouchedPage(Workloads):
    def get(self) -> None:
        self.response.write("ok")


class NewVisitorPage(Workloads):
    def get(self) -> None:
        for name, value in INITIAL.items():
            self.write_var(name, value)
        self.response.write("ok")


class ReadPage(Workloads):
    def get(self) -> None:
        self.response.write(json.dumps(self.read_vars(NAMES)))


class ReadWritePage(Workloads):
    def get(self) -> None:
        a, b, c = self.read_vars(NAMES)
        self.write_var("a", a + 1)
        self.response.write(json.dumps([a + 1, b, c]))


_PAGES: dict[str, type[Workloads]] = {
    "untouched": UntouchedPage,
    "new": NewVisitorPage,
    "read": ReadPage,
    "rw": ReadWritePage,
}


def routes(base: type, prefix: str, attrs: dict[str, Any] | None = None) -> list[Any]:
    """One handler class per page and implementation (ours learns per class)."""
    out = []
    for workload, page in _PAGES.items():
        cls = type(f"{prefix}{page.__name__}", (page, base), dict(attrs or {}))
        out.append((PATHS[workload], cls))
    return out


# ---------------------------------------------------------------------- bare webapp2


class BarePage(webapp2.RequestHandler):
    """The baseline: the same routing and response, no session work at all."""

    def get(self) -> None:
        self.response.write("ok")


def build_bare() -> Impl:
    app = webapp2.WSGIApplication([(path, BarePage) for path in PATHS.values()])
    note = "no session work; same handler on every path"
    return Impl("bare webapp2", note, app, baseline=True, keeps_data="")


# ---------------------------------------------------------------------- hand-written designs


def _new_sid() -> str:
    return uuid.uuid4().hex


def build_naive(make_proxy: ProxyFactory) -> Impl:
    """One get or set per variable, as soon as the handler asks: the obvious design."""
    from pymemcache.client.base import Client

    proxy = make_proxy()
    host, port = proxy.address.rsplit(":", 1)
    # pymemcache's defaults (default_noreply=True: sets are fire-and-forget),
    # except Nagle off so noreply sets do not wait on delayed ACKs.
    client = Client((host, int(port)), no_delay=True)

    class NaiveAPI(Workloads):
        _sid: str | None = None

        def sid(self) -> str | None:
            if self._sid is None:
                self._sid = self.request.cookies.get(COOKIE_NAME)
            return self._sid

        def read_vars(self, names: Sequence[str]) -> list[Any]:
            sid = self.sid()
            out: list[Any] = []
            for name in names:
                raw = client.get(f"naive:{sid}:{name}") if sid else None
                out.append(None if raw is None else json.loads(raw))
            return out

        def write_var(self, name: str, value: Any) -> None:
            sid = self.sid()
            if sid is None:
                sid = self._sid = _new_sid()
                self.response.set_cookie(COOKIE_NAME, sid, httponly=True, samesite="Lax")
            client.set(f"naive:{sid}:{name}", json.dumps(value), expire=TTL)

    app = webapp2.WSGIApplication(routes(NaiveAPI, "Naive"))
    note = "pymemcache Client(no_delay=True), one get per read, one noreply set per write"
    # Writes are not waited for; a command that is answered (on the same connection)
    # proves they have all been processed, so server stats can be read.
    return Impl(
        "naive (noreply sets)", note, app, proxy, closers=[client.close], sync=client.version
    )


def build_floor(make_proxy: ProxyFactory) -> Impl:
    """The least a per-variable design can do: one batched read, one confirmed batched write."""
    from pymemcache.client.base import Client

    proxy = make_proxy()
    host, port = proxy.address.rsplit(":", 1)
    client = Client((host, int(port)), no_delay=True, default_noreply=False)

    class FloorAPI(Workloads):
        _sid: str | None = None
        _dirty: dict[str, str] | None = None

        def dispatch(self) -> Any:
            result = super().dispatch()
            if self._dirty:
                sid = self.sid()
                if sid is None:
                    sid = self._sid = _new_sid()
                    self.response.set_cookie(COOKIE_NAME, sid, httponly=True, samesite="Lax")
                values = {f"floor:{sid}:{k}": v for k, v in self._dirty.items()}
                client.set_many(values, expire=TTL, noreply=False)
            return result

        def sid(self) -> str | None:
            """The cookie's id, parsed on first use only (untouched requests skip it)."""
            if self._sid is None:
                raw = self.request.cookies.get(COOKIE_NAME)
                self._sid = raw if raw and _HEX32.fullmatch(raw) else None
            return self._sid

        def read_vars(self, names: Sequence[str]) -> list[Any]:
            sid = self.sid()
            if sid is None:
                return [None] * len(names)
            keys = [f"floor:{sid}:{n}" for n in names]
            got = client.get_many(keys)
            return [json.loads(got[k]) if k in got else None for k in keys]

        def write_var(self, name: str, value: Any) -> None:
            if self._dirty is None:
                self._dirty = {}
            self._dirty[name] = json.dumps(value)

    app = webapp2.WSGIApplication(routes(FloorAPI, "Floor"))
    note = (
        "hand-written: one get_many for the reads, one set_many(noreply=False) at the end, "
        "unsigned UUID cookie"
    )
    return Impl("floor (hand-written)", note, app, proxy, closers=[client.close])


# ---------------------------------------------------------------------- peers


def build_extras() -> Impl:
    """webapp2's own sessions, securecookie backend: everything lives in the signed cookie."""
    from webapp2_extras import sessions

    class ExtrasAPI(Workloads):
        _store: Any = None
        _session: Any = None

        def dispatch(self) -> Any:
            self._store = sessions.get_store(request=self.request)
            try:
                return super().dispatch()
            finally:
                self._store.save_sessions(self.response)

        def session(self) -> Any:
            if self._session is None:
                self._session = self._store.get_session()
            return self._session

        def read_vars(self, names: Sequence[str]) -> list[Any]:
            session = self.session()
            return [session.get(n) for n in names]

        def write_var(self, name: str, value: Any) -> None:
            self.session()[name] = value

    config = {"webapp2_extras.sessions": {"secret_key": SECRET, "cookie_name": COOKIE_NAME}}
    app = webapp2.WSGIApplication(routes(ExtrasAPI, "Extras"), config=config)
    note = "webapp2_extras.sessions, securecookie backend (data in the signed cookie, no server)"
    return Impl("webapp2_extras securecookie", note, app, keeps_data="cookie")


def build_beaker(make_proxy: ProxyFactory) -> Impl:
    """Beaker's SessionMiddleware on memcached (python-memcached client), wrapping webapp2."""
    proxy = make_proxy()
    config = {
        "session.type": "ext:memcached",
        "session.url": proxy.address,
        "session.key": COOKIE_NAME,
        "session.secret": SECRET,
    }
    app = beaker_app(config, "Beaker")
    note = (
        "beaker SessionMiddleware, type ext:memcached (python-memcached), signed cookie, "
        "defaults otherwise"
    )
    return Impl("beaker ext:memcached", note, app, proxy)


def beaker_app(config: dict[str, Any], prefix: str) -> Any:
    """The pages behind Beaker's SessionMiddleware with ``config``; saved when written."""
    from beaker.middleware import SessionMiddleware

    class BeakerAPI(Workloads):
        _dirty = False

        def dispatch(self) -> Any:
            result = super().dispatch()
            if self._dirty:
                self.request.environ["beaker.session"].save()
            return result

        def read_vars(self, names: Sequence[str]) -> list[Any]:
            session = self.request.environ["beaker.session"]
            return [session.get(n) for n in names]

        def write_var(self, name: str, value: Any) -> None:
            self.request.environ["beaker.session"][name] = value
            self._dirty = True

    inner = webapp2.WSGIApplication(routes(BeakerAPI, prefix))
    return SessionMiddleware(inner, config)


def build_django(make_proxy: ProxyFactory) -> Impl:
    """Django's cache session backend on PyMemcacheCache, configured in this process.

    Django's settings are configured once per process. The first build uses
    them as they are (cache alias "default", Django's own SessionStore); a later
    build adds a cache alias of its own and a SessionStore that reads it,
    exactly as Django's reads ``SESSION_CACHE_ALIAS``.
    """
    proxy = make_proxy()
    cache = {
        "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
        "LOCATION": proxy.address,
    }
    try:
        import django
        from django.conf import settings

        if not settings.configured:
            settings.configure(
                SECRET_KEY=SECRET,
                INSTALLED_APPS=[],
                USE_TZ=True,
                SESSION_ENGINE="django.contrib.sessions.backends.cache",
                SESSION_COOKIE_NAME=COOKIE_NAME,
                CACHES={"default": cache},
            )
            django.setup()
            from django.contrib.sessions.backends.cache import SessionStore
        else:
            from django.contrib.sessions.backends.base import SessionBase
            from django.contrib.sessions.backends.cache import SessionStore as DjangoStore
            from django.core.cache import caches

            alias = f"bench{len(settings.CACHES)}"
            settings.CACHES[alias] = cache  # the same dict django.core.cache.caches reads

            class SessionStore(DjangoStore):  # type: ignore[misc,no-redef]
                def __init__(self, session_key: str | None = None) -> None:
                    self._cache = caches[alias]
                    SessionBase.__init__(self, session_key)

    except Exception as exc:
        proxy.close()
        return Impl("django cache sessions", "", unavailable=f"{type(exc).__name__}: {exc}")

    app = webapp2.WSGIApplication(django_routes(SessionStore, "Django"))
    note = (
        f"django {django.get_version()} SessionStore (backends.cache) on PyMemcacheCache, "
        "Django's default options"
    )
    return Impl("django cache sessions", note, app, proxy)


def django_routes(store: Callable[[str | None], Any], prefix: str) -> list[Any]:
    """The pages, with a Django ``SessionStore`` class as SessionMiddleware would use it."""

    class DjangoAPI(Workloads):
        """What django.contrib.sessions' SessionMiddleware does, around a webapp2 handler."""

        _session: Any = None

        def dispatch(self) -> Any:
            self._session = store(self.request.cookies.get(COOKIE_NAME))
            result = super().dispatch()
            session = self._session
            if session.modified and not session.is_empty():
                session.save()
                self.response.set_cookie(
                    COOKIE_NAME, session.session_key, httponly=True, samesite="Lax"
                )
            return result

        def read_vars(self, names: Sequence[str]) -> list[Any]:
            return [self._session.get(n) for n in names]

        def write_var(self, name: str, value: Any) -> None:
            self._session[name] = value

    return routes(DjangoAPI, prefix)


# ---------------------------------------------------------------------- ours


def build_ours(
    make_proxy: ProxyFactory,
    *,
    signed: bool = True,
    prefetch: bool = False,
    name: str = "ours",
    package: str = "webapp2_sessions",
    source: str = "webapp2_sessions",
    database: Any = None,
) -> Impl:
    """webapp2_sessions with its defaults, pointed at the factory's address.

    ``package`` is the top-level name to import it from: another name serves an
    earlier revision materialised beside the working tree (bench.py
    ``--compare-with``), described in the row's note by ``source``. Whatever the
    package is called, its settings are read from ``app.config['webapp2_sessions']``
    and the cookie name is always passed (the default changed between revisions).
    ``database`` (a SQLAlchemy Engine) is passed as the ``database`` setting.
    """
    mixin: Any = importlib.import_module(package).SessionHandlerMixin

    proxy = make_proxy()

    class OursAPI(mixin, Workloads):  # type: ignore[misc]
        def read_vars(self, names: Sequence[str]) -> list[Any]:
            return [self.get_session_var(n) for n in names]

        def write_var(self, name: str, value: Any) -> None:
            self.set_session_var(name, value)

    settings: dict[str, Any] = {"memcache_servers": [proxy.address], "cookie_name": COOKIE_NAME}
    if signed:
        settings["secret_key"] = SECRET
    if database is not None:
        settings["database"] = database
    attrs = {"session_prefetch": NAMES} if prefetch else None
    app = webapp2.WSGIApplication(
        routes(OursAPI, "Ours" if package == "webapp2_sessions" else f"Ours_{package}", attrs),
        config={"webapp2_sessions": settings},
    )
    note = f"{source} defaults + memcache_servers, cookie_name"
    if database is not None:
        note += ", database (a SQLAlchemy Engine)"
    note += ", secret_key (signed cookie)" if signed else ", no secret_key (bare id cookie)"
    note += (
        ", session_prefetch=('a', 'b', 'c') declared"
        if prefetch
        else "; no session_prefetch (reads batched by learning)"
    )
    return Impl(name, note, app, proxy)
