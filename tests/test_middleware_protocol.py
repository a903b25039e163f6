"""SessionMiddleware and the WSGI protocol's corners, through wsgiref's own
handler: a status replaced after the headers were passed on keeps the
session's headers, and a save that fails after the application returned
still closes its body and ends the request."""

from __future__ import annotations

import contextlib
import io
import sys
from typing import Any
from wsgiref.handlers import SimpleHandler

import pytest
from conftest import PATIENT

from webapp2_sessions import SessionMiddleware, get_current_session
from webapp2_sessions.errors import SessionUnavailableError


class Body:
    """A response body with close(), as Flask/Werkzeug's ClosingIterator."""

    def __init__(self) -> None:
        self.closed = False

    def __iter__(self):
        return iter([b"ok"])

    def close(self) -> None:
        self.closed = True


def test_a_save_that_raises_after_the_app_returned_closes_its_body_and_ends_the_request():
    body = Body()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        environ["webapp2_sessions.session"]["v"] = "x"  # a new visitor's session
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    # strict mode, memcached unreachable: saving raises SessionUnavailableError
    middleware = SessionMiddleware(
        app,
        config={
            "memcache_servers": ["127.0.0.1:9"],
            "cookie_name": "sid",
            "strict": True,
            **PATIENT,
        },
    )
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.url_scheme": "http"}
    with pytest.raises(SessionUnavailableError):
        middleware(environ, lambda status, headers, exc_info=None: None)
    leaked = None
    with contextlib.suppress(RuntimeError):
        leaked = get_current_session()
    middleware.close()
    # PEP 3333: the iterable's close() must be called whatever happened
    assert (body.closed, leaked) == (True, None)


def serve(app: Any, cookie: str = "") -> tuple[str, dict[str, str], bytes]:
    """One request through wsgiref's own handler (the stdlib server's code)."""
    out, err = io.BytesIO(), io.StringIO()
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
    }
    if cookie:
        environ["HTTP_COOKIE"] = cookie
    handler = SimpleHandler(io.BytesIO(), out, err, environ, multithread=False)
    handler.run(app)
    head, _, body = out.getvalue().partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(": ")
        headers[name.lower()] = (
            headers[name.lower()] + ", " + value if name.lower() in headers else value
        )
    return lines[0], headers, body


def test_an_error_page_replacing_the_status_from_the_body_keeps_the_sessions_headers(memcached):
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        session = environ["webapp2_sessions.session"]
        if environ.get("HTTP_COOKIE") is None:
            session["user"] = "ann"
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"logged in"]
        user = session["user"]  # a page about the visitor
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body() -> Any:
            try:
                raise LookupError("the page's data is gone")
            except LookupError:
                # PEP 3333: replace the status while nothing has been sent
                start_response("404 Not Found", [("Content-Type", "text/plain")], sys.exc_info())
                yield b"no such page, %s" % user.encode()

        return body()

    middleware = SessionMiddleware(
        app, config={"memcache_servers": [memcached.address], "cookie_name": "sid", **PATIENT}
    )
    try:
        status, headers, _ = serve(middleware)
        cookie = headers["set-cookie"].split(";")[0]
        status, headers, body = serve(middleware, cookie)
    finally:
        middleware.close()
    assert (status, body) == ("HTTP/1.0 404 Not Found", b"no such page, ann")
    # a page showing ann's data, heuristically cacheable (404), must stay private
    assert "private" in headers.get("cache-control", ""), headers
    assert "Cookie" in headers.get("vary", ""), headers
