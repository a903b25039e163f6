"""Work that overlaps the write batch's round trip (``on_sent``).

The server is paused with SIGSTOP (``MemcachedServer.pause``, which waits until
every thread of it is stopped) so that what happens while a batch is in flight
can be observed: a callback that resumes it proves it ran after sending and
before waiting.
"""

from __future__ import annotations

import time

import pytest
import webapp2
import webtest
from conftest import PATIENT, SessionHandlerMixin

from webapp2_sessions import MemcacheStore, MemoryStore, SessionUnavailableError
from webapp2_sessions.stores import Get, Item, Set


def test_on_sent_runs_after_sending_and_before_waiting_for_replies(memcached):
    # A timeout far above any reply time: this test is not about timeouts.
    store = MemcacheStore([memcached.address], **PATIENT)
    store.execute("r", [Get("warm")])  # connected
    calls = []

    def on_sent() -> None:
        calls.append("sent")
        memcached.resume()  # the replies can only come after this

    memcached.pause()
    try:
        results = store.execute("r", [Set("k", b"v", ttl=60), Get("k")], on_sent=on_sent)
    finally:
        memcached.resume()
    store.close()
    assert calls == ["sent"]
    assert results[0] is True and isinstance(results[1], Item) and results[1].value == b"v"


def test_without_on_sent_a_paused_server_is_a_timeout(memcached):
    # The control for the test above: the pause itself is what makes it fail.
    store = MemcacheStore([memcached.address], timeout=0.3)
    store.execute("r", [Get("warm")])
    with memcached.paused(), pytest.raises(SessionUnavailableError):
        store.execute("r", [Set("k", b"v", ttl=60)])
    store.close()


def test_an_error_in_on_sent_is_raised_after_the_replies_and_the_connection_stays_in_step(
    memcached,
):
    store = MemcacheStore([memcached.address], **PATIENT)

    def on_sent() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.execute("r", [Set("a", b"1", ttl=60), Get("a")], on_sent=on_sent)
    # The replies to the failed call were consumed: the next batch reads its own.
    results = store.execute("r", [Get("a"), Set("b", b"2", ttl=60), Get("b")])
    assert [r.value if isinstance(r, Item) else r for r in results] == [b"1", True, b"2"]


def test_the_embedded_store_calls_on_sent_once():
    store = MemoryStore()
    calls = []
    store.execute("r", [Set("a", b"1")], on_sent=lambda: calls.append(1))
    assert calls == [1]


class Writer(SessionHandlerMixin, webapp2.RequestHandler):
    def get(self) -> None:
        self.set_session_var("a", 1)
        self.response.write("ok")


def test_a_cookie_prepared_for_a_batch_that_then_failed_is_not_sent(memcached):
    settings = {"memcache_servers": [memcached.address], "timeout": 0.3, "cookie_name": "sid"}
    app = webtest.TestApp(
        webapp2.WSGIApplication([("/", Writer)], config={"webapp2_sessions": settings})
    )
    first = app.get("/")  # connects; its session is stored
    assert first.headers["Set-Cookie"].startswith("sid=")
    app.reset()
    with memcached.paused():
        response = app.get("/")  # the batch is sent; its replies never come in time
    assert response.status_int == 200
    assert not [c for c in response.headers.getall("Set-Cookie") if c.startswith("sid=")]
    assert response.headers["Cache-Control"] == "no-cache, private"
    assert response.headers["Vary"] == "Cookie"
    # The batch did go out (the server ran it once resumed), so the cookie was
    # prepared while it was in flight and then withheld.
    deadline = time.monotonic() + 10
    while len([k for k in memcached.keys() if len(k) == 32]) < 2:
        assert time.monotonic() < deadline, memcached.keys()
        time.sleep(0.01)
