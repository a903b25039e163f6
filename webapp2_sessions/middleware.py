"""Sessions for any WSGI application (Flask, Pyramid, a bare callable).

``SessionMiddleware(app, config={...})`` takes the same settings as
``app.config['webapp2_sessions']``. Inside the application the request's
``Session`` is ``environ["webapp2_sessions.session"]`` and, while the request
runs, ``get_current_session()``. Changes are saved when the application starts
its response (one batch, as with the handler mixin) and discarded when it
raises or answers with a status of 500 or above. The first ``start_response``
decides: a second one (with ``exc_info``) cannot take back what was saved.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .prefetch import Prefetch
from .response import open_session
from .runtime import runtime_for
from .session import Session

#: Where the request's session is put in the WSGI environ.
ENVIRON_KEY = "webapp2_sessions.session"

_current: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
    "webapp2_sessions.session", default=None
)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def get_current_session() -> Session:
    """The session of the request being served by ``SessionMiddleware``.

    Context-local: right under threads, greenlets and asyncio tasks alike.
    Raises ``RuntimeError`` outside such a request.
    """
    session = _current.get()
    if session is None:
        raise RuntimeError("no current session: not inside a request served by SessionMiddleware")
    return session


class SessionMiddleware:
    """WSGI middleware giving every request a lazy ``Session``.

    The settings are validated here, at construction (``ConfigurationError``
    names a bad key). A request that never touches its session costs nothing.
    Changes made while the response body is being produced, after the
    response has started, are not saved.
    """

    def __init__(
        self,
        app: WSGIApp,
        config: Mapping[str, Any] | None = None,
        *,
        prefetch: Iterable[str] = (),
        quick: Iterable[str] = (),
    ) -> None:
        self.app = app
        self._registry: dict[Any, Any] = {}
        self.runtime = runtime_for(self._registry, config, {})
        settings = self.runtime.config
        self._prefetch = Prefetch(prefetch, learn=settings.learn_prefetch)
        self._quick = frozenset(quick)

    def close(self) -> None:
        """Close the store's (and the database's) connections, at shutdown."""
        self.runtime.store.close()
        if self.runtime.durable is not None:
            self.runtime.durable.database.close()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        runtime = self.runtime
        session, response = open_session(runtime, environ, self._prefetch, quick=self._quick)
        environ[ENVIRON_KEY] = session
        token = _current.set(session)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers = list(headers)
            code = int(status.split(" ", 1)[0]) if status[:3].isdigit() else 500
            if exc_info is None and code < 500:
                response.commit(headers)
            else:
                response.apply(headers)  # nothing saved; the cookie and Vary as they stand
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, start)
        except BaseException:
            _current.reset(token)
            raise
        return _Body(body, lambda: _forget(token))


class _Body:
    """The application's response body, passed through; ``close()`` ends the request.

    Servers call ``close()`` once the body is sent (or abandoned): only then
    does ``get_current_session()`` stop answering for this request.
    """

    def __init__(self, body: Iterable[bytes], done: Callable[[], None]) -> None:
        self._body = body
        self._done = done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            done, self._done = self._done, _nothing
            done()


def _nothing() -> None:
    return None


def _forget(token: contextvars.Token[Session | None]) -> None:
    try:
        _current.reset(token)
    except ValueError:  # closed from another context: that one never saw it
        _current.set(None)
