"""Trust under faults: interrupted batches, stalled nodes, logouts during outages.

Every test runs against real memcached servers; a stall is a SIGSTOP (the
node keeps its memory, as in a network partition), a crash is a SIGKILL.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pytest
import webapp2
import webtest
from conftest import PATIENT, SECRET, Handler, Untouched, capture_errors

from webapp2_sessions import MemcacheStore, Session, SessionConfig, SessionUnavailableError, saving
from webapp2_sessions.lifecycle import Lifecycle
from webapp2_sessions.stores import Get, Item, Set


class Interrupted(BaseException):
    """What a per-request time limit raises from its signal handler."""


def app_for(memcached: Any, **settings: Any) -> webapp2.WSGIApplication:
    """An app on ``memcached``; tests that stall it set a short ``timeout``."""
    config = {
        "memcache_servers": [memcached.address],
        "cookie_name": "sid",
        "secret_key": SECRET,
        **PATIENT,
        **settings,
    }
    return webapp2.WSGIApplication(
        [("/", Handler), ("/untouched", Untouched)], config={"webapp2_sessions": config}
    )


# --------------------------------------------------------------------------- interrupted batches


def test_an_interrupt_in_the_middle_of_recv_never_hands_its_replies_to_the_next_visitor(
    memcached,
):
    # One connection, so the next batch would reuse the interrupted one.
    store = MemcacheStore([memcached.address], timeout=30, max_connections=1)
    store.execute("alice", [Set("alice-secret", b"alice's", ttl=60)])
    store.execute("bob", [Set("bob-secret", b"bob's", ttl=60)])

    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        memcached.pause()  # the server holds its reply back
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            with pytest.raises(Interrupted):
                store.execute("alice", [Get("alice-secret")])  # blocks in recv
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            memcached.resume()  # alice's reply is now sent to whoever listens
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert store.connections(memcached.address) == 0  # closed, not pooled
    (bob,) = store.execute("bob", [Get("bob-secret")])
    assert isinstance(bob, Item) and bob.value == b"bob's"
    assert store.available("alice")  # an interrupt is not an outage
    store.close()


@pytest.mark.parametrize("exception", [KeyboardInterrupt, SystemExit, Interrupted])
def test_any_exception_while_a_batch_is_sent_or_read_closes_that_connection(
    memcached, monkeypatch, exception
):
    from webapp2_sessions.memcache import store as store_module

    store = MemcacheStore([memcached.address], timeout=30, max_connections=1)
    store.execute("r", [Set("mine", b"1", ttl=60), Set("theirs", b"2", ttl=60)])
    real = store_module.read_replies

    def read_half(sock: Any, ops: Any) -> Any:
        sock.recv(1)  # part of a reply read, the rest still on the socket
        raise exception

    monkeypatch.setattr(store_module, "read_replies", read_half)
    with pytest.raises(exception):
        store.execute("r", [Get("mine")])
    monkeypatch.setattr(store_module, "read_replies", real)
    assert store.connections(memcached.address) == 0
    (theirs,) = store.execute("r", [Get("theirs")])
    assert isinstance(theirs, Item) and theirs.value == b"2"
    store.close()


# --------------------------------------------------------------------------- stalled nodes


def test_a_stalled_node_costs_no_visitor_their_session(memcached):
    app = app_for(memcached, timeout=2, dead_retry=1)
    browser = webtest.TestApp(app)
    browser.get("/", {"set": ["cart", "user"], "value": ["[1, 2]", '"ann"']})
    cookie = browser.cookies["sid"]
    memcached.pause()
    try:
        for params in ({"get": "cart"}, {"set": "cart", "value": "[3]"}, {"incr": "n"}):
            response = browser.get("/", params, status=200)  # the page renders
            # The cookie is neither expired nor replaced.
            assert "sid=" not in response.headers.get("Set-Cookie", "")
            assert browser.cookies["sid"] == cookie
        assert browser.get("/", {"get": "cart"}).json == {"cart": None}  # defaults
    finally:
        memcached.resume()
    time.sleep(1.2)  # dead_retry runs out
    body = browser.get("/", {"get": ["cart", "user", "n"]}, status=200).json
    # Served with all its data; the writes made during the outage were not kept.
    assert body == {"cart": [1, 2], "user": "ann", "n": None}
    assert browser.cookies["sid"] == cookie


def test_a_stalled_node_in_strict_mode_raises_and_then_serves_the_session_again(memcached):
    app = app_for(memcached, timeout=2, dead_retry=1, strict=True)
    seen = capture_errors(app, 503)
    browser = webtest.TestApp(app)
    browser.get("/", {"set": "user", "value": '"ann"'})
    cookie = browser.cookies["sid"]
    memcached.pause()
    try:
        response = browser.get("/", {"get": "user"}, status=503)
        assert "sid=" not in response.headers.get("Set-Cookie", "")
    finally:
        memcached.resume()
    assert seen and all(isinstance(e, SessionUnavailableError) for e in seen)
    time.sleep(1.2)
    assert browser.get("/", {"get": "user"}).json == {"user": "ann"}
    assert browser.cookies["sid"] == cookie


def test_a_node_that_comes_back_empty_starts_its_visitors_afresh(memcached):
    app = app_for(memcached, timeout=2, dead_retry=0.5)
    browser = webtest.TestApp(app)
    browser.get("/", {"set": "user", "value": '"ann"'})
    old = browser.cookies["sid"]
    memcached.restart()  # a crash: memory is gone
    body = browser.get("/", {"get": "user", "set": "x", "value": "1", "sid": "1"}).json
    assert body["user"] is None and body["sid"] != old.split(".")[0]
    assert browser.cookies["sid"].split(".")[0] == body["sid"]


# --------------------------------------------------------------------------- logouts that hold


def test_a_logout_lost_to_an_outage_is_completed_by_this_process_once_the_node_answers(
    memcached,
):
    app = app_for(memcached, timeout=2, dead_retry=0.5)
    browser, other = webtest.TestApp(app), webtest.TestApp(app)
    browser.get("/", {"set": "secret", "value": '"s"'})
    other.get("/", {"set": "mine", "value": "1"})
    sid = browser.cookies["sid"].split(".")[0]
    stolen = browser.cookies["sid"]
    memcached.pause()
    try:
        browser.get("/", {"destroy": "1"}, status=200)
        assert "sid" not in browser.cookies  # expired in the browser at once
    finally:
        memcached.resume()
    assert memcached.mg(sid) is not None
    time.sleep(0.6)
    # Another process serving the stolen cookie right now would still find
    # the record: that is the window the README states. This process's next
    # request (any visitor's) completes the deletion in its own batch.
    assert other.get("/", {"get": "mine"}).json == {"mine": 1}
    # The deletion marks the record, reads back the names the logout could not
    # (its load had failed) and deletes them too.
    assert memcached.mg(sid) is None and memcached.mg(f"{sid}-secret") is None
    thief = webtest.TestApp(app)
    thief.set_cookie("sid", stolen)
    assert thief.get("/", {"get": "secret"}).json == {"secret": None}


def test_a_second_process_stops_serving_a_logged_out_session_once_the_first_has_completed_it(
    memcached,
):
    # Two applications with stores of their own: two worker processes.
    first, second = app_for(memcached, timeout=2, dead_retry=0.5), app_for(memcached)
    browser = webtest.TestApp(first)
    browser.get("/", {"set": "secret", "value": '"s"'})
    stolen = browser.cookies["sid"]
    memcached.pause()
    try:
        browser.get("/", {"destroy": "1"}, status=200)
    finally:
        memcached.resume()
    time.sleep(0.6)
    webtest.TestApp(first).get("/untouched")  # touches no session: completes nothing
    webtest.TestApp(first).get("/", {"get": "x"})  # a new visitor who reads: no store use
    thief = webtest.TestApp(second)
    thief.set_cookie("sid", stolen)
    # The window the README states: until then, another process still finds it.
    assert thief.get("/", {"get": "secret"}).json == {"secret": "s"}
    webtest.TestApp(first).get("/", {"set": "x", "value": "1"})  # first store-using request
    thief = webtest.TestApp(second)
    thief.set_cookie("sid", stolen)
    assert thief.get("/", {"get": "secret"}).json == {"secret": None}


def test_regeneration_honours_a_logout_that_completed_while_it_ran(memcached, monkeypatch):
    """The logout lands between the copy to the new id and the final check."""
    app = app_for(memcached)
    browser = webtest.TestApp(app)
    browser.get("/", {"set": "secret", "value": '"s"'})
    cookie = browser.cookies["sid"]
    old = cookie.split(".")[0]
    real = saving.store_new
    raced: list[str] = []

    def save_then_logout(self: Lifecycle, *args: Any, **kwargs: Any) -> bool:
        stored = real(self, *args, **kwargs)
        if not raced and self.sid is not None:  # the other tab's logout, start to finish
            raced.append(self.sid)
            other = webtest.TestApp(app)
            other.set_cookie("sid", cookie)
            other.get("/", {"destroy": "1"})
        return stored

    monkeypatch.setattr(saving, "store_new", save_then_logout)
    body = browser.get("/", {"regen": "1", "get": "secret", "sid": "1"}).json
    assert raced and body["secret"] is None
    new = raced[0]
    assert memcached.mg(new) is None and memcached.mg(f"{new}-secret") is None
    assert memcached.mg(old) is None and memcached.mg(f"{old}-secret") is None


def test_regeneration_after_a_logout_began_writes_nothing_under_a_new_id(memcached):
    app = app_for(memcached)
    browser = webtest.TestApp(app)
    browser.get("/", {"set": "secret", "value": '"s"'})
    cookie = browser.cookies["sid"]
    made: list[str] = []

    class RegenAfterLogout(Handler):
        def get(self) -> None:
            self.session.load("secret")  # loaded before the logout
            other = webtest.TestApp(app)
            other.set_cookie("sid", cookie)
            other.get("/", {"destroy": "1"})
            self.regenerate_session_id()
            made.append(self.session_id)
            self.response.write(repr(self.get_session_var("secret")))

    app.router.add(webapp2.Route("/regen", RegenAfterLogout))
    response = browser.get("/regen")
    assert response.text == "None"
    assert not [k for k in memcached.keys() if made[0] in k]


# --------------------------------------------------------------------------- concurrency


def test_a_thread_per_request_server_opens_no_more_connections_than_it_runs_at_once(memcached):
    store = MemcacheStore([memcached.address], timeout=30)
    config = SessionConfig.from_mapping({"store": store})
    memcached.stats()  # memcached counts the fixture's start-up probe late
    before = memcached.stats()["total_connections"]
    gate = threading.Semaphore(4)  # at most four requests at a time

    def request(i: int) -> None:
        with gate:
            session = Session(config, store, None)
            session[f"n{i % 7}"] = i
            session.save()

    for start in range(0, 300, 20):
        threads = [threading.Thread(target=request, args=(i,)) for i in range(start, start + 20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert store.connections(memcached.address) <= 4
    # Four pooled connections, and the connection that asks for the stats.
    assert memcached.stats()["total_connections"] - before <= 4 + 1
    store.close()
