"""Memory a worker's bounded caches hold once each is filled to its bound.

Usage::

    .venv/bin/python benchmarks/memory.py [--nodes 3]

A worker keeps some state for its whole life: module-level
``functools.lru_cache`` functions, and per-instance maps (the cookie codec's
verified values, the persistent-cookie renewals, the store's deferred
deletions and its connection pools, what each handler class learns, the
durable tier's renewals when the package has one). Each is bounded; this
script fills each one to its bound and prints what it holds.

What it does, in this one process, on 127.0.0.1 (``--nodes`` memcached
servers from ``tests/memcached.py``, plus one killed on purpose, all stopped
by PID):

1. Finds the caches. Every lru_cache of every module of the package is found
   by looking (so a cache that moves or is added is still found); the other
   maps are found by the class that holds them, wherever it now lives. The
   package source is also scanned for lines that look like bounds, and any
   that no row covers is listed at the end: check those by hand.
2. RSS pass: fills everything with tracing off and reads VmRSS from
   /proc/self/status before and after: what the process's RSS grows by,
   allocator overhead included.
3. tracemalloc pass: empties everything, then fills one thing at a time with
   tracemalloc on. An lru_cache's size is the memory freed by clearing it
   once the other caches are cleared (what it holds on its own: the name
   strings both name caches hold are counted in each); for the other maps,
   the growth while filling them.

Fills go through the library's own code with distinct, realistic inputs:
real requests of a webapp2 app on real memcached where a few requests are
enough (variable names read and written, Cache-Control values, key prefixes:
one handler class each), and direct calls with real values where the bound
needs thousands (cookie values the codec signed, session records read back
from memcached after real requests made them, the deletion batch of a real
logout whose node was down, concurrent batches on the store's pools).
Tracing makes Python about ten times slower here, which is why.

Sizes are what Python allocated (tracemalloc: objects, hash tables, lru
links), not the kernel's socket buffers. The exit status is 1 when a cache
could not be measured or a line that looks like a bound is not covered.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gc
import importlib
import inspect
import logging
import pkgutil
import platform
import re
import subprocess
import sys
import threading
import tracemalloc
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import webapp2
import webob
from pymemcache.client.base import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from memcached import MemcachedServer, memcached_binary

import webapp2_sessions
from webapp2_sessions import MemcacheStore, SessionHandlerMixin

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = webapp2_sessions.__name__
COOKIE = "mem_session"
SECRET = "memory-benchmark-secret-0123456789abcdef"
NAME = "note-{:05d}"  # variable names a visitor could choose (the example's /session)
MIB = 1024 * 1024


# --------------------------------------------------------------------- finding things


def loaded_modules() -> list[ModuleType]:
    """The package's modules imported so far (what a worker running the app has)."""
    return [m for n, m in list(sys.modules.items()) if n.split(".")[0] == PACKAGE and m]


def package_modules() -> list[ModuleType]:
    """Every module of the package, imported if it can be (optional extras may be missing)."""
    for info in pkgutil.walk_packages(webapp2_sessions.__path__, PACKAGE + "."):
        if info.name.endswith(".__main__"):
            continue  # the command line: importing it runs it
        with contextlib.suppress(ImportError):
            importlib.import_module(info.name)
    return loaded_modules()


def short(module: str) -> str:
    return module.removeprefix(PACKAGE + ".")


@dataclass
class Lru:
    """A module-level ``functools.lru_cache``."""

    where: str  # module.name, without the package
    func: Any

    @property
    def name(self) -> str:
        return self.where.rsplit(".", 1)[1]

    @property
    def bound(self) -> int:
        return int(self.func.cache_parameters()["maxsize"] or 0)

    @property
    def size(self) -> int:
        return int(self.func.cache_info().currsize)


def find_lrus(modules: Sequence[ModuleType]) -> list[Lru]:
    out, seen = [], set()
    for module in modules:
        for name, obj in vars(module).items():
            if (
                hasattr(obj, "cache_info")
                and hasattr(obj, "cache_clear")
                and getattr(obj, "__module__", None) == module.__name__
                and id(obj) not in seen
            ):
                seen.add(id(obj))
                out.append(Lru(f"{short(module.__name__)}.{name}", obj))
    return out


def find_class(modules: Sequence[ModuleType], test: Callable[[type], bool]) -> type | None:
    """The first class defined in the package for which ``test`` holds."""
    for module in modules:
        for obj in vars(module).values():
            if isinstance(obj, type) and obj.__module__ == module.__name__ and test(obj):
                return obj
    return None


def has_methods(*names: str) -> Callable[[type], bool]:
    return lambda cls: all(callable(getattr(cls, n, None)) for n in names)


