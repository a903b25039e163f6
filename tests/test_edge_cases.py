"""Edge cases found in review, each pinned to its fix."""

from __future__ import annotations

import time

import pytest
import webapp2
import webtest
from conftest import PATIENT, SECRET, Handler, SessionHandlerMixin, make_app
from memcached import MemcachedServer

from webapp2_sessions import (
    ConfigurationError,
    MemcacheStore,
    MemoryStore,
    Session,
    SessionConfig,
)
from webapp2_sessions.stores import Failed, Get, Incr, Set


@pytest.fixture(params=["memcached", "embedded"])
def store_and_config(request):
    if request.param == "embedded":
        yield MemoryStore(), SessionConfig.from_mapping({})
        return
    server = MemcachedServer().start()
    try:
        config = SessionConfig.from_mapping({"memcache_servers": [server.address], **PATIENT})
        yield MemcacheStore([server.address], **PATIENT), config
    finally:
        server.stop()


def stored(store, config, **values) -> str:
    session = Session(config, store, None)
    for name, value in values.items():
        session[name] = value
    session.save()
    return session.session_id


def test_atomic_operations_apply_this_requests_pending_writes_first(store_and_config):
    store, config = store_and_config
    sid = stored(store, config, n=1, m=1, k=1)
    session = Session(config, store, sid)
    session["n"] = 5
    assert session.incr("n") == 6
    del session["m"]
    assert session.incr("m") == 1
    session["k"] = 100
    assert session.update_var("k", lambda old: old + 1) == 101
    again = Session(config, store, sid)
    assert (again["n"], again["m"], again["k"]) == (6, 1, 101)


def test_counters_work_under_the_pickle_serializer():
    server = MemcachedServer().start()
    try:
        config = SessionConfig.from_mapping(
            {"memcache_servers": [server.address], "serializer": "pickle", **PATIENT}
        )
        store = MemcacheStore([server.address], **PATIENT)
        session = Session(config, store, None)
        assert session.incr("c") == 1
        assert session.incr("c") == 2
        assert Session(config, store, session.session_id)["c"] == 2
    finally:
        server.stop()


def test_a_write_by_a_request_with_a_stale_index_is_not_hidden(store_and_config):
    store, config = store_and_config
    sid = stored(store, config, cart=["old"], user="bob")
    remover, writer = Session(config, store, sid), Session(config, store, sid)
    remover.get("user")
    writer.get("user")  # both loaded the index while it listed 'cart'
    del remover["cart"]
    remover.save()
    writer["cart"] = ["new"]
    writer.save()
    after = Session(config, store, sid)
    assert dict(after) == {"cart": ["new"], "user": "bob"}


def test_deleting_a_name_another_request_just_added_unlists_it(store_and_config):
    store, config = store_and_config
    sid = stored(store, config, user="bob")
    adder, remover = Session(config, store, sid), Session(config, store, sid)
    adder.get("user")
    remover.get("user")
    adder["tmp"] = 1
    adder.save()
    remover.discard("tmp")
    remover.save()
    after = Session(config, store, sid)
    assert after.get("tmp") is None
    assert dict(after) == {"user": "bob"}
    assert after.lost == frozenset()


def test_a_value_written_before_a_fresh_start_still_reads_back(store_and_config):
    store, config = store_and_config
    session = Session(config, store, "0" * 12 + "4" + "0" * 3 + "8" + "0" * 15)  # never issued
    session["user"] = "bob"
    assert session.get("user") == "bob"
    assert "user" in session and list(session) == ["user"]


@pytest.mark.parametrize("key", ["ttl", "idle_timeout", "absolute_timeout"])
def test_lifetimes_beyond_five_years_are_refused(key):
    with pytest.raises(ConfigurationError, match=key):
        SessionConfig.from_mapping({key: 12 * 365 * 24 * 3600})


@pytest.mark.parametrize(
    "settings",
    [
        {"cookie_name": "sid\n"},
        {"key_prefix": "app:\n"},
        {"cookie_args": {"path": "/\r\nX-Injected: 1"}},
        {"cookie_args": {"domain": "example.com\r\nX-Injected: 1"}},
        {"cookie_args": {"samesite": "None"}},  # needs secure=True
    ],
)
def test_settings_that_would_break_headers_or_keys_are_refused(settings):
    with pytest.raises(ConfigurationError):
        SessionConfig.from_mapping(settings)


def test_a_ready_made_pymemcache_client_is_refused_with_what_to_use_instead():
    from pymemcache.client.base import Client

    with pytest.raises(ConfigurationError, match="memcache_servers") as caught:
        SessionConfig.from_mapping({"client": Client(("127.0.0.1", 1))})
    assert caught.value.key == "client"


def test_a_refused_record_for_a_new_session_is_logged_not_a_500(memcached, caplog):
    class Many(SessionHandlerMixin, webapp2.RequestHandler):
        def get(self):
            for i in range(6000):  # an index over the 1 MB item limit
                self.set_session_var(f"variable-number-{i:05d}-" + "x" * 150, i)
            self.response.write("ok")

    config = {"memcache_servers": [memcached.address], "cookie_name": "sid", **PATIENT}
    app = webtest.TestApp(
        webapp2.WSGIApplication([("/", Many)], config={"webapp2_sessions": config})
    )
    with caplog.at_level("ERROR", logger="webapp2_sessions"):
        response = app.get("/", status=200)
    assert "Set-Cookie" not in response.headers
    assert "refused" in caplog.text
    assert [k for k in memcached.keys() if "variable-number" in k] == []


