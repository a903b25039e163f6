"""SessionHandlerMixin: the glue between webapp2 handlers and ``Session``.

Settings and the store are built once per application and kept in
``app.registry``; each request gets its own ``Session``, created on first use,
saved at the end of ``dispatch``.
"""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from webob.exc import HTTPException

from .config import CONFIG_KEY, CookieArgs, SessionConfig
from .ids import CookieCodec
from .session import ClientInfo, Prefetch, Session
from .stores import MemoryStore, Store

log = logging.getLogger("webapp2_sessions")
_REGISTRY_KEY = "webapp2_sessions"
#: The session variable holding the CSRF token (see ``csrf_token``).
CSRF_VARIABLE = "_csrf_token"
_setup_lock = threading.Lock()


class _Renewals:
    """When this process last sent each session's persistent cookie.

    A visitor who only reads keeps a ``max_age`` cookie alive: it is sent
    again once a tenth of ``max_age`` has passed, not on every response.
    Bounded: past ``size`` sessions the oldest are forgotten, which costs
    them one early renewal (about 100 bytes an entry; 1.5 MiB at the bound).
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


@dataclass
class _Runtime:
    config: SessionConfig
    store: Store
    codec: CookieCodec
    renewals: _Renewals


@dataclass
class _HandlerSetup:
    """What every request of one handler class needs, looked up once."""

    config: SessionConfig
    store: Store
    codec: CookieCodec
    prefetch: Prefetch
    #: The session is bound to the user agent or address.
    binds: bool
    renewals: _Renewals


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


def _runtime(app: Any, overrides: Mapping[str, Any]) -> _Runtime:
    registry: dict[Any, Any] = app.registry
    # repr: override values may be unhashable (a list of secret keys).
    key = (_REGISTRY_KEY, repr(sorted(overrides.items(), key=lambda kv: kv[0])))
    runtime: _Runtime | None = registry.get(key)
    if runtime is not None:
        return runtime
    with _setup_lock:
        runtime = registry.get(key)
        if runtime is None:
            settings = dict(app.config.get(CONFIG_KEY) or {})
            settings.update(overrides)
            config = SessionConfig.from_mapping(settings)
            if not config.secret_key:
                log.warning(
                    "webapp2_sessions: no secret_key configured; session cookies are "
                    "not signed (ids are still unguessable and checked on the server)"
                )
            store = _shared_store(registry, config)
            runtime = _Runtime(config, store, CookieCodec(config.secret_key), _Renewals())
            registry[key] = runtime
    return runtime


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


class SessionHandlerMixin:
    """Adds sessions to a ``webapp2.RequestHandler`` subclass.

    Put it before ``webapp2.RequestHandler`` in the bases. Settings come from
    ``app.config['webapp2_sessions']``; a handler may override any of them in
    ``session_settings``, and list the variables it reads on every request in
    ``session_prefetch`` so the first read fetches them all at once.
    """

    #: Per-handler overrides of ``app.config['webapp2_sessions']``.
    session_settings: Mapping[str, Any] = {}
    #: Shortcut for ``session_settings['cookie_name']``.
    session_cookie_name: str | None = None
    #: Variables fetched together with the session on first use.
    session_prefetch: Iterable[str] = ()
    #: Variables every stored session must have (set them when the session
    #: starts). If memcached evicted one, the session is ended rather than
    #: served half-present.
    session_required: Iterable[str] = ()

    _session_obj: Session | None = None
    #: (id, Set-Cookie header) prepared while the write batch was in flight.
    _session_cookie: tuple[str, tuple[str, str]] | None = None
    #: The response already marked private while the write batch was in flight.
    _session_private: Any = None
    #: The request's session changes are not to be saved (``check_csrf`` refused it).
    _session_discard = False
    # Provided by webapp2.RequestHandler.
    app: Any
    request: Any
    response: Any
    abort: Callable[..., Any]

    # ------------------------------------------------------------------ setup

    def _session_setup(self) -> _HandlerSetup:
        # request.app is a plain attribute; self.app goes through a thread-local proxy.
        registry: dict[Any, Any] = self.request.app.registry
        key = (_REGISTRY_KEY, "handler", type(self))
        setup: _HandlerSetup | None = registry.get(key)
        if setup is None:
            overrides = dict(self.session_settings)
            if self.session_cookie_name is not None:
                overrides["cookie_name"] = self.session_cookie_name
            runtime = _runtime(self.request.app, overrides)
            config = runtime.config
            with _setup_lock:  # one Prefetch per class, so what it learns is shared
                setup = registry.get(key)
                if setup is None:
                    setup = registry[key] = _HandlerSetup(
                        config,
                        runtime.store,
                        runtime.codec,
                        Prefetch(self.session_prefetch, learn=config.learn_prefetch),
                        config.bind_user_agent or config.bind_ip,
                        runtime.renewals,
                    )
        return setup

    def _make_session(self) -> Session:
        setup = self._session_setup()
        request = self.request
        raw = _cookie_value(request.environ, setup.config.cookie_name)
        client = None
        if setup.binds:
            client = ClientInfo(request.user_agent, request.remote_addr)
        return Session(
            setup.config,
            setup.store,
            setup.codec.decode(raw),
            cookie_present=raw is not None,
            client=client,
            prefetch=setup.prefetch,
            # Read per request: a handler may vary it (by path, say).
            required=self.session_required,
        )

    def init_session(self) -> Session:
        """Load (or start) this request's session now and return it.

        Idempotent. Every other session method calls it when needed, so calling
        it is only useful to pay the load up front.
        """
        if self._session_obj is None:
            self._session_obj = self._make_session()
            self._session_obj.load()
        return self._session_obj

    @property
    def session(self) -> Session:
        """This request's session, a mutable mapping of its variables."""
        if self._session_obj is None:
            self._session_obj = self._make_session()
        return self._session_obj

    @property
    def session_id(self) -> str:
        return self.session.session_id

    # ------------------------------------------------------------------ variables

    def get_session_var(self, name: str, default: Any = None) -> Any:
        session = self._session_obj  # not `or`: an empty Session is falsy
        if session is None:
            session = self.session
        return session.get(name, default)

    def set_session_var(self, name: str, value: Any) -> None:
        """Set ``name``; stored when the handler returns.

        Raises ``TypeError`` for a value the serializer cannot store and
        ``ValueError`` for one larger than ``item_size_max``.
        """
        session = self._session_obj
        if session is None:
            session = self.session
        session[name] = value

    def delete_session_var(self, name: str) -> None:
        self.session.discard(name)

    def incr_session_var(self, name: str, delta: int = 1) -> int:
        """Atomically add ``delta`` on the server; returns the new value."""
        return self.session.incr(name, delta)

    def update_session_var(self, name: str, fn: Callable[[Any], Any], attempts: int = 10) -> Any:
        """Set ``name`` to ``fn(current)`` by compare-and-set; returns the result."""
        return self.session.update_var(name, fn, attempts)

    # ------------------------------------------------------------------ lifecycle

    def regenerate_session_id(self) -> None:
        """Give the session a new id (call it at login)."""
        self.session.regenerate_id()

    def destroy_session(self) -> None:
        """Delete the session on the server and expire its cookie (logout)."""
        self.session.destroy()

    def add_flash(self, value: Any, level: str | None = None) -> None:
        self.session.add_flash(value, level)

    def get_flashes(self) -> list[tuple[Any, str | None]]:
        return self.session.get_flashes()

    # ------------------------------------------------------------------ CSRF

    def csrf_token(self) -> str:
        """This session's CSRF token: put it in every form (``csrf_token``).

        Stable for the life of the session and different between sessions;
        it starts (and stores) the session if there is none yet. Kept as the
        session variable ``_csrf_token``, so ``regenerate_session_id`` keeps it
        and ``destroy_session`` ends it.
        """
        token = self.get_session_var(CSRF_VARIABLE)
        if not isinstance(token, str) or not token:
            token = secrets.token_urlsafe(32)
            self.set_session_var(CSRF_VARIABLE, token)
        return token

    def check_csrf(self) -> None:
        """Abort with 403 unless the request carries this session's CSRF token.

        The token is read from the form field ``csrf_token`` or the header
        ``X-CSRF-Token`` and compared in constant time. A refused request
        saves none of its session changes, and a visitor without a session
        (so without a token) is refused without one being created.
        """
        expected = self.get_session_var(CSRF_VARIABLE)
        sent = self.request.headers.get("X-CSRF-Token")
        if sent is None:
            form = self.request.POST
            sent = form.get("csrf_token") if hasattr(form, "get") else None
        if not (
            isinstance(expected, str)
            and expected
            and isinstance(sent, str)
            and hmac.compare_digest(expected.encode("utf-8"), sent.encode("utf-8", "replace"))
        ):
            self._session_discard = True
            self.abort(403, detail="The form is out of date or was not sent by this site.")

    # ------------------------------------------------------------------ dispatch

    def dispatch(self) -> Any:
        try:
            result = super().dispatch()  # type: ignore[misc]
        except HTTPException as exc:
            # Redirects and 4xx raised with abort() still commit the session
            # (the login-then-redirect pattern); 5xx and other errors do not.
            if exc.code is not None and exc.code < 500 and not self._session_discard:
                self._commit_session(exc)
                # An app-level error handler answers with self.response instead.
                self._apply_session_headers(self.response)
            raise
        if self._session_obj is None:
            return result  # the session was never used: nothing to save or send
        response = self.response
        returned = result is not None and result is not response and hasattr(result, "headers")
        failed = _is_error(response) or (returned and _is_error(result))
        if failed or self._session_discard:
            # A handler that answered 500 itself (its own handle_exception, say)
            # failed as surely as one that raised: its changes are not kept.
            self._apply_session_headers(self.response)
        else:
            self._commit_session(self.response)
        if returned:
            self._apply_session_headers(result)
        return result

    def _commit_session(self, response: Any) -> None:
        session = self._session_obj
        if session is None:
            return

        def on_sent(session_id: str, sets_cookie: bool) -> None:
            # While the write batch is in flight: the headers that do not
            # depend on its outcome, and the cookie it will set if it
            # succeeds (signing is the dearest part of a new visitor's
            # response). Saving marks the session accessed, so the response
            # is private whatever the outcome.
            _mark_private(response.headerlist)
            self._session_private = response
            if sets_cookie:
                self._session_cookie = (session_id, self._cookie_header(session, session_id))

        session.save(on_sent)
        self._apply_session_headers(response)

    def _apply_session_headers(self, response: Any) -> None:
        session = self._session_obj
        if session is None:
            return
        action = session.cookie_action
        max_age = session.config.cookie_args.max_age
        if (
            action is None
            and max_age is not None
            and session.stored
            and session.available
            and self._session_setup().renewals.due(session.session_id, max_age)
        ):
            # A persistent cookie outlives a visitor who only reads.
            action = session.cookie_action = "set"
        cookie = None
        if action == "set":
            sid = session.session_id
            if max_age is not None:
                self._session_setup().renewals.note(sid)
            prepared = self._session_cookie
            cookie = prepared[1] if prepared and prepared[0] == sid else None
            if cookie is None:
                cookie = self._cookie_header(session, sid)
        elif action == "delete" and session.cookie_present:
            cookie = self._cookie_header(session, None)
        if (session.accessed or action) and self._session_private is not response:
            _mark_private(response.headerlist)
        if cookie is not None:
            _put_cookie(response.headerlist, cookie)

    def _cookie_header(self, session: Session, session_id: str | None) -> tuple[str, str]:
        """Set-Cookie for ``session_id``, or one that clears the cookie (None)."""
        config = session.config
        args = config.cookie_args
        name = config.cookie_name
        secure = args.secure
        if secure == "auto":
            secure = self.request.scheme == "https"
        if name.startswith(("__Host-", "__Secure-")):
            secure = True
        if session_id is None:
            # WebOb's delete_cookie would drop Secure, which __Host- cookies need.
            return _set_cookie_header(name, "", args, bool(secure), 0)
        value = self._session_setup().codec.encode(session_id)
        return _set_cookie_header(name, value, args, bool(secure), args.max_age)