def int_constant(module_name: str, pattern: str) -> tuple[str, int] | None:
    """A module-level int whose name matches ``pattern`` (e.g. a bound)."""
    module = sys.modules[module_name]
    for name, value in vars(module).items():
        if re.search(pattern, name) and isinstance(value, int) and not isinstance(value, bool):
            return name, value
    return None


def attributes(obj: Any) -> dict[str, Any]:
    """An object's attributes, from ``__dict__`` and ``__slots__``."""
    out = dict(getattr(obj, "__dict__", {}))
    for cls in type(obj).__mro__:
        for slot in getattr(cls, "__slots__", ()):
            with contextlib.suppress(AttributeError):
                out[slot] = getattr(obj, slot)
    return out


def largest_container(obj: Any) -> tuple[str, Any]:
    """The attribute of ``obj`` that is the longest dict, list, set or deque."""
    best: tuple[str, Any] = ("", ())
    for name, value in attributes(obj).items():
        if (
            hasattr(value, "__len__")
            and not isinstance(value, (str, bytes, tuple, frozenset))
            and len(value) >= len(best[1])
        ):
            best = (name, value)
    return best


def walk(roots: Sequence[Any], depth: int = 3) -> Iterator[Any]:
    """Objects of the package reachable from ``roots`` through attributes and dicts."""
    seen: set[int] = set()
    level = list(roots)
    for _ in range(depth + 1):
        following = []
        for obj in level:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, dict):
                following += list(obj.values())
            elif type(obj).__module__.startswith(PACKAGE):
                yield obj
                following += list(attributes(obj).values())
        level = following


# --------------------------------------------------------------------- measuring


def traced() -> int:
    """Bytes Python holds now, as traced (after a full collection)."""
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def rss_bytes() -> int:
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class Row:
    label: str
    where: str
    scope: str  # what one bound is per: process, runtime, store, node, handler class
    bound: int | None
    entries: int = 0
    held: int | None = None  # bytes
    note: str = ""
    tokens: tuple[str, ...] = ()  # names that mark the source lines this row covers
    optional: bool = False  # only with an optional feature: left out of the total


LABELS = {  # lru caches by function name; any other is shown by its name
    "parse_value": "session record parses",
    "_suffix": "variable name -> key suffix",
    "_name_line": "variable name -> index line",
    "_private": "Cache-Control rewrites",
    "key_scheme": "key schemes by key_prefix",
}


# --------------------------------------------------------------------- the app


class Base(SessionHandlerMixin, webapp2.RequestHandler):  # type: ignore[misc]
    pass


class Counter(Base):
    """What examples/app.py's ``/`` does: a CSRF token and ``incr_session_var``."""

    def get(self) -> None:
        self.csrf_token()
        self.response.write(f"Visit number {self.incr_session_var('visits')}")


def _names(request: Any) -> list[str]:
    return [NAME.format(i) for i in range(int(request.GET["n"]))]


class ReadNames(Base):
    """Reads ``n`` distinct variables, one by one."""

    def get(self) -> None:
        for name in _names(self.request):
            self.get_session_var(name)


class WriteNames(Base):
    """Writes ``n`` distinct variables."""

    def get(self) -> None:
        for i, name in enumerate(_names(self.request)):
            self.set_session_var(name, i)


class CacheControl(Base):
    """A page with its own Cache-Control, which the library makes private."""

    def get(self) -> None:
        self.get_session_var("visits")
        self.response.headers["Cache-Control"] = self.request.GET["v"]


class Logout(Base):
    def get(self) -> None:
        self.destroy_session()


def make_app(servers: Sequence[str], **settings: Any) -> webapp2.WSGIApplication:
    config = {"memcache_servers": list(servers), "secret_key": SECRET, "cookie_name": COOKIE}
    config.update(settings)
    routes = [
        ("/", Counter),
        ("/read", ReadNames),
        ("/write", WriteNames),
        ("/cc", CacheControl),
        ("/logout", Logout),
    ]
    return webapp2.WSGIApplication(routes, config={"webapp2_sessions": config})


def get(app: Any, path: str, cookie: str | None = None) -> tuple[int, str | None]:
    """``GET path``; the status and the session cookie the response set, if any."""
    req = webob.Request.blank(path)
    if cookie is not None:
        req.headers["Cookie"] = f"{COOKIE}={cookie}"
    resp = req.get_response(app)
    value = None
    for header in resp.headers.getall("Set-Cookie"):
        name, _, rest = header.partition("=")
        if name.strip() == COOKIE:
            value = rest.split(";", 1)[0]
    return resp.status_int, value


