"""What a request costs in memcached round trips, counted on the wire."""

from __future__ import annotations

import os
import sys

import webapp2
import webtest
from conftest import PATIENT, SECRET, capture_errors
from rtproxy import RoundTripProxy

from webapp2_sessions import SessionHandlerMixin

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

from app import make_app as make_example_app


class Untouched(SessionHandlerMixin, webapp2.RequestHandler):
    def get(self) -> None:
        self.response.write("ok")


class Write3(SessionHandlerMixin, webapp2.RequestHandler):
    def get(self) -> None:
        for name in ("a", "b", "c"):
            self.set_session_var(name, name * 3)


class Read3(SessionHandlerMixin, webapp2.RequestHandler):
    def get(self) -> None:
        self.response.write(",".join(self.get_session_var(n) for n in ("a", "b", "c")))


class Read3Write1(SessionHandlerMixin, webapp2.RequestHandler):
    def get(self) -> None:
        values = [self.get_session_var(n) for n in ("a", "b", "c")]
        self.set_session_var("a", values[0] + "!")


class Declared(SessionHandlerMixin, webapp2.RequestHandler):
    session_prefetch = ("a", "b", "c")

    def get(self) -> None:
        self.response.write(",".join(self.get_session_var(n) for n in ("a", "b", "c")))


class ReadTwiceWriteRead(SessionHandlerMixin, webapp2.RequestHandler):
    def get(self) -> None:
        first = self.get_session_var("a")
        second = self.get_session_var("a")
        self.set_session_var("z", "new")
        self.response.write(f"{first}|{second}|{self.get_session_var('z')}")


class ReadAbsent(SessionHandlerMixin, webapp2.RequestHandler):
    def get(self) -> None:
        self.response.write(repr(self.get_session_var("never_set")))


class Init(SessionHandlerMixin, webapp2.RequestHandler):
    def get(self) -> None:
        self.init_session()
        self.response.write(self.session_id)


ROUTES = [
    ("/untouched", Untouched),
    ("/init", Init),
    ("/write3", Write3),
    ("/read3", Read3),
    ("/read3write1", Read3Write1),
    ("/declared", Declared),
    ("/twice", ReadTwiceWriteRead),
    ("/absent", ReadAbsent),
]


def browser(proxy: RoundTripProxy, **settings) -> webtest.TestApp:
    config = {
        "memcache_servers": [proxy.address],
        "cookie_name": "sid",
        "secret_key": SECRET,
        **PATIENT,
        **settings,
    }
    return webtest.TestApp(webapp2.WSGIApplication(ROUTES, config={"webapp2_sessions": config}))


def cost(proxy: RoundTripProxy, app: webtest.TestApp, path: str) -> int:
    proxy.reset()
    app.get(path)
    return proxy.round_trips


def test_untouched_request_costs_nothing_and_sets_no_cookie(proxy, memcached):
    app = browser(proxy)
    before = memcached.stats()
    response = app.get("/untouched")
    assert proxy.round_trips == 0
    assert "Set-Cookie" not in response.headers
    assert memcached.stats()["cmd_get"] == before["cmd_get"]


def test_new_visitor_writing_three_variables_costs_one_round_trip(proxy, memcached):
    app = browser(proxy)
    before = memcached.stats()
    assert cost(proxy, app, "/write3") == 1
    after = memcached.stats()
    assert after["cmd_set"] - before["cmd_set"] == 4  # three variables and the record
    assert "sid" in app.cookies


def test_an_explicit_init_session_costs_one_round_trip_new_or_returning(proxy, memcached):
    app = browser(proxy)
    before = memcached.stats()
    assert cost(proxy, app, "/init") == 1  # the new session's record, stored at once
    assert memcached.stats()["cmd_set"] - before["cmd_set"] == 1
    assert "sid" in app.cookies
    assert cost(proxy, app, "/init") == 1  # the returning visitor's load, nothing written


