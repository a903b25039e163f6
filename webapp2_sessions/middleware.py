"""Sessions for any WSGI application (Flask, Pyramid, a bare callable).

``SessionMiddleware(app, config={...})`` takes the same settings as
``app.config['webapp2_sessions']``. Inside the application the request's
``Session`` is ``environ["webapp2_sessions.session"]`` and, while the request
runs, ``get_current_session()``. Changes are saved when the application
returns its response (one batch, as with the handler mixin), or when its body
yields its first chunk if it starts the response only then, and discarded
when it raises first or its last ``start_response`` gives a status of 500 or
above. Until then the server's ``start_response`` is held back, since the
session's cookie belongs in the headers it sends.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from .prefetch import Prefetch
from .response import SessionResponse, open_session
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

    The request's own context holds it (``SessionMiddleware``): right under
    threads, greenlets and servers that interleave responses on one thread.
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
        # The request's own context: the application, each step of its body
        # and its close() run in it, and the server's context never holds the
        # session, so a server that interleaves requests on one thread (or
        # closes a body from another) never shows one request another's.
        context = contextvars.copy_context()
        context.run(_current.set, session)
        started = _Start(start_response, response)
        body = context.run(self.app, environ, started)
        try:
            context.run(started.send)
        except BaseException:
            # Saving failed (strict mode), or the server refused the headers:
            # the body is closed all the same (PEP 3333), and the request ends.
            close = getattr(body, "close", None)
            if close is not None:
                context.run(close)
            raise
        return _Body(body, started, context)


class _Start:
    """The ``start_response`` the application gets: it holds the status and
    headers back until the application has returned (or its body yields), so
    that an exception raised in between saves nothing, and then saves the
    session, or not, by the last status given."""

    __slots__ = ("_server", "exc_info", "headers", "response", "sent", "status")

    def __init__(self, server: StartResponse, response: SessionResponse) -> None:
        self._server = server
        self.response = response
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.exc_info: Any = None
        self.sent: Callable[[bytes], Any] | None = None

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if self.sent is not None:
            # Too late to save differently; the server decides (PEP 3333: it
            # re-raises if the headers have gone out already, else replaces
            # them), and the replacement carries the session's headers too.
            headers = list(headers)
            self.response.apply(headers)
            return self._server(status, headers, exc_info)
        self.status, self.headers, self.exc_info = status, list(headers), exc_info
        return self.write

    def write(self, data: bytes) -> Any:
        """The legacy ``write()``: the headers must go first."""
        self.send()
        assert self.sent is not None
        return self.sent(data)

    def send(self) -> None:
        """Save (or not) and pass the status and headers to the server, once.

        Nothing to pass if the application never called ``start_response``:
        the server then finds that out for itself.
        """
        status = self.status
        if self.sent is not None or status is None:
            return
        headers = self.headers
        code = int(status[:3]) if status[:3].isdigit() else 500
        if code < 500 and self.exc_info is None:
            self.response.commit(headers)
        else:
            self.response.apply(headers)  # nothing saved; the cookie and Vary as they stand
        self.sent = self._server(status, headers, self.exc_info)


class _Body:
    """The application's response body, passed through in the request's context.

    Each chunk is produced, and ``close()`` runs, in the context the
    application was called in, so ``get_current_session()`` answers there
    and nowhere else. A body that starts the response itself (a generator)
    is saved for before its first chunk reaches the server.
    """

    def __init__(
        self, body: Iterable[bytes], started: _Start, context: contextvars.Context
    ) -> None:
        self._body = body
        self._started = started
        self._context = context

    def __iter__(self) -> Iterator[bytes]:
        run, started = self._context.run, self._started
        chunks = run(iter, self._body)
        while True:
            try:
                chunk = run(next, chunks)
            except StopIteration:
                break
            if started.sent is None:
                run(started.send)
            yield chunk
        if started.sent is None:
            run(started.send)  # an empty body

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            self._context.run(close)
