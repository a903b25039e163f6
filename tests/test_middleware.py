"""SessionMiddleware: sessions for any WSGI application, on a real memcached."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest
import webtest
from conftest import PATIENT
from rtproxy import RoundTripProxy

from webapp2_sessions import (
    ConfigurationError,
    Session,
    SessionMiddleware,
    get_current_session,
)


def plain_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A bare WSGI callable: ``/set?v=`` stores, ``/get`` reads, ``/fail`` answers 500."""
    session: Session = environ["webapp2_sessions.session"]
    assert get_current_session() is session
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    if path == "/set":
        session["v"] = query.partition("=")[2]
    elif path == "/fail":
        session["v"] = "lost"
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"failed"]
    elif path == "/raise":
        session["v"] = "lost"
        raise RuntimeError("application bug")
    elif path == "/logout":
        session.destroy()
    body = b"" if path == "/untouched" else repr(session.get("v")).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


@pytest.fixture
def wrapped(memcached):
    middleware = SessionMiddleware(
        plain_app,
        config={"memcache_servers": [memcached.address], "cookie_name": "sid", **PATIENT},
    )
    yield middleware
    middleware.close()


def test_a_wsgi_app_reads_back_what_it_stored_with_our_cookie_and_headers(wrapped):
    browser = webtest.TestApp(wrapped)
    response = browser.get("/set?v=hello")
    assert response.headers["Set-Cookie"].startswith("sid=")
    assert "HttpOnly" in response.headers["Set-Cookie"]
    assert response.headers["Vary"] == "Cookie" and "private" in response.headers["Cache-Control"]
    assert browser.get("/get").text == "'hello'"


def test_round_trips_are_those_of_the_mixin(memcached):
    proxy = RoundTripProxy(memcached.port)
    middleware = SessionMiddleware(
        plain_app, config={"memcache_servers": [proxy.address], "cookie_name": "sid", **PATIENT}
    )
    try:
        browser = webtest.TestApp(middleware)
        costs = []
        for path in ("/untouched", "/set?v=1", "/get", "/set?v=2"):
            proxy.reset()
            response = browser.get(path)
            costs.append(proxy.round_trips)
            if path == "/untouched":
                assert "Set-Cookie" not in response.headers and "Vary" not in response.headers
        # Nothing; a new session in one batch; a read in one; a read and a write in two.
        assert costs == [0, 1, 1, 2]
    finally:
        middleware.close()
        proxy.close()


@pytest.mark.parametrize("path", ["/fail", "/raise"])
def test_a_failed_response_saves_nothing(wrapped, path):
    browser = webtest.TestApp(wrapped)
    browser.get("/set?v=kept")
    if path == "/raise":
        with pytest.raises(RuntimeError):
            browser.get(path)
    else:
        browser.get(path, status=500)
    assert browser.get("/get").text == "'kept'"


def test_logout_through_the_middleware_expires_the_cookie_and_ends_the_session(wrapped):
    browser = webtest.TestApp(wrapped)
    browser.get("/set?v=secret")
    stolen = browser.cookies["sid"]
    response = browser.get("/logout")
    assert "Max-Age=0" in response.headers["Set-Cookie"]
    thief = webtest.TestApp(wrapped)
    thief.set_cookie("sid", stolen)
    assert thief.get("/get").text == "None"


def test_a_streamed_body_keeps_the_current_session_until_the_server_closes_it(memcached):
    seen: list[Any] = []
    closed: list[bool] = []

    class Streamed:
        def __init__(self) -> None:
            self.chunks = iter([b"a", b"b"])

        def __iter__(self) -> Any:
            return self

        def __next__(self) -> bytes:
            seen.append(get_current_session())
            return next(self.chunks)

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        environ["webapp2_sessions.session"]["n"] = 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Streamed()

    middleware = SessionMiddleware(
        app, config={"memcache_servers": [memcached.address], **PATIENT}
    )
    response = webtest.TestApp(middleware).get("/")
    assert response.text == "ab" and closed == [True]
    assert len(seen) == 3 and seen[0] is seen[1]  # the third call ends the iteration
    with pytest.raises(RuntimeError):
        get_current_session()  # closed: the request is over
    middleware.close()


def _streaming(memcached: Any, seen: list[Any]) -> SessionMiddleware:
    """A middleware whose app streams a body that notes (its session, the current one)."""

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        mine = environ["webapp2_sessions.session"]
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body() -> Any:
            seen.append((mine, get_current_session()))
            yield b"x"

        return body()

    return SessionMiddleware(app, config={"memcache_servers": [memcached.address], **PATIENT})


def _start(status: str, headers: list[Any], exc_info: Any = None) -> Any:
    return lambda data: None


def test_responses_interleaved_on_one_thread_each_read_their_own_session(memcached):
    # As a non-blocking server (bjoern, say) serves them: B starts before A's body is sent.
    seen: list[Any] = []
    middleware = _streaming(memcached, seen)
    try:
        body_a = middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, _start)
        body_b = middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, _start)
        with pytest.raises(RuntimeError):
            get_current_session()  # the server's own context holds none
        assert list(body_a) == [b"x"]
        body_a.close()
        assert list(body_b) == [b"x"]  # B's session still current for B
        body_b.close()
    finally:
        middleware.close()
    assert len(seen) == 2 and all(mine is current for mine, current in seen)
    assert seen[0][0] is not seen[1][0]


