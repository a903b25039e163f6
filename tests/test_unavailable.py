"""A dead, restarted or silent memcached: pages are still served."""

from __future__ import annotations

import contextlib
import logging
import socket
import time

import pytest
import webapp2
import webtest
from conftest import Handler, capture_errors, make_app

from webapp2_sessions import SessionUnavailableError


def test_stopped_server_reads_give_defaults_and_the_page_is_served(app_on, memcached, caplog):
    app = app_on()
    app.get("/", {"set": "a", "value": "1"})
    memcached.stop()
    with caplog.at_level(logging.DEBUG, logger="webapp2_sessions"):
        response = app.get("/", {"get": "a"})
        assert response.status_int == 200
        assert response.json == {"a": None}
        app.get("/", {"set": "b", "value": "2"})
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(memcached.address in m and "unavailable" in m for m in errors)
    # Each unsaved write is a debug line: the outage is the one error.
    assert any("not saved" in r.getMessage() for r in caplog.records)


def test_an_outage_is_logged_once_not_per_request(app_on, memcached, caplog):
    app = app_on(dead_retry=30)
    app.get("/", {"set": "a", "value": "1"})
    memcached.stop()
    with caplog.at_level(logging.ERROR, logger="webapp2_sessions"):
        for _ in range(20):
            app.get("/", {"get": "a"})
            app.get("/", {"set": "a", "value": "2", "incr": "n"})
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "unavailable" in errors[0].getMessage()


def test_no_log_line_quotes_a_session_id(app_on, memcached, caplog):
    app = app_on()
    app.get("/", {"set": "a", "value": "1"})
    sid = app.cookies["sid"]
    memcached.stop()
    with caplog.at_level(logging.DEBUG, logger="webapp2_sessions"):
        app.get("/", {"get": "a"})
        app.get("/", {"set": "a", "value": "2"})
    assert caplog.records
    assert sid not in caplog.text


def test_strict_mode_raises_session_unavailable_error_to_the_app(memcached):
    app = make_app({"memcache_servers": [memcached.address], "cookie_name": "sid", "strict": True})
    seen = capture_errors(app.app, 503, "try again later")
    app.get("/", {"set": "a", "value": "1"})
    memcached.stop()
    response = app.get("/", {"get": "a"}, status=503)
    assert response.text == "try again later"
    assert isinstance(seen[0], SessionUnavailableError)
    assert seen[0].server == memcached.address


def test_restarted_server_is_reconnected_without_an_error(app_on, memcached, caplog):
    app = app_on()
    app.get("/", {"set": "a", "value": "1"})
    memcached.restart()  # same port, empty memory, our pooled socket is now dead
    with caplog.at_level(logging.WARNING, logger="webapp2_sessions"):
        assert app.get("/", {"get": "a"}).json == {"a": None}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    app.get("/", {"set": "a", "value": "2"})
    assert app.get("/", {"get": "a"}).json == {"a": 2}


def test_server_that_never_answers_costs_at_most_the_timeout():
    timeout = 3.0
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes connections that nobody serves
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        app = make_app(
            {"memcache_servers": [address], "cookie_name": "sid", "timeout": timeout},
            [("/", Handler)],
        )
        app.set_cookie("sid", "0" * 12 + "4" + "0" * 3 + "8" + "0" * 15)
        started = time.monotonic()
        response = app.get("/", {"get": "a", "set": "b", "value": "1"})
        elapsed = time.monotonic() - started
        silent.setblocking(False)
        attempts = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                silent.accept()[0].close()
                attempts += 1
    assert response.json == {"a": None}
    # One timeout for the read; the write then fails fast on the node marked
    # down: it does not even connect. A second timeout would take 2 * 3 s.
    assert attempts == 1
    assert elapsed < 2 * timeout - 0.5


def test_a_node_marked_down_is_not_contacted_again_within_dead_retry(memcached):
    timeout = 20.0
    app = make_app(
        {
            "memcache_servers": [memcached.address],
            "cookie_name": "sid",
            "timeout": timeout,
            "connect_timeout": timeout,
            "dead_retry": 30,
        },
        [("/", Handler)],
    )
    app.get("/", {"set": "a", "value": "1"}, status=200)
    memcached.stop()
    # The failure that marks it down: a stopped server refuses at once.
    started = time.monotonic()
    assert app.get("/", {"get": "a"}, status=200).json == {"a": None}
    assert time.monotonic() - started < timeout / 2
    # An impostor takes the port and answers nothing: a request that
    # connected to it would wait the whole 20 s timeout.
    with socket.socket() as impostor:
        impostor.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        impostor.bind(("127.0.0.1", memcached.port))
        impostor.listen(16)
        newcomer = webtest.TestApp(app.app)
        for browser, params in (
            (app, {"get": "a"}),
            (app, {"set": "b", "value": "2"}),
            (app, {"incr": "n"}),
            (newcomer, {"set": "c", "value": "3"}),
            (app, {"destroy": "1"}),
        ):
            started = time.monotonic()
            browser.get("/", params, status=200)
            assert time.monotonic() - started < timeout / 2, params
        impostor.setblocking(False)
        with pytest.raises(BlockingIOError):
            impostor.accept()  # nobody connected


def test_embedded_store_is_used_without_servers():
    app = make_app({"cookie_name": "sid"}, [("/", Handler)])
    app.get("/", {"set": "a", "value": "1"})
    assert app.get("/", {"get": "a"}).json == {"a": 1}
    assert isinstance(app.app, webapp2.WSGIApplication)


@pytest.mark.parametrize("code", [302, 404])
def test_abort_below_500_still_saves_and_sets_the_cookie(app_on, code):
    from conftest import SessionHandlerMixin

    class Aborting(SessionHandlerMixin, webapp2.RequestHandler):
        def get(self):
            self.set_session_var("a", 1)
            if code == 302:
                self.redirect("/read", abort=True)
            self.abort(code)

    class Reader(SessionHandlerMixin, webapp2.RequestHandler):
        def get(self):
            self.response.write(str(self.get_session_var("a")))

    app = app_on([("/", Aborting), ("/read", Reader)])
    response = app.get("/", status=code)
    assert "sid=" in response.headers["Set-Cookie"]
    assert app.get("/read").text == "1"


def test_handler_error_discards_the_requests_changes(app_on):
    from conftest import SessionHandlerMixin

    class Failing(SessionHandlerMixin, webapp2.RequestHandler):
        def get(self):
            self.set_session_var("a", 2)
            raise RuntimeError("boom")

    app = app_on([("/", Handler), ("/fail", Failing)])
    app.get("/", {"set": "a", "value": "1"})
    app.get("/fail", status=500)
    assert app.get("/", {"get": "a"}).json == {"a": 1}
