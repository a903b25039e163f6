"""What the settings become at run time: the store, the cookie codec and the
process-wide state, built once per application and shared by its requests,
and what each handler class adds to them (its overrides, its prefetch)."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import SessionConfig
from .cookies import CookieCodec
from .prefetch import Prefetch
from .stores import MemoryStore, Store

if TYPE_CHECKING:
    from .durable import DurableTier

log = logging.getLogger("webapp2_sessions")
_REGISTRY_KEY = "webapp2_sessions"
#: Held while a runtime or a handler class's setup is built.
setup_lock = threading.Lock()


class Renewals:
    """When this process last renewed something of each session.

    A visitor who only reads keeps a ``max_age`` cookie alive: it is sent
    again once a tenth of ``max_age`` has passed, not on every response
    (``note``/``due``). An owned session's owner index is renewed once per
    half idle window (``take``, ``owners.py``), and so is the database row of
    a session only read (``take``, ``durable.py``). Bounded: past ``size``
    sessions the oldest are forgotten, which costs them one early renewal
    (about 170 bytes an entry; 1.6 MiB at the bound).
    """

    def __init__(self, size: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._size = size
        self._clock = clock
        self._sent: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def note(self, session_id: str) -> None:
        with self._lock:
            self._sent[session_id] = self._clock()
            self._sent.move_to_end(session_id)
            while len(self._sent) > self._size:
                self._sent.popitem(last=False)

    def due(self, session_id: str, max_age: int) -> bool:
        with self._lock:
            sent = self._sent.get(session_id)
        return sent is None or self._clock() - sent >= max_age / 10

    def take(self, session_id: str, every: float) -> bool:
        """True, and noted now, if the last renewal is ``every`` seconds old."""
        now = self._clock()
        with self._lock:
            last = self._sent.get(session_id)
            if last is not None and now - last < every:
                return False
            self._sent[session_id] = now
            self._sent.move_to_end(session_id)
            while len(self._sent) > self._size:
                self._sent.popitem(last=False)
        return True

    def forget(self, session_id: str) -> None:
        with self._lock:
            self._sent.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sent)


@dataclass
class Runtime:
    """What one set of settings needs at run time, built once and shared."""

    config: SessionConfig
    store: Store
    codec: CookieCodec
    renewals: Renewals
    #: The database behind the store (the ``database`` setting), or None.
    durable: DurableTier | None = None


def build_store(config: SessionConfig) -> Store:
    """The store the settings describe: given, memcached, or embedded."""
    if config.store is not None:
        store: Store = config.store
        return store
    if config.memcache_servers:
        from .memcache import MemcacheStore

        return MemcacheStore(
            config.memcache_servers,
            connect_timeout=config.connect_timeout,
            timeout=config.timeout,
            retries=config.retries,
            dead_retry=config.dead_retry,
            max_connections=config.max_connections,
        )
    log.warning(
        "webapp2_sessions: no memcache_servers configured; using the embedded store, "
        "which keeps sessions in this process only (not shared between processes, "
        "lost on restart)"
    )
    return MemoryStore(max_items=config.memory_max_items, item_size_max=config.item_size_max)


def runtime_for(
    registry: dict[Any, Any], settings: Mapping[str, Any] | None, overrides: Mapping[str, Any]
) -> Runtime:
    """The runtime of ``settings`` with ``overrides``, kept in ``registry``.

    Built (and validated) on first use; ``registry`` is webapp2's
    ``app.registry``, or the middleware's own dict.
    """
    # repr: override values may be unhashable (a list of secret keys).
    key = (_REGISTRY_KEY, repr(sorted(overrides.items(), key=lambda kv: kv[0])))
    runtime: Runtime | None = registry.get(key)
    if runtime is not None:
        return runtime
    with setup_lock:
        runtime = registry.get(key)
        if runtime is None:
            merged = dict(settings or {})
            merged.update(overrides)
            config = SessionConfig.from_mapping(merged)
            if not config.secret_key:
                log.warning(
                    "webapp2_sessions: no secret_key configured; session cookies are "
                    "not signed (ids are still unguessable and checked on the server)"
                )
            store = _shared_store(registry, config)
            runtime = Runtime(
                config,
                store,
                CookieCodec(config.secret_key),
                Renewals(),
                _durable_tier(registry, config),
            )
            registry[key] = runtime
    return runtime


@dataclass
class HandlerSetup:
    """What every request of one handler class needs, looked up once."""

    runtime: Runtime
    prefetch: Prefetch


def handler_setup(
    registry: dict[Any, Any],
    key: Hashable,
    settings: Mapping[str, Any] | None,
    overrides: Mapping[str, Any],
    prefetch: Iterable[str],
) -> HandlerSetup:
    """The setup kept in ``registry`` under ``key`` (one per handler class).

    Built on the class's first request from ``settings`` with its
    ``overrides`` and the names it ``prefetch``es; every later request of the
    class finds it in ``registry`` without calling this.
    """
    runtime = runtime_for(registry, settings, overrides)
    with setup_lock:  # one Prefetch per class, so what it learns is shared
        setup: HandlerSetup | None = registry.get(key)
        if setup is None:
            learn = runtime.config.learn_prefetch
            setup = registry[key] = HandlerSetup(runtime, Prefetch(prefetch, learn=learn))
    return setup


def _shared_store(registry: dict[Any, Any], config: SessionConfig) -> Store:
    # Handlers whose overrides do not touch the store share one (and its
    # connections) with the rest of the application.
    ident = (
        _REGISTRY_KEY,
        "store",
        config.memcache_servers,
        id(config.store),
        config.connect_timeout,
        config.timeout,
        config.retries,
        config.dead_retry,
        config.max_connections,
        config.memory_max_items,
        config.item_size_max,
    )
    store: Store | None = registry.get(ident)
    if store is None:
        store = registry[ident] = build_store(config)
    return store


def _durable_tier(registry: dict[Any, Any], config: SessionConfig) -> DurableTier | None:
    """The database tier, shared (with its connection pool) like the store."""
    if config.database is None:
        return None
    from .durable import DurableTier
    from .sql import Database

    source = config.database
    ident = (_REGISTRY_KEY, "database", source if isinstance(source, str) else id(source))
    database: Database | None = registry.get(ident)
    if database is None:
        database = registry[ident] = Database(source, dead_retry=config.dead_retry)
    return DurableTier(database, config)