def test_returning_visitor_reading_three_costs_one_round_trip_once_learned(proxy):
    app = browser(proxy)
    app.get("/write3")
    # The very first request of a handler class cannot know what it will read.
    assert cost(proxy, app, "/read3") <= 3
    assert cost(proxy, app, "/read3") == 1
    assert app.get("/read3").text == "aaa,bbb,ccc"


def test_declared_prefetch_costs_one_round_trip_from_the_first_request(proxy):
    app = browser(proxy)
    app.get("/write3")
    assert cost(proxy, app, "/declared") == 1


def test_returning_visitor_reading_three_and_writing_one_costs_two(proxy, memcached):
    app = browser(proxy)
    app.get("/write3")
    app.get("/read3write1")  # learning request
    before = memcached.stats()
    assert cost(proxy, app, "/read3write1") == 2
    after = memcached.stats()
    assert after["cmd_set"] - before["cmd_set"] == 1  # only what changed
    assert app.get("/read3").text == "aaa!!,bbb,ccc"


def test_rereads_and_reads_after_writes_cost_nothing_extra(proxy):
    app = browser(proxy)
    app.get("/write3")
    app.get("/twice")
    proxy.reset()
    response = app.get("/twice")
    assert response.text == "aaa|aaa|new"
    assert proxy.round_trips == 2  # one read batch, one write batch


def test_reading_a_name_the_session_never_stored_costs_no_extra_round_trip(proxy):
    app = browser(proxy, learn_prefetch=False)
    app.get("/write3")
    assert cost(proxy, app, "/absent") == 1  # the load; the record says it is absent


def test_a_wrong_guess_costs_one_extra_round_trip_never_a_wrong_value(proxy):
    app = browser(proxy)
    app.get("/write3")
    app.get("/read3")
    app.get("/read3")  # learned a, b, c for Read3
    app.get("/write3")  # rewrites a, b, c
    assert app.get("/read3").text == "aaa,bbb,ccc"


def test_example_counter_costs_one_read_and_one_write(proxy):
    site = webtest.TestApp(
        make_example_app({"memcache_servers": [proxy.address], "secret_key": SECRET, **PATIENT})
    )
    site.get("/")
    site.get("/")  # flashes are learned on the first returning request
    assert cost(proxy, site, "/") == 2
    assert cost(proxy, site, "/health") == 0


class WriteBig(SessionHandlerMixin, webapp2.RequestHandler):
    def get(self) -> None:
        self.set_session_var("small", 1)
        self.set_session_var("big", "x" * 1_500_000)


def test_a_write_the_server_refuses_is_logged_not_lost_silently(memcached, caplog):
    # Configured for 2 MB items against a server that keeps the 1 MB default:
    # only a confirmed write can notice that memcached refused it.
    config = {
        "memcache_servers": [memcached.address],
        "cookie_name": "sid",
        "item_size_max": 2 * 1024 * 1024,
        **PATIENT,
    }
    app = webtest.TestApp(
        webapp2.WSGIApplication([("/", WriteBig)], config={"webapp2_sessions": config})
    )
    with caplog.at_level("ERROR", logger="webapp2_sessions"):
        app.get("/")
    assert "refused" in caplog.text and "too large" in caplog.text
    sid = app.cookies["sid"]
    assert memcached.mg(f"{sid}-small") is not None
    assert memcached.mg(f"{sid}-big") is None


def test_strict_mode_raises_when_the_server_refuses_a_write(memcached):
    config = {
        "memcache_servers": [memcached.address],
        "item_size_max": 2 * 1024 * 1024,
        "strict": True,
        **PATIENT,
    }
    app = webapp2.WSGIApplication([("/", WriteBig)], config={"webapp2_sessions": config})
    seen = capture_errors(app, 503)
    webtest.TestApp(app).get("/", status=503)
    from webapp2_sessions import SessionUnavailableError

    assert isinstance(seen[0], SessionUnavailableError)
    assert "too large" in str(seen[0])