def test_abort_with_an_app_error_handler_keeps_the_cookie(memcached):
    class Forbidden(SessionHandlerMixin, webapp2.RequestHandler):
        def get(self):
            self.set_session_var("x", 1)
            self.abort(403)

    def on_403(request, response, exception):
        response.set_status(403)
        response.write("no")

    config = {"memcache_servers": [memcached.address], "cookie_name": "sid", **PATIENT}
    app = webapp2.WSGIApplication(
        [("/", Forbidden), ("/read", Handler)], config={"webapp2_sessions": config}
    )
    app.error_handlers[403] = on_403
    browser = webtest.TestApp(app)
    response = browser.get("/", status=403)
    assert "sid=" in response.headers["Set-Cookie"]
    assert response.headers["Vary"] == "Cookie"
    assert browser.get("/read", {"get": "x"}).json == {"x": 1}


def test_incr_and_update_renew_a_persistent_cookie(memcached):
    app = make_app(
        {
            "memcache_servers": [memcached.address],
            "cookie_name": "sid",
            "cookie_args": {"max_age": 3600},
        }
    )
    app.get("/", {"set": "a", "value": "1"})
    response = app.get("/", {"incr": "n"})
    assert "Max-Age=3600" in response.headers["Set-Cookie"]


def test_close_releases_every_pooled_connection(memcached):
    import threading

    store = MemcacheStore([memcached.address], max_connections=8, **PATIENT)
    inside = threading.Barrier(4, timeout=30)

    def hold() -> None:
        # Four batches at once: each needs a connection of its own.
        store.execute("r", [Get("k")], on_sent=lambda: inside.wait())

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.connections(memcached.address) == 4
    before = memcached.stats()["curr_connections"]
    store.close()
    assert store.connections(memcached.address) == 0
    deadline = time.monotonic() + 10
    while memcached.stats()["curr_connections"] > before - 4:
        assert time.monotonic() < deadline, "memcached still sees the connections"
        time.sleep(0.05)


def test_the_embedded_store_follows_memcached_on_ttl_zero_and_overflow():
    store = MemoryStore(clock=lambda: 1e9)
    store.execute("r", [Set("forever", b"1", ttl=0), Set("big", str(10**30).encode(), ttl=60)])
    assert store.execute("r", [Get("forever")])[0] is not None
    assert isinstance(store.execute("r", [Incr("big", 1, 60)])[0], Failed)


def test_a_slow_reply_alone_does_not_end_the_nodes_sessions():
    server = MemcachedServer().start()
    try:
        app = make_app(
            {
                "memcache_servers": [server.address],
                "cookie_name": "sid",
                "secret_key": SECRET,
                # One timeout while paused; far above any reply time after.
                "timeout": 2,
                "dead_retry": 0.5,
            }
        )
        app.get("/", {"set": "user", "value": '"bob"'})
        with server.paused():  # one slow reply, nothing lost
            app.get("/", {"get": "user"}, status=200)
        time.sleep(0.6)  # a timer, not a race: past the dead_retry that began before the resume
        assert app.get("/", {"get": "user"}).json == {"user": "bob"}
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("sid=abc", "abc"),
        ("a=1; sid=abc; b=2", "abc"),
        ("xsid=zzz; sid_old=yyy; sid=abc", "abc"),
        ("sid = abc ", "abc"),
        ('sid="abc"', "abc"),
        ("sid=first; sid=last", "last"),
        ("xsid=abc", None),
        ("sid", None),
        ("", None),
        ("sid=a=b", "a=b"),
        # Only ';' separates cookie-pairs: text inside another cookie's value,
        # quoted or not, is never taken for ours (it could defeat __Host-).
        ("sid=abc, theme=dark", "abc, theme=dark"),
        ("theme=dark,sid=abc", None),
        ("x=1,sid=evil; sid=abc", "abc"),
        ('x="a; sid=evil"', None),
        ('x="a; sid=evil"; sid=abc', "abc"),
        ('x = "a;sid=evil;" ; sid="abc"', "abc"),
        ('x="unterminated; sid=evil', None),
        ('sid=abc; x="a; sid=evil"', "abc"),
    ],
)
def test_the_session_cookie_is_found_by_exact_name_and_the_last_one_wins(header, expected):
    from webapp2_sessions.cookies import read_cookie

    assert read_cookie({"HTTP_COOKIE": header}, "sid") == expected


def test_a_set_cookie_for_our_name_written_by_the_handler_is_replaced_not_doubled(app_on):
    class Page(SessionHandlerMixin, webapp2.RequestHandler):
        def get(self):
            self.response.set_cookie("sid", "handler-value")
            self.response.set_cookie("sidx", "kept")
            self.set_session_var("a", 1)

    response = app_on(routes=[("/", Page)], cookie_name="sid").get("/")
    cookies = response.headers.getall("Set-Cookie")
    ours = [c for c in cookies if c.startswith("sid=")]
    assert len(ours) == 1 and "handler-value" not in ours[0]
    assert any(c.startswith("sidx=kept") for c in cookies)