def new_session(app: Any) -> str:
    status, cookie = get(app, "/")
    if status != 200 or not cookie:
        raise RuntimeError(f"GET / gave {status} and cookie {cookie!r}")
    return cookie


def session_id(cookie: str) -> str:
    return cookie.split(".", 1)[0]


def stores_of(app: Any) -> list[Any]:
    return [o for o in walk([app.registry]) if has_methods("execute", "defer", "node_for")(o)]


# --------------------------------------------------------------------- the fills


@dataclass
class Context:
    modules: list[ModuleType]
    lrus: list[Lru]
    app: Any
    servers: list[str]
    record_cookies: list[str]  # sessions made by real requests, for their records
    logout_ops: tuple[str, list[Any]] | None  # (session id, ops) a real logout deferred
    read_batch: list[Any] | None  # the ops of a real request's first batch
    prefix_paths: list[str]  # one per handler class with its own key_prefix
    read_paths: list[str]  # unused ReadNames classes, one per pass
    keep: list[Any] = field(default_factory=list)  # what a fill made, kept alive


def lru_named(ctx: Context, name: str) -> Lru | None:
    return next((c for c in ctx.lrus if c.name == name), None)


def fill_until_full(ctx: Context, step: Callable[[int], None], limit: int = 20_000) -> int:
    """Call ``step(i)`` until a batch of calls grows no lru cache; returns the calls."""
    sizes = [c.size for c in ctx.lrus]
    i = 0
    while i < limit:
        for _ in range(32):
            step(i)
            i += 1
        now = [c.size for c in ctx.lrus]
        if now == sizes:
            break
        sizes = now
    return i


def read_records(servers: Sequence[str], cookies: Sequence[str]) -> dict[str, bytes]:
    """The stored record of each session, by cookie, read with a plain client."""
    by_key = {record_key(session_id(c)): c for c in cookies}
    out: dict[str, bytes] = {}
    for server in servers:
        host, port = server.rsplit(":", 1)
        client = Client((host, int(port)), connect_timeout=2, timeout=10)
        try:
            keys = list(by_key)
            for start in range(0, len(keys), 500):
                for key, value in client.get_many(keys[start : start + 500]).items():
                    out[by_key[key]] = value
        finally:
            client.close()
    return out


def record_key(sid: str) -> str:
    """The record's key, as the library builds it (no key_prefix)."""
    scheme = key_scheme_class()
    return str(scheme("").record(sid)) if scheme is not None else sid


@functools.cache
def key_scheme_class() -> type | None:
    return find_class(loaded_modules(), lambda c: c.__name__ == "KeyScheme")


def distinct_records(app: Any, servers: Sequence[str], count: int) -> list[str]:
    """Cookies of ``count`` sessions made by real requests, whose records all differ.

    Records hold their creation time to the millisecond, so sessions made in
    the same millisecond have the same bytes (and share one cache entry).
    """
    seen: dict[bytes, str] = {}
    for _ in range(20):
        made = [new_session(app) for _ in range(count - len(seen))]
        for cookie, value in read_records(servers, made).items():
            seen.setdefault(value, cookie)
        if len(seen) >= count:
            break
    return list(seen.values())


def fill_records(ctx: Context) -> str:
    """Real records, read back from memcached, through the record parse cache."""
    parse = lru_named(ctx, "parse_value")
    if parse is None:
        raise LookupError("no lru_cache named parse_value (the record parse cache) found")
    for value in read_records(ctx.servers, ctx.record_cookies).values():
        parse.func(value)
    return f"{len(ctx.record_cookies)} records of sessions made by GET / (CSRF token, counter)"


def fill_write_names(ctx: Context) -> str:
    cookie = new_session(ctx.app)
    bound = max(c.bound for c in ctx.lrus)
    status, _ = get(ctx.app, f"/write?n={bound}", cookie)
    assert status == 200, status
    return f"one request writing {bound} names like {NAME.format(7)!r}"


def fill_cache_control(ctx: Context) -> str:
    cookie = new_session(ctx.app)

    def step(i: int) -> None:
        get(ctx.app, f"/cc?v=max-age%3D{i}", cookie)

    return f"{fill_until_full(ctx, step)} requests, Cache-Control 'max-age=<n>'"


def fill_prefixes(ctx: Context) -> str:
    for path in ctx.prefix_paths:
        get(ctx.app, path)
    return f"{len(ctx.prefix_paths)} handler classes, key_prefix 'tenant<n>:'"


LRU_FILLS: list[tuple[str, Callable[[Context], str]]] = [
    ("records", fill_records),
    ("write names", fill_write_names),
    ("Cache-Control values", fill_cache_control),
    ("key prefixes", fill_prefixes),
]


