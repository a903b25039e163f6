"""The session's part of a response: its cookie and its caching headers.

Works on WebOb's raw header list (a list of ``(name, value)`` pairs), so the
handler mixin and plain WSGI code share it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .cookies import cookie_header, mark_private, put_cookie, read_cookie
from .lifecycle import ClientInfo
from .prefetch import Prefetch
from .runtime import Runtime
from .session import Session

Headers = list[tuple[str, str]]


class SessionResponse:
    """Saves one request's session and writes its headers onto responses."""

    __slots__ = ("_https", "_prepared", "_private", "runtime", "session")

    def __init__(self, runtime: Runtime, session: Session, https: bool) -> None:
        self.runtime = runtime
        self.session = session
        self._https = https
        #: (id, Max-Age, Set-Cookie header) prepared while the write batch was in flight.
        self._prepared: tuple[str, int | None, tuple[str, str]] | None = None
        #: The header list already marked private while the batch was in flight.
        self._private: Headers | None = None

    def commit(self, headers: Headers) -> None:
        """Save the session's changes and write its headers onto ``headers``."""

        def on_sent(session_id: str, sets_cookie: bool) -> None:
            # While the write batch is in flight: the headers that do not
            # depend on its outcome, and the cookie it will set if it
            # succeeds (signing is the dearest part of a new visitor's
            # response). Saving marks the session accessed, so the response
            # is private whatever the outcome.
            mark_private(headers)
            self._private = headers
            if sets_cookie:
                max_age = self.session._server.max_age
                self._prepared = (session_id, max_age, self.cookie(session_id, max_age))

        self.session.save(on_sent)
        self.apply(headers)

    def apply(self, headers: Headers) -> None:
        """Write the cookie (set, renewed or cleared) and ``Vary``/``Cache-Control``."""
        session = self.session
        server = session._server
        action = server.cookie_action
        max_age = server.max_age  # the session's own (set_expiry)
        if (
            action is None
            and max_age is not None
            and session.stored
            and session.available
            and self.runtime.renewals.due(session.session_id, max_age)
        ):
            # A persistent cookie outlives a visitor who only reads.
            action = server.cookie_action = "set"
        cookie = None
        if action == "set":
            sid = session.session_id
            if max_age is not None:
                self.runtime.renewals.note(sid)
            prepared = self._prepared
            if prepared and prepared[0] == sid and prepared[1] == max_age:
                cookie = prepared[2]
            else:
                cookie = self.cookie(sid, max_age)
        elif action == "delete" and session.cookie_present:
            cookie = self.cookie(None)
        if (session.accessed or action) and self._private is not headers:
            mark_private(headers)
        if cookie is not None:
            put_cookie(headers, cookie)

    def cookie(self, session_id: str | None, max_age: int | None = None) -> tuple[str, str]:
        """Set-Cookie for ``session_id`` (persistent for ``max_age`` seconds),
        or one that clears the cookie (None)."""
        config = self.runtime.config
        args = config.cookie_args
        if session_id is None:
            return cookie_header(args, config.cookie_name, None, self._https, 0)
        value = self.runtime.codec.encode(session_id)
        return cookie_header(args, config.cookie_name, value, self._https, max_age)


def open_session(
    runtime: Runtime,
    environ: Mapping[str, Any],
    prefetch: Prefetch,
    *,
    required: Iterable[str] = (),
    quick: Iterable[str] = (),
) -> tuple[Session, SessionResponse]:
    """The request's session, from its cookie, and the writer of its headers.

    Nothing is read from the store yet: the session loads on first use.
    """
    config = runtime.config
    raw = read_cookie(environ, config.cookie_name)
    client = None
    if config.bind_user_agent or config.bind_ip:
        client = ClientInfo(environ.get("HTTP_USER_AGENT"), environ.get("REMOTE_ADDR"))
    session = Session(
        config,
        runtime.store,
        runtime.codec.decode(raw),
        cookie_present=raw is not None,
        client=client,
        prefetch=prefetch,
        required=required,
        durable=runtime.durable,
        quick=quick,
    )
    https = environ.get("wsgi.url_scheme") == "https"
    return session, SessionResponse(runtime, session, https)
