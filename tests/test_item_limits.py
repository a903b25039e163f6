"""Items past memcached's size limit: refused alike by both stores, and a
refused write leaves the session whole."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import webapp2
import webtest

from webapp2_sessions import MemoryStore, SessionHandlerMixin
from webapp2_sessions.stores import Failed, Get, Item, Set


def test_the_embedded_store_refuses_what_memcached_refuses(memcached):
    limit = 1024 * 1024
    store = MemoryStore(item_size_max=limit)
    for key in ("a", "k" * 200):
        largest = limit - len(key) - 59
        for size, stored in ((largest, True), (largest + 1, False)):
            mine = store.execute("r", [Set(key, b"x" * size, ttl=60)])[0]
            reply = memcached.raw(b"ms %s %d T60\r\n%s\r\n" % (key.encode(), size, b"x" * size))
            assert (mine is True) is stored is reply.startswith(b"HD"), (key, size, reply)
            if not stored:
                assert isinstance(mine, Failed) and "too large" in mine.reason


def test_the_embedded_store_refuses_an_append_past_the_limit_as_memcached_does(memcached):
    store = MemoryStore(item_size_max=1024 * 1024)
    store.execute("r", [Set("k", b"x" * 1_000_000, ttl=60)])
    memcached.raw(b"ms k 1000000 T60\r\n%s\r\n" % (b"x" * 1_000_000))
    mine = store.execute("r", [Set("k", b"y" * 100_000, mode="append")])[0]
    reply = memcached.raw(b"ms k 100000 MA\r\n%s\r\n" % (b"y" * 100_000))
    assert mine is False and reply == b"NS\r\n"  # NOT_STORED, the item unchanged
    (item,) = store.execute("r", [Get("k")])
    assert isinstance(item, Item) and len(item.value) == 1_000_000


class Pages(SessionHandlerMixin, webapp2.RequestHandler):
    def get(self) -> None:
        q = self.request.GET
        if "names" in q:  # long names: every one is a line of the session's index
            for i in range(int(q["names"])):
                self.set_session_var(f"{i:04d}" + "n" * 100_000, i)
        if "flash" in q:
            for _ in range(int(q["flash"])):
                self.add_flash("f" * 100_000)
        if "set" in q:
            self.set_session_var(q["set"], q["value"])
        self.response.write(repr(self.get_session_var(q.get("get", "user"))))


def browser_on(settings: dict[str, Any]) -> webtest.TestApp:
    config = {"webapp2_sessions": {"cookie_name": "sid", **settings}}
    return webtest.TestApp(webapp2.WSGIApplication([("/", Pages)], config=config))


@pytest.fixture(params=["memcached", "embedded"])
def settings(request, memcached) -> dict[str, Any]:
    if request.param == "memcached":
        return {"memcache_servers": [memcached.address], "timeout": 10, "connect_timeout": 10}
    return {}


def test_a_write_the_index_cannot_hold_is_reported_and_leaves_the_session_whole(settings, caplog):
    browser = browser_on(settings)
    browser.get("/", {"set": "user", "value": "ann"})
    cookie = browser.cookies["sid"]
    with caplog.at_level(logging.ERROR, "webapp2_sessions"):
        response = browser.get("/", {"names": "12"}, status=200)  # 1.2 MB of index lines
    assert "refused" in caplog.text
    # Not half-ended: the cookie stands and the session still serves its data.
    assert "sid=" not in response.headers.get("Set-Cookie", "")
    assert browser.cookies["sid"] == cookie
    assert browser.get("/", {"get": "user"}).text == "'ann'"
    assert browser.get("/", {"get": "0000" + "n" * 100_000}).text == "None"


def test_a_flash_list_cannot_grow_past_an_item_on_either_store(settings, caplog):
    browser = browser_on(settings)
    browser.get("/", {"set": "user", "value": "ann"})
    with caplog.at_level(logging.ERROR, "webapp2_sessions"):
        for _ in range(4):  # 4 x 4 x 133 kB of base64 lines: past 1 MB
            browser.get("/", {"flash": "4"}, status=200)
    assert "refused" in caplog.text
    assert browser.get("/", {"get": "user"}).text == "'ann'"
