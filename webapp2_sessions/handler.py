"""SessionHandlerMixin: the glue between webapp2 handlers and ``Session``.

Settings and the store are built once per application and kept in
``app.registry`` (see ``runtime.py``); each request gets its own ``Session``,
created on first use, saved at the end of ``dispatch``. Cookie and cache
headers are written by the pure functions of ``cookies.py``.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from webob.exc import HTTPException

from .config import CONFIG_KEY
from .cookies import cookie_header, mark_private, put_cookie, read_cookie
from .lifecycle import ClientInfo
from .prefetch import Prefetch
from .runtime import Runtime, runtime_for, setup_lock
from .session import Session

_REGISTRY_KEY = "webapp2_sessions"
#: The session variable holding the CSRF token (see ``csrf_token``).
CSRF_VARIABLE = "_csrf_token"


@dataclass
class _HandlerSetup:
    """What every request of one handler class needs, looked up once."""

    runtime: Runtime
    prefetch: Prefetch
    #: The session is bound to the user agent or address.
    binds: bool


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
            app = self.request.app
            runtime = runtime_for(registry, app.config.get(CONFIG_KEY), overrides)
            config = runtime.config
            with setup_lock:  # one Prefetch per class, so what it learns is shared
                setup = registry.get(key)
                if setup is None:
                    setup = registry[key] = _HandlerSetup(
                        runtime,
                        Prefetch(self.session_prefetch, learn=config.learn_prefetch),
                        config.bind_user_agent or config.bind_ip,
                    )
        return setup

    def _make_session(self) -> Session:
        setup = self._session_setup()
        runtime = setup.runtime
        request = self.request
        raw = read_cookie(request.environ, runtime.config.cookie_name)
        client = None
        if setup.binds:
            client = ClientInfo(request.user_agent, request.remote_addr)
        return Session(
            runtime.config,
            runtime.store,
            runtime.codec.decode(raw),
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
            mark_private(response.headerlist)
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
            and self._session_setup().runtime.renewals.due(session.session_id, max_age)
        ):
            # A persistent cookie outlives a visitor who only reads.
            action = session.cookie_action = "set"
        cookie = None
        if action == "set":
            sid = session.session_id
            if max_age is not None:
                self._session_setup().runtime.renewals.note(sid)
            prepared = self._session_cookie
            cookie = prepared[1] if prepared and prepared[0] == sid else None
            if cookie is None:
                cookie = self._cookie_header(session, sid)
        elif action == "delete" and session.cookie_present:
            cookie = self._cookie_header(session, None)
        if (session.accessed or action) and self._session_private is not response:
            mark_private(response.headerlist)
        if cookie is not None:
            put_cookie(response.headerlist, cookie)

    def _cookie_header(self, session: Session, session_id: str | None) -> tuple[str, str]:
        """Set-Cookie for ``session_id``, or one that clears the cookie (None)."""
        config = session.config
        https = self.request.scheme == "https"
        if session_id is None:
            return cookie_header(config.cookie_args, config.cookie_name, None, https, 0)
        value = self._session_setup().runtime.codec.encode(session_id)
        return cookie_header(
            config.cookie_args, config.cookie_name, value, https, config.cookie_args.max_age
        )


def _is_error(response: Any) -> bool:
    """True for a response with a 5xx status: its request's changes are dropped."""
    status = getattr(response, "status_int", None)
    return isinstance(status, int) and status >= 500