def _set_cookie_header(
    name: str, value: str, args: CookieArgs, secure: bool, max_age: int | None
) -> tuple[str, str]:
    """Our Set-Cookie header.

    Written by hand: the name, path and domain were validated with the
    settings and the value is an id (and signature) in a cookie-safe alphabet,
    so nothing needs quoting, and WebOb's general cookie writer costs as much
    as a memcached round trip.
    """
    parts = [f"{name}={value}", f"Path={args.path}"]
    if args.domain:
        parts.append(f"Domain={args.domain}")
    if max_age is not None:
        expires = formatdate(time.time() + max_age if max_age else 0, usegmt=True)
        parts += [f"Max-Age={max_age}", f"expires={expires}"]
    if secure:
        parts.append("secure")
    if args.httponly:
        parts.append("HttpOnly")
    if args.samesite:
        parts.append(f"SameSite={args.samesite}")
    return ("Set-Cookie", "; ".join(parts))


def _cookie_value(environ: Mapping[str, Any], name: str) -> str | None:
    """The raw value of cookie ``name`` (the last, as WebOb reads it); never raises.

    Only a cookie-pair of its own counts: pairs are separated by ``;`` alone,
    and a quoted value runs to its closing quote, so no text inside another
    cookie's value (``x=1,sid=...`` or ``x="a; sid=..."``, which a sibling
    subdomain or a page storing user text could set) is ever taken for ours.

    Read straight from the header rather than through ``request.cookies``:
    WebOb decodes every cookie of the header to find one (the cost of a few
    thousand instructions on every returning visitor's request) and raises on
    one it cannot decode (``x=\\377``), which would turn a stranger's junk
    cookie into a 500. The codec validates what this returns.
    """
    header: str | None = environ.get("HTTP_COOKIE")
    if not header or name not in header:
        return None
    found: str | None = None
    for key, value in _cookie_pairs(header) if '"' in header else _plain_pairs(header):
        if key == name:
            found = value
    if found is None:
        return None
    found = found.strip()
    if len(found) > 1 and found[0] == found[-1] == '"':
        found = found[1:-1]
    return found