def fill_codec(ctx: Context) -> Row:
    """The cookie codec's verified values: one per returning visitor's cookie."""
    cls = find_class(ctx.modules, lambda c: c.__name__ == "CookieCodec")
    if cls is None:
        raise LookupError("no CookieCodec class found")
    codec = cls([SECRET])
    ctx.keep.append(codec)
    decode = codec.decode
    if hasattr(decode, "cache_parameters"):  # an lru_cache per instance
        bound = int(decode.cache_parameters()["maxsize"])
        tokens: tuple[str, ...] = ("decode",)
    else:
        found = int_constant(cls.__module__, r"CACHE|VERIFIED")
        if found is None:
            raise LookupError(f"no bound found for {cls.__name__}'s verified values")
        bound, tokens = found[1], (found[0],)
    for _ in range(bound):
        decode(codec.encode(uuid.uuid4().hex))
    if hasattr(decode, "cache_info"):
        attr, entries = "decode", int(decode.cache_info().currsize)
    else:
        attr, container = largest_container(codec)
        entries = len(container)
    return Row(
        "cookie codec: verified values",
        f"{short(cls.__module__)}.{cls.__name__}.{attr}",
        "runtime",
        bound,
        entries,
        note="signed cookie values of distinct visitors",
        tokens=(*tokens, attr),
    )


def fill_renewals(ctx: Context) -> Row:
    """When each session's persistent cookie was last sent (``max_age`` set)."""
    cls = find_class(ctx.modules, has_methods("note", "due"))
    if cls is None:
        raise LookupError("no class with note() and due() (the cookie renewals) found")
    size_param = next(
        (p for p in inspect.signature(cls).parameters.values() if "size" in p.name), None
    )
    if size_param is None or not isinstance(size_param.default, int):
        raise LookupError(f"{cls.__name__}() has no size parameter with a default")
    renewals = cls()
    ctx.keep.append(renewals)
    for _ in range(size_param.default):
        renewals.note(uuid.uuid4().hex)
    attr, sent = largest_container(renewals)
    return Row(
        "persistent-cookie renewals",
        f"{short(cls.__module__)}.{cls.__name__}.{attr}",
        "runtime",
        size_param.default,
        len(sent),
        note="session ids, one per visitor sent a max_age cookie",
        tokens=(attr,),
    )


def fill_deferred(ctx: Context) -> Row:
    """Deletions kept for a node that is down: one batch per logout during an outage."""
    if ctx.logout_ops is None:
        raise LookupError("the logout on a dead node deferred nothing")
    store = MemcacheStore(ctx.servers)
    found = int_constant(type(store).__module__, r"DEFER")
    if found is None:
        raise LookupError(f"no bound for deferred batches in {type(store).__module__}")
    ctx.keep.append(store)
    base = traced()
    sid0, ops0 = ctx.logout_ops
    for _ in range(found[1]):
        sid = uuid.uuid4().hex
        store.defer(sid, [with_session(op, sid0, sid) for op in ops0])
    held = traced() - base
    kinds = ", ".join(type(op).__name__ for op in ops0)
    return Row(
        "deferred deletions",
        f"{short(type(store).__module__)}.{found[0]}",
        "store",
        found[1],
        found[1],
        held,
        note=f"a real logout's batch while its node was down ({kinds})",
        tokens=(found[0],),
    )


def with_session(op: Any, old: str, new: str) -> Any:
    """``op`` with session id ``old`` replaced by ``new`` in its text fields."""
    changes = {
        f.name: getattr(op, f.name).replace(old, new)
        for f in dataclasses.fields(op)
        if isinstance(getattr(op, f.name), str)
    }
    return dataclasses.replace(op, **changes)


