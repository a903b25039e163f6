"""SessionHandlerMixin: the glue between webapp2 handlers and ``Session``.

Settings and the store are built once per application and kept in
``app.registry`` (see ``runtime.py``); each request gets its own ``Session``,
created on first use, saved at the end of ``dispatch``. Cookie and cache
headers are written by the pure functions of ``cookies.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from webob.exc import HTTPException

from . import csrf
from .config import CONFIG_KEY
from .response import SessionResponse, open_session
from .runtime import HandlerSetup, handler_setup
from .session import Session

_REGISTRY_KEY = "webapp2_sessions"


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
    #: Variables kept in memcached only, never in the ``database`` tier: hot,
    #: disposable data (a visit counter), whose loss costs nothing.
    session_quick: Iterable[str] = ()

    _session_obj: Session | None = None
    _session_response: SessionResponse | None = None
    #: The request's session changes are not to be saved (``check_csrf`` refused it).
    _session_discard = False
    # Provided by webapp2.RequestHandler.
    app: Any
    request: Any
    response: Any
    abort: Callable[..., Any]

    # ------------------------------------------------------------------ setup

    def _session_setup(self) -> HandlerSetup:
        # request.app is a plain attribute; self.app goes through a thread-local proxy.
        registry: dict[Any, Any] = self.request.app.registry
        key = (_REGISTRY_KEY, "handler", type(self))
        setup: HandlerSetup | None = registry.get(key)
        if setup is None:
            overrides = dict(self.session_settings)
            if self.session_cookie_name is not None:
                overrides["cookie_name"] = self.session_cookie_name
            settings = self.request.app.config.get(CONFIG_KEY)
            setup = handler_setup(registry, key, settings, overrides, self.session_prefetch)
        return setup

    def _make_session(self) -> Session:
        setup = self._session_setup()
        session, self._session_response = open_session(
            setup.runtime,
            self.request.environ,
            setup.prefetch,
            # Read per request: a handler may vary it (by path, say).
            required=self.session_required,
            quick=self.session_quick,
        )
        return session

    def init_session(self) -> Session:
        """Start this request's session now, and store it if it is new.

        As the original recipe meant it: after an explicit call, the session
        exists on the server (its record is written in one round trip) and its
        cookie goes out with this response, so ``session_id`` is the same on
        the visitor's next request even if no variable is ever set. Every
        other method starts the session lazily and stores nothing unless
        something changes. Idempotent; returns the session.
        """
        session = self.session
        session.start()
        return session

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

    def set_session_owner(self, owner: str) -> None:
        """Tie the session to ``owner`` (a user id, say); call it at login.

        Stores the session now if it is new. ``TypeError``/``ValueError`` for
        an owner that is not a non-empty ``str``.
        """
        self.session.set_owner(owner)

    def destroy_other_sessions(self) -> int:
        """End the owner's other sessions ("log out my other devices"); how many.

        This session survives. 0 when no owner was set.
        """
        return self.session.destroy_others()

    def set_session_expiry(self, seconds: int | None) -> None:
        """Remember the session for ``seconds`` (None: forget); see ``Session.set_expiry``."""
        self.session.set_expiry(seconds)

    def add_flash(self, value: Any, level: str | None = None) -> None:
        self.session.add_flash(value, level)

    def get_flashes(self) -> list[tuple[Any, str | None]]:
        return self.session.get_flashes()

    # ------------------------------------------------------------------ CSRF

    def csrf_token(self) -> str:
        """This session's CSRF token, for every form (see ``csrf.py``).

        Stable for the life of the session and different between sessions;
        it starts (and stores) the session if there is none yet.
        """
        token = self.get_session_var(csrf.VARIABLE)
        if not isinstance(token, str) or not token:
            token = csrf.new_token()
            self.set_session_var(csrf.VARIABLE, token)
        return token

    def check_csrf(self) -> None:
        """Abort with 403 unless the request carries this session's CSRF token.

        Read from the form field ``csrf_token`` or the header ``X-CSRF-Token``.
        A refused request saves none of its session changes, and a visitor
        without a session (so without a token) is refused without one.
        """
        sent = self.request.headers.get(csrf.HEADER)
        if sent is None:
            try:
                form = self.request.POST
            except (ValueError, LookupError, Warning):
                # An unparsable body (no boundary, unknown charset): no token.
                form = None
            sent = form.get(csrf.FIELD) if hasattr(form, "get") else None
        if not csrf.matches(self.get_session_var(csrf.VARIABLE), sent):
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
        # The status line ("500 Internal Server Error"): WebOb's status_int
        # parses it anew on every read.
        failed = response.status[:1] == "5" or (returned and _is_error(result))
        if failed or self._session_discard:
            # A handler that answered 500 itself (its own handle_exception, say)
            # failed as surely as one that raised: its changes are not kept.
            self._apply_session_headers(self.response)
        else:
            writer = self._session_response  # _commit_session(), inline
            if writer is not None:
                writer.commit(response.headerlist)
        if returned:
            self._apply_session_headers(result)
        return result

    def _commit_session(self, response: Any) -> None:
        if self._session_response is not None:
            self._session_response.commit(response.headerlist)

    def _apply_session_headers(self, response: Any) -> None:
        if self._session_response is not None:
            self._session_response.apply(response.headerlist)


def _is_error(response: Any) -> bool:
    """True for a response with a 5xx status: its request's changes are dropped."""
    status = getattr(response, "status", None)
    return isinstance(status, str) and status[:1] == "5"