def _plain_pairs(header: str) -> Iterator[tuple[str, str]]:
    for part in header.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            yield key.strip(), value


def _cookie_pairs(header: str) -> Iterator[tuple[str, str]]:
    """``_plain_pairs`` for a header with quotes: a ``;`` inside one is text."""
    pos, size = 0, len(header)
    while pos < size:
        end = header.find(";", pos)
        if end < 0:
            end = size
        equals = header.find("=", pos, end)
        if equals < 0:
            pos = end + 1
            continue
        start = equals + 1
        while start < end and header[start] in " \t":
            start += 1
        if start < end and header[start] == '"':
            close = header.find('"', start + 1)
            end = size if close < 0 else header.find(";", close)
            if end < 0:
                end = size
        yield header[pos:equals].strip(), header[equals + 1 : end]
        pos = end + 1


def _is_error(response: Any) -> bool:
    """True for a response with a 5xx status: its request's changes are dropped."""
    status = getattr(response, "status_int", None)
    return isinstance(status, int) and status >= 500


def _mark_private(headerlist: list[tuple[str, str]]) -> None:
    """Add ``Vary: Cookie`` and keep shared caches from storing the response.

    One pass over WebOb's raw header list: its case-insensitive header view
    rescans the list on every get, set and delete.
    """
    vary_at = cache_at = -1
    for index, (name, _) in enumerate(headerlist):
        lowered = name.lower()
        if lowered == "vary":
            vary_at = index
        elif lowered == "cache-control":
            cache_at = index
    if vary_at < 0:
        headerlist.append(("Vary", "Cookie"))
    else:
        vary = headerlist[vary_at][1]
        if "cookie" not in {v.strip().lower() for v in vary.split(",")}:
            headerlist[vary_at] = ("Vary", vary + ", Cookie")
    if cache_at < 0:
        headerlist.append(("Cache-Control", "private"))
    else:
        headerlist[cache_at] = ("Cache-Control", _private(headerlist[cache_at][1]))


def _put_cookie(headerlist: list[tuple[str, str]], cookie: tuple[str, str]) -> None:
    """Add our Set-Cookie, replacing one for the same name the handler wrote."""
    prefix = cookie[1][: cookie[1].index("=") + 1]
    for index in range(len(headerlist) - 1, -1, -1):
        name, value = headerlist[index]
        if name.lower() == "set-cookie" and value.lstrip().startswith(prefix):
            del headerlist[index]
    headerlist.append(cookie)


@functools.lru_cache(maxsize=256)
def _private(cache: str) -> str:
    """``cache`` (a Cache-Control value) made unfit for shared caches.

    Cached: an application sends the same few values (webapp2's own default
    is ``no-cache``) on every response.
    """
    directives = [d.strip() for d in cache.split(",") if d.strip()]
    lowered = [d.lower() for d in directives]
    if "no-store" in lowered or ("private" in lowered and "public" not in lowered):
        return cache
    kept = [d for d, low in zip(directives, lowered, strict=True) if low != "public"]
    return ", ".join([*kept, "private"])