def fill_pools(ctx: Context) -> Row:
    """Every node's pool at ``max_connections``: that many batches in flight at once."""
    ops = ctx.read_batch
    if ops is None:
        raise LookupError("no read batch was captured")
    default = inspect.signature(MemcacheStore).parameters["max_connections"].default
    store = MemcacheStore(ctx.servers)
    ctx.keep.append(store)
    base = traced()
    routes: dict[str, str] = {}
    while len(routes) < len(ctx.servers):
        route = uuid.uuid4().hex
        routes.setdefault(store.node_for(route), route)
    errors: list[BaseException] = []

    def batch(route: str, barrier: threading.Barrier) -> None:
        try:
            # Sent, then held until every batch of this node is in flight.
            store.execute(route, ops, on_sent=lambda: barrier.wait(timeout=60))
        except BaseException as exc:
            errors.append(exc)

    threads = []
    for route in routes.values():
        barrier = threading.Barrier(default)
        threads += [threading.Thread(target=batch, args=(route, barrier)) for _ in range(default)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    del threads
    if errors:
        raise RuntimeError(f"{len(errors)} batches failed, e.g. {errors[0]!r}")
    held = traced() - base
    opened = sum(store.connections(server) for server in ctx.servers)
    pool = next((o for o in walk([store]) if has_methods("take", "give_back")(o)), None)
    tokens = tuple(n for n, v in attributes(pool).items() if hasattr(v, "__len__")) if pool else ()
    return Row(
        "connection pool",
        f"{short(type(pool).__module__)}.{type(pool).__name__}" if pool else "?",
        "node",
        default,
        opened // len(ctx.servers),
        held // len(ctx.servers),
        note=f"{default} concurrent batches per node; kernel socket buffers not included",
        tokens=tokens,
    )


def fill_prefetch(ctx: Context) -> Row:
    """A handler class's setup, once it has learned the names its requests read."""
    cls = find_class(ctx.modules, lambda c: c.__name__ == "Prefetch")
    found = int_constant(cls.__module__, r"LEARN") if cls is not None else None
    if cls is None or found is None:
        raise LookupError("no Prefetch class with a ...LEARN... bound found")
    names = 4 * found[1]
    cookie = new_session(ctx.app)
    assert get(ctx.app, f"/write?n={names}", cookie)[0] == 200
    clear_lrus(ctx)
    base = traced()
    # A handler class never used before, reading what the session holds.
    assert get(ctx.app, f"{ctx.read_paths.pop()}?n={names}", cookie)[0] == 200
    clear_lrus(ctx)
    return Row(
        "handler class: learned names",
        f"{short(cls.__module__)}.{found[0]}",
        "class",
        found[1],
        found[1],
        traced() - base,
        note=f"its setup, after one request read {names} stored variables",
        tokens=(found[0],),
    )


def fill_durable(ctx: Context) -> Row | None:
    """The durable tier's renewals (only with a database): one per session written."""
    cls = find_class(ctx.modules, has_methods("noted_write", "touch_if_due"))
    if cls is None:
        return None  # no durable tier in this version
    found = int_constant(cls.__module__, r"REMEMBER|TOUCH")
    config_cls = find_class(ctx.modules, lambda c: c.__name__ == "SessionConfig")
    if found is None or config_cls is None:
        raise LookupError(f"no bound for {cls.__name__}'s renewals")
    # noted_write only touches this process's map, never the database.
    tier = cls(None, config_cls())
    ctx.keep.append(tier)
    for _ in range(found[1]):
        tier.noted_write(uuid.uuid4().hex)
    attr, touched = largest_container(tier)
    return Row(
        "durable tier: renewals",
        f"{short(cls.__module__)}.{cls.__name__}.{attr}",
        "runtime",
        found[1],
        len(touched),
        note="session ids, one per session written (only with a database)",
        tokens=(attr, found[0]),
        optional=True,
    )


def fill_remembered(ctx: Context) -> Row | None:
    """Remembered sessions' lifetimes this process knows (``set_expiry``)."""
    module = sys.modules.get(f"{PACKAGE}.expiry")
    if module is None or not hasattr(module, "learn"):
        return None  # no remember-me in this version
    found = int_constant(module.__name__, r"KNOWN")
    if found is None:
        raise LookupError("no ...KNOWN... bound in expiry")
    for _ in range(found[1]):
        module.learn(uuid.uuid4().hex, 30 * 24 * 3600)
    known = module._known
    entries = len(known)
    ctx.keep.append(known)
    return Row(
        "remembered lifetimes",
        f"{short(module.__name__)}._known",
        "process",
        found[1],
        entries,
        note="session ids, one per remembered session met (only with set_expiry)",
        tokens=(found[0], "_known"),
        optional=True,
    )


def fill_owner_renewals(ctx: Context) -> Row | None:
    """When this process last renewed each owned session's owner index."""
    module = sys.modules.get(f"{PACKAGE}.owners")
    memo = getattr(module, "_renewals", None)
    if module is None or memo is None:
        return None  # no owners in this version
    cls = type(memo)
    found = int_constant(module.__name__, r"RENEWALS")
    if found is None:
        raise LookupError("no ...RENEWALS... bound in owners")
    renewals = cls(found[1])
    ctx.keep.append(renewals)
    for _ in range(found[1]):
        renewals.take(uuid.uuid4().hex, 0)
    attr, seen = largest_container(renewals)
    return Row(
        "owner index renewals",
        f"{short(module.__name__)}._renewals.{attr}",
        "process",
        found[1],
        len(seen),
        note="session ids, one per owned session loaded (only with set_session_owner)",
        tokens=(attr, found[0]),
        optional=True,
    )


def fill_owed_deletions(ctx: Context) -> Row | None:
    """Deletions a database owes after an outage (only with a database)."""
    module = sys.modules.get(f"{PACKAGE}.sql_owed")  # loaded for the traced pass only
    if module is None:
        return None
    cls = getattr(module, "OwedDeletions", None)
    found = int_constant(module.__name__, r"OWED")
    if cls is None:
        return None
    if found is None:
        raise LookupError("no ...OWED... bound in sql_owed")
    owed_deletions = cls(lambda: "database")  # the list is this process's own
    ctx.keep.append(owed_deletions)
    # Each entry keeps what a logout leaves to run once the rows are gone
    # (transitions.mark_dead bound to the store, the key scheme and the id);
    # the store and the key scheme are shared, so stand-ins do here.
    transitions = sys.modules.get(f"{PACKAGE}.transitions")
    mark_dead = getattr(transitions, "mark_dead", None)
    store, keys = object(), object()
    base = traced()
    for _ in range(found[1]):
        sid = uuid.uuid4().hex
        if mark_dead is None:
            owed_deletions.add(sid)
        else:
            owed_deletions.add(sid, functools.partial(mark_dead, store, keys, sid))
    held = traced() - base
    attr, owed = largest_container(owed_deletions)
    return Row(
        "database: owed deletions",
        f"{short(module.__name__)}.{cls.__name__}.{attr}",
        "runtime",
        found[1],
        len(owed),
        held,
        note="session ids whose rows a database outage kept (only with a database)",
        tokens=(attr, found[0]),
        optional=True,
    )


OTHER_FILLS: list[Callable[[Context], Row | None]] = [
    fill_codec,
    fill_renewals,
    fill_deferred,
    fill_pools,
    fill_prefetch,
    fill_durable,
    fill_remembered,
    fill_owner_renewals,
    fill_owed_deletions,
]


# --------------------------------------------------------------------- the passes


def clear_lrus(ctx: Context, keep: Sequence[Lru] = ()) -> None:
    for cache in ctx.lrus:
        if cache not in keep:
            cache.func.cache_clear()


def rss_pass(ctx: Context) -> tuple[int, int, list[str]]:
    """Everything filled at once, untraced: RSS before and after."""
    clear_lrus(ctx)
    before = rss_bytes()
    problems = []
    for name, fill in LRU_FILLS:
        try:
            fill(ctx)
        except Exception as exc:
            problems.append(f"{name}: {exc!r}")
    for other in OTHER_FILLS:
        try:
            other(ctx)
        except Exception as exc:
            problems.append(f"{other.__name__}: {exc!r}")
    after = rss_bytes()
    ctx.keep.clear()
    clear_lrus(ctx)
    return before, after, problems


def traced_pass(ctx: Context) -> tuple[list[Row], list[str]]:
    """Each cache filled and measured on its own, with tracemalloc on."""
    rows: list[Row] = []
    notes: list[str] = []
    measured: set[str] = set()
    for name, fill in LRU_FILLS:
        clear_lrus(ctx)
        before = traced()
        try:
            how = fill(ctx)
        except Exception as exc:
            notes.append(f"{name}: not measured, {exc!r}")
            continue
        full = [c for c in ctx.lrus if c.where not in measured and c.bound and c.size >= c.bound]
        other = None
        for number, cache in enumerate(full):
            if number:  # each cache alone: fill again for the next one
                clear_lrus(ctx)
                fill(ctx)
            clear_lrus(ctx, keep=[cache])
            entries = cache.size
            held = traced()
            cache.func.cache_clear()
            after = traced()
            held -= after
            if other is None:
                other = after - before
            measured.add(cache.where)
            label = LABELS.get(cache.name, cache.name)
            rows.append(
                Row(label, cache.where, "process", cache.bound, entries, held, how, (cache.name,))
            )
        if other is None:
            clear_lrus(ctx)
            other = traced() - before
            notes.append(f"{name}: filled no cache to its bound")
        if abs(other) >= 64 * 1024:
            notes.append(f"{name}: {other / 1024:+.0f} KiB more held outside the caches")
    for other_fill in OTHER_FILLS:
        clear_lrus(ctx)
        before = traced()
        try:
            row = other_fill(ctx)
        except Exception as exc:
            notes.append(f"{other_fill.__name__}: not measured, {exc!r}")
            continue
        if row is None:
            continue
        if row.held is None:
            clear_lrus(ctx)
            row.held = traced() - before
        rows.append(row)
    ctx.keep.clear()
    for cache in ctx.lrus:
        if cache.where not in measured:
            rows.append(
                Row(
                    LABELS.get(cache.name, cache.name),
                    cache.where,
                    "process",
                    cache.bound,
                    note="NOT MEASURED: no fill reached its bound; add one",
                    tokens=(cache.name,),
                )
            )
    return rows, notes


# --------------------------------------------------------------------- setup


def capture_logout(servers: list[str], dead: MemcachedServer) -> tuple[str, list[Any]] | None:
    """The batch a real logout defers when its session's node has died."""
    app = make_app([dead.address], dead_retry=60)
    cookie = new_session(app)
    dead.stop()  # SIGKILL: the node dies with the session on it
    captured: list[tuple[str, list[Any]]] = []
    for store in stores_of(app):
        original = store.defer

        def defer(
            route: str, ops: Sequence[Any], then: Any = None, original: Any = original
        ) -> None:
            captured.append((route, list(ops)))
            original(route, ops, then)

        store.defer = defer
    get(app, "/logout", cookie)
    return captured[0] if captured else None


def capture_read_batch(app: Any) -> list[Any] | None:
    """The first batch of a returning visitor's request (reads only)."""
    cookie = new_session(app)
    captured: list[list[Any]] = []
    stores = stores_of(app)
    for store in stores:
        original = store.execute

        def execute(route: str, ops: Sequence[Any], original: Any = original, **kw: Any) -> Any:
            captured.append(list(ops))
            return original(route, ops, **kw)

        store.execute = execute
    try:
        get(app, "/", cookie)
    finally:
        for store in stores:
            del store.execute
    return captured[0] if captured else None


def prefix_handlers(app: Any, count: int) -> list[str]:
    """``count`` handler classes, each with its own key_prefix, routed and used once.

    Used once here so that their runtimes (one per distinct session_settings)
    exist before anything is measured: the fill then measures the key schemes.
    """
    paths = []
    for i in range(count):
        cls = type(
            f"Tenant{i}", (Counter,), {"session_settings": {"key_prefix": f"tenant{i:03d}:"}}
        )
        path = f"/tenant/{i}"
        app.router.add(webapp2.Route(path, handler=cls))
        get(app, path)
        paths.append(path)
    return paths


def read_handlers(app: Any, count: int) -> list[str]:
    """``count`` fresh ReadNames subclasses, routed but not used yet."""
    paths = []
    for i in range(count):
        path = f"/read/{i}"
        app.router.add(webapp2.Route(path, handler=type(f"ReadNames{i}", (ReadNames,), {})))
        paths.append(path)
    return paths


# --------------------------------------------------------------------- report


def code_version() -> str:
    """Short commit, and "dirty" if the package or this script differ from it."""
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
            [*git, "status", "--porcelain", "--", PACKAGE, "benchmarks/memory.py"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return f"git {head}" + (" dirty" if dirty else "")
    return "not a git checkout"


BOUND_LINE = re.compile(
    r"lru_cache\(|OrderedDict\(|deque\(|len\(self\._\w+\) *>"
    r"|^\s*_?[A-Z][A-Z_]*(CACHE|SIZE|DEFER|LEARN)[A-Z_]*\s*=",
)


def uncovered_bounds(modules: Sequence[ModuleType], rows: Sequence[Row]) -> list[str]:
    """Source lines that look like bounds and that no row names."""
    tokens = {t for row in rows if row.held is not None for t in row.tokens if t}
    out = []
    for module in modules:
        path = getattr(module, "__file__", None)
        if not path:
            continue
        lines = Path(path).read_text().splitlines()
        for number, line in enumerate(lines, 1):
            if not BOUND_LINE.search(line):
                continue
            context = line
            if "lru_cache(" in line:  # the function it decorates
                context += " " + next((x for x in lines[number:] if "def " in x), "")
            if "MemoryStore" in enclosing_class(lines, number):
                continue  # the embedded store is the data itself, not a cache
            if not any(re.search(rf"\b{re.escape(t)}\b", context) for t in tokens):
                where = f"{short(module.__name__).replace('.', '/')}.py:{number}"
                out.append(f"{where}: {line.strip()}")
    return out


def enclosing_class(lines: Sequence[str], number: int) -> str:
    for line in reversed(lines[: number - 1]):
        if line.startswith("class "):
            return line
    return ""


def table(rows: Sequence[Row], nodes: int) -> list[str]:
    head = f"{'cache':<31} {'where':<33} {'per':<8} {'bound':>6} {'filled':>6}"
    head += f" {'MiB':>6} {'B/entry':>7}"
    out = [head, "-" * len(head)]
    total = 0.0
    for row in rows:
        bound = str(row.bound) if row.bound else "?"
        start = f"{row.label:<31} {row.where:<33} {row.scope:<8} {bound:>6}"
        if row.held is None:
            out.append(f"{start}  {row.note}")
            continue
        per = row.held / row.entries if row.entries else 0
        mark = " *" if row.optional else ""
        out.append(f"{start} {row.entries:>6} {row.held / MIB:>6.2f} {per:>7.0f}{mark}")
        if not row.optional:
            total += row.held * (nodes if row.scope == "node" else 1)
    out.append("-" * len(head))
    what = f"one runtime, store and handler class; {nodes} nodes"
    out.append(f"{'total per worker':<31} {what:<55} {total / MIB:>6.2f}")
    if any(row.optional for row in rows):
        out.append("* only with an optional feature (see inputs); not in the total")
    return out


def report(
    rows: Sequence[Row], nodes: int, code: str, rss: tuple[int, int], notes: Sequence[str]
) -> list[str]:
    memcached = subprocess.run(
        [memcached_binary(), "-V"], capture_output=True, text=True, timeout=10, check=False
    ).stdout.strip()
    before, after = rss
    lines = [
        "webapp2_sessions: per-process caches at their bounds (benchmarks/memory.py)",
        f"code     webapp2_sessions at {code}; Python {platform.python_version()}, "
        f"{memcached} x{nodes}",
        "sizes    tracemalloc: what Python holds for each cache, filled on its own",
        "",
        *table(rows, nodes),
        "",
        f"RSS      this process, untraced: {before / MIB:.1f} MiB before the fills, "
        f"{after / MIB:.1f} MiB with every cache",
        f"         at its bound at once ({(after - before) / MIB:+.1f} MiB); this can stay "
        "below the total, as the",
        "         caches reuse heap that the setup's requests left free",
        "per      process: every request of the worker; runtime: each distinct set of",
        "         session_settings overrides; store: each distinct store setting; node: each",
        "         memcached server (max_connections); class: each handler class",
    ]
    lines += [
        ("inputs   " if i == 0 else "         ") + f"{row.label}: {row.note}"
        for i, row in enumerate(r for r in rows if r.held is not None)
    ]
    lines += [f"note     {line}" for line in notes]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3, help="memcached nodes (3, as make load)")
    opts = parser.parse_args(argv)
    if not 1 <= opts.nodes <= 8:
        parser.error("--nodes must be between 1 and 8")
    # Some fills log on purpose (a dead node, a lost logout): keep the output to the table.
    logging.getLogger(PACKAGE).disabled = True
    code = code_version()
    # Only what the app imports, until the RSS pass is done: optional modules
    # (the SQL tier, say) would weigh on the RSS without being used.
    modules = loaded_modules()
    lrus = find_lrus(modules)
    nodes = [MemcachedServer() for _ in range(opts.nodes)]
    dead = MemcachedServer()
    try:
        for node in [*nodes, dead]:
            node.start()
        servers = [node.address for node in nodes]
        app = make_app(servers)
        record_bound = max((c.bound for c in lrus if c.name == "parse_value"), default=4096)
        scheme_bound = max((c.bound for c in lrus if c.name == "key_scheme"), default=256)
        print(f"making {record_bound} sessions with real requests...", flush=True)
        ctx = Context(
            modules,
            lrus,
            app,
            servers,
            record_cookies=distinct_records(app, servers, record_bound),
            logout_ops=capture_logout(servers, dead),
            read_batch=capture_read_batch(app),
            prefix_paths=prefix_handlers(app, scheme_bound + 8),
            read_paths=read_handlers(app, 2),
        )
        print("RSS pass (untraced)...", flush=True)
        rss_before, rss_after, problems = rss_pass(ctx)
        print("tracemalloc pass...", flush=True)
        ctx.modules = package_modules()  # every module now, for the caches of any
        ctx.lrus = find_lrus(ctx.modules)
        tracemalloc.start(1)
        rows, notes = traced_pass(ctx)
        tracemalloc.stop()
    finally:
        for node in [*nodes, dead]:
            node.stop()

    print()
    print("\n".join(report(rows, opts.nodes, code, (rss_before, rss_after), problems + notes)))
    lrus_found = ", ".join(f"{c.where} ({c.bound})" for c in ctx.lrus)
    print(f"found    lru caches: {lrus_found}")
    left = uncovered_bounds(ctx.modules, rows)
    for line in left:
        print(f"check    not covered by a row: {line}")
    unmeasured = [r for r in rows if r.held is None]
    return 1 if unmeasured or problems or left else 0


if __name__ == "__main__":
    sys.exit(main())