def test_a_body_closed_from_another_thread_leaves_that_threads_request_alone(memcached):
    seen: list[Any] = []
    middleware = _streaming(memcached, seen)
    bodies: dict[str, Any] = {}
    try:
        other = threading.Thread(target=lambda: bodies.update(a=middleware({}, _start)))
        other.start()
        other.join(60)
        body_b = middleware({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, _start)
        bodies["a"].close()  # the server closes A's body from the thread serving B
        assert list(body_b) == [b"x"]
        body_b.close()
    finally:
        middleware.close()
    assert len(seen) == 1 and seen[0][0] is seen[0][1]


def test_concurrent_requests_each_see_their_own_current_session(wrapped):
    browsers = [webtest.TestApp(wrapped) for _ in range(8)]
    for i, browser in enumerate(browsers):
        browser.get(f"/set?v={i}")
    errors: list[BaseException] = []

    def read(i: int) -> None:
        try:
            for _ in range(20):
                assert browsers[i].get("/get").text == f"'{i}'"
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_bad_settings_are_refused_when_the_middleware_is_built():
    with pytest.raises(ConfigurationError) as caught:
        SessionMiddleware(plain_app, config={"cookie_nmae": "x"})
    assert caught.value.key == "cookie_nmae"


def test_outside_a_request_there_is_no_current_session():
    with pytest.raises(RuntimeError, match="not inside a request"):
        get_current_session()


def test_the_middleware_on_the_database_tier_keeps_the_session_through_a_flush(memcached, engine):
    middleware = SessionMiddleware(
        plain_app,
        config={
            "memcache_servers": [memcached.address],
            "cookie_name": "sid",
            "database": engine,
            **PATIENT,
        },
    )
    try:
        browser = webtest.TestApp(middleware)
        browser.get("/set?v=kept")
        memcached.raw(b"flush_all\r\n")
        assert browser.get("/get").text == "'kept'"
        stolen = browser.cookies["sid"]
        browser.get("/logout")
        memcached.raw(b"flush_all\r\n")
        replay = webtest.TestApp(middleware)
        replay.set_cookie("sid", stolen)
        assert replay.get("/get").text == "None"  # the database let it go too
    finally:
        middleware.close()


def _saving_app(behaviour: str) -> Any:
    """Apps that store ``v=new`` and then start their response in various ways."""

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        session = environ["webapp2_sessions.session"]
        if environ["PATH_INFO"] == "/get":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [repr(session.get("v")).encode()]
        if environ["PATH_INFO"] == "/seed":
            session["v"] = "old"
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"seeded"]
        session["v"] = "new"
        if behaviour == "raise after start_response":
            start_response("200 OK", [("Content-Type", "text/plain")])
            raise RuntimeError("found a problem after starting the response")
        if behaviour == "500 with exc_info after 200":
            start_response("200 OK", [("Content-Type", "text/plain")])
            try:
                raise RuntimeError("found a problem after starting the response")
            except RuntimeError:
                start_response("500 Internal Server Error", [], sys.exc_info())
            return [b"failed"]

        def generator() -> Any:
            start_response("200 OK", [("Content-Type", "text/plain")])
            if behaviour == "generator raising before its first chunk":
                raise RuntimeError("failed while producing the body")
            yield b"streamed"

        if behaviour.startswith("generator"):
            return generator()
        assert behaviour == "legacy write()"
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written")
        return []

    return app


def _saving_middleware(memcached: Any, behaviour: str) -> SessionMiddleware:
    config = {"memcache_servers": [memcached.address], "cookie_name": "sid", **PATIENT}
    return SessionMiddleware(_saving_app(behaviour), config=config)


@pytest.mark.parametrize(
    "behaviour",
    [
        "raise after start_response",
        "500 with exc_info after 200",
        "generator raising before its first chunk",
    ],
)
def test_an_app_that_fails_after_start_response_but_before_its_body_saves_nothing(
    memcached, behaviour
):
    middleware = _saving_middleware(memcached, behaviour)
    browser = webtest.TestApp(middleware)
    browser.get("/seed")
    if behaviour == "500 with exc_info after 200":
        browser.get("/", status=500)
    else:
        with pytest.raises(RuntimeError):
            browser.get("/")
    assert browser.get("/get").text == "'old'"
    middleware.close()


@pytest.mark.parametrize("behaviour", ["generator starting the response", "legacy write()"])
def test_an_app_that_starts_its_response_from_its_body_or_with_write_is_saved(
    memcached, behaviour
):
    middleware = _saving_middleware(memcached, behaviour)
    browser = webtest.TestApp(middleware)
    response = browser.get("/")
    assert response.text in ("streamed", "written")
    assert response.headers["Set-Cookie"].startswith("sid=")
    assert response.headers["Vary"] == "Cookie"
    assert browser.get("/get").text == "'new'"
    middleware.close()


def test_a_server_refusing_the_headers_once_does_not_save_the_session_twice(memcached):
    """The legacy ``write()`` retried after the server's ``start_response`` raised:
    the changes were saved before the headers went to the server, and are not
    written again; the retried headers carry one cookie."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["webapp2_sessions.session"]["v"] = "new"
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            write(b"first")
        except ConnectionError:
            write(b"again")
        return []

    config = {"memcache_servers": [memcached.address], "cookie_name": "sid", **PATIENT}
    middleware = SessionMiddleware(app, config=config)
    calls: list[list[tuple[str, str]]] = []

    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> Any:
        calls.append(list(headers))
        if len(calls) == 1:
            raise ConnectionError("the client went away")
        return lambda data: None

    before = memcached.stats()["cmd_set"]
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.url_scheme": "http"}
    body = middleware(environ, start_response)
    list(body)
    writes = memcached.stats()["cmd_set"] - before

    once = webtest.TestApp(middleware)
    before = memcached.stats()["cmd_set"]
    once.get("/")
    assert writes == memcached.stats()["cmd_set"] - before  # as many as one ordinary save
    assert len(calls) == 2
    assert [n for n, v in calls[1] if n.lower() == "set-cookie" and v.startswith("sid=")] == [
        "Set-Cookie"
    ]
    middleware.close()
