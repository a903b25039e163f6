"""Automatic id rotation (``rotate_after``): a new id with the same variables, the
old id leading to it for ``rotate_grace`` seconds, against a real memcached."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import webapp2
import webtest
from conftest import PATIENT, SECRET, Handler, age_id
from hostile import COUNTERS
from rtproxy import RoundTripProxy

from webapp2_sessions import Session, SessionConfig
from webapp2_sessions.cookies import CookieCodec
from webapp2_sessions.keys import new_session_id
from webapp2_sessions.memcache import MemcacheStore
from webapp2_sessions.rotation import moving_line
from webapp2_sessions.sql import sessions_table, variables_table

HOUR = 3600


def build(address: str, **settings: Any) -> webapp2.WSGIApplication:
    config = {
        "memcache_servers": [address],
        "cookie_name": "sid",
        "secret_key": SECRET,
        "rotate_after": HOUR,
        "rotate_grace": 1,
        **PATIENT,
        **settings,
    }
    return webapp2.WSGIApplication([("/", Handler)], config={"webapp2_sessions": config})


def sid_of(browser: webtest.TestApp) -> str:
    return browser.cookies["sid"].strip('"').split(".")[0]


def stale(browser: webtest.TestApp, cookie: str) -> webtest.TestApp:
    """Another tab still sending ``cookie``."""
    tab = webtest.TestApp(browser.app)
    tab.set_cookie("sid", cookie)
    return tab


def wait_until_gone(memcached: Any, key: str, deadline: float = 15.0) -> None:
    until = time.monotonic() + deadline
    while memcached.mg(key) is not None:
        assert time.monotonic() < until, f"{key} still there after {deadline}s"
        time.sleep(0.1)


@pytest.fixture
def browser(memcached) -> webtest.TestApp:
    return webtest.TestApp(build(memcached.address))


def rotated(memcached: Any, browser: webtest.TestApp) -> tuple[str, str, str]:
    """A session with two variables whose id was just rotated: (old cookie, old, new)."""
    browser.get("/", {"set": ["a", "b"], "value": ["1", '"two"'], "flash": "hi"})
    cookie, old = browser.cookies["sid"], sid_of(browser)
    age_id(memcached, old, HOUR + 1)
    response = browser.get("/", {"get": "a"})
    assert response.json == {"a": 1}
    new = sid_of(browser)
    assert new != old
    return cookie, old, new


def test_an_old_id_is_replaced_on_its_next_request_with_the_same_variables(memcached, browser):
    _, old, new = rotated(memcached, browser)
    body = browser.get("/", {"get": ["a", "b"], "flashes": "1"}).json
    assert body == {"a": 1, "b": "two", "flashes": [["hi", "info"]]}
    header = json.loads(memcached.mg(new)[0].partition(b"\n")[0])
    assert header["i"] > header["c"]  # issued now; created when the session began
    assert memcached.mg(f"{old}-a") is None and memcached.mg(f"{old}-b") is None
    pointer = json.loads(memcached.mg(old)[0])
    assert pointer == {"v": 1, "c": header["c"], "i": pointer["i"], "to": new}
    assert pointer["i"] >= header["i"]  # left once the new id was issued
    assert memcached.mg(old)[1] <= 1  # the pointer lives rotate_grace seconds


def test_a_young_id_is_kept(memcached, browser):
    browser.get("/", {"set": "a", "value": "1"})
    sid = sid_of(browser)
    age_id(memcached, sid, HOUR - 60)
    response = browser.get("/", {"get": "a"})
    assert "Set-Cookie" not in response.headers and sid_of(browser) == sid


def test_the_old_cookie_within_the_grace_is_served_the_new_session_and_its_cookie(
    memcached, browser
):
    cookie, _old, new = rotated(memcached, browser)
    tab = stale(browser, cookie)
    response = tab.get("/", {"get": ["a", "b"]})
    assert response.json == {"a": 1, "b": "two"}
    assert response.headers["Set-Cookie"].startswith(f"sid={new}.")
    assert sid_of(tab) == new
    assert tab.get("/", {"set": "c", "value": "3"}).status_int == 200
    assert browser.get("/", {"get": "c"}).json == {"c": 3}  # one session for both tabs


def test_after_the_grace_the_old_cookie_opens_nothing(memcached, browser):
    cookie, old, new = rotated(memcached, browser)
    wait_until_gone(memcached, old)
    tab = stale(browser, cookie)
    response = tab.get("/", {"get": ["a", "b"], "sid": "1"})
    assert response.json["a"] is None and response.json["b"] is None
    assert response.json["sid"] not in (old, new)
    assert browser.get("/", {"get": "a"}).json == {"a": 1}  # the new id is unharmed


def test_an_old_cookie_used_during_the_grace_opens_nothing_after_it(memcached):
    browser = webtest.TestApp(build(memcached.address, rotate_grace=2))
    cookie, old, new = rotated(memcached, browser)
    assert stale(browser, cookie).get("/", {"get": "a"}).json == {"a": 1}  # within the grace
    assert memcached.mg(old)[1] > 2  # that load renewed the pointer's TTL, as any record's
    time.sleep(2.5)  # past the grace
    response = stale(browser, cookie).get("/", {"get": ["a", "b"], "sid": "1"})
    assert response.json["a"] is None and response.json["b"] is None
    assert response.json["sid"] not in (old, new)
    assert browser.get("/", {"get": "a"}).json == {"a": 1}  # the new id is unharmed


def test_a_logout_with_the_old_cookie_during_the_grace_ends_both_ids(memcached, browser):
    cookie, _old, new = rotated(memcached, browser)
    stale(browser, cookie).get("/", {"destroy": "1"})
    assert memcached.mg(new) is None and memcached.mg(f"{new}-a") is None
    assert browser.get("/", {"get": "a"}).json == {"a": None}
    assert stale(browser, cookie).get("/", {"get": "a"}).json == {"a": None}


def test_a_logout_with_the_new_cookie_during_the_grace_leaves_the_old_one_nothing(
    memcached, browser
):
    cookie, old, new = rotated(memcached, browser)
    browser.get("/", {"destroy": "1"})
    assert memcached.mg(new) is None
    response = stale(browser, cookie).get("/", {"get": "a", "sid": "1"})
    assert response.json["a"] is None and response.json["sid"] not in (old, new)


def test_a_logout_in_flight_under_the_old_id_ends_the_new_id_too(memcached, browser):
    browser.get("/", {"set": "a", "value": "1"})
    old = sid_of(browser)
    age_id(memcached, old, HOUR + 1)
    config = SessionConfig.from_mapping(PATIENT)  # no rotate_after: it only logs out
    store = MemcacheStore([memcached.address], timeout=5, connect_timeout=5)
    try:
        # Loaded before the rotation, ending after it (a slow logout request).
        in_flight = Session(config, store, old)
        in_flight.load()
        assert in_flight.stored
        browser.get("/", {"get": "a"})  # another tab rotates the id
        new = sid_of(browser)
        assert new != old
        in_flight.destroy()
    finally:
        store.close()
    assert memcached.mg(new) is None and memcached.mg(f"{new}-a") is None
    assert browser.get("/", {"get": "a"}).json == {"a": None}


def test_a_request_that_finds_another_rotation_under_way_keeps_the_old_id(memcached, browser):
    browser.get("/", {"set": "a", "value": "1"})
    old = sid_of(browser)
    age_id(memcached, old, HOUR + 1)
    # Another request claimed the record a moment ago and is copying it.
    line = moving_line(new_session_id(), time.time())
    assert memcached.raw(b"ms %s %d MA\r\n%s\r\n" % (old.encode(), len(line), line)) == (b"HD\r\n")
    response = browser.get("/", {"get": "a"})
    assert response.json == {"a": 1}  # served from the old id, as loaded
    assert "Set-Cookie" not in response.headers and sid_of(browser) == old


def test_two_tabs_rotating_at_once_agree_on_one_new_id(memcached, browser):
    browser.get("/", {"set": "a", "value": "1"})
    cookie, old = browser.cookies["sid"], sid_of(browser)
    age_id(memcached, old, HOUR + 1)
    tabs = [stale(browser, cookie) for _ in range(4)]
    barrier = threading.Barrier(len(tabs))
    seen: list[Any] = []

    def load(tab: webtest.TestApp) -> None:
        barrier.wait()
        seen.append(tab.get("/", {"get": "a"}))

    threads = [threading.Thread(target=load, args=(tab,)) for tab in tabs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.json for r in seen] == [{"a": 1}] * len(tabs)
    new_ids = {sid_of(tab) for tab in tabs} - {old}
    assert len(new_ids) == 1  # one winner; the others kept the old id for now
    (new,) = new_ids
    live = [k for k in memcached.keys() if len(k) == 32 and k not in (old, new)]
    assert live == []  # no second copy anywhere
    for tab in tabs:
        assert tab.get("/", {"get": "a"}).json == {"a": 1}
        assert sid_of(tab) == new  # the losers followed the pointer


@pytest.fixture
def proxy(memcached) -> Iterator[RoundTripProxy]:
    rt = RoundTripProxy(memcached.port)
    try:
        yield rt
    finally:
        rt.close()


def counters(memcached: Any) -> dict[str, int]:
    stats = memcached.stats()
    return {name: stats.get(name, 0) for name in COUNTERS}


def cost(memcached: Any, proxy: RoundTripProxy, **settings: Any) -> list[Any]:
    """Round trips and memcached's own counters of a read and of a read-and-write."""
    browser = webtest.TestApp(build(proxy.address, **settings))
    browser.get("/", {"set": "a", "value": "1"})
    browser.get("/", {"get": "a"})  # learned
    spent = []
    for params in ({"get": "a"}, {"get": "a", "set": "b", "value": "2"}):
        before = counters(memcached)
        proxy.reset()
        browser.get("/", params)
        after = counters(memcached)
        spent.append((proxy.round_trips, {k: after[k] - before[k] for k in after}))
    return spent


def test_rotation_off_or_not_due_costs_no_extra_round_trip_or_memcached_op(memcached, proxy):
    off = cost(memcached, proxy, rotate_after=None)
    on = cost(memcached, proxy, rotate_after=HOUR)
    assert [trips for trips, _ in off] == [1, 2]
    assert on == off


def test_the_rotating_request_costs_five_more_round_trips(memcached, proxy):
    browser = webtest.TestApp(build(proxy.address))
    browser.get("/", {"set": "a", "value": "1"})
    browser.get("/", {"get": "a"})
    age_id(memcached, sid_of(browser), HOUR + 1)
    proxy.reset()
    browser.get("/", {"get": "a"})
    # load; claim, the variables read again once claimed, copy, pointer, old variables
    assert proxy.round_trips == 1 + 5


def test_a_remembered_session_stays_remembered_across_rotation(memcached, browser):
    class Remembers(Handler):
        def get(self) -> None:
            if "remember" in self.request.GET:
                self.set_session_expiry(30 * 24 * HOUR)
            super().get()

    app = build(memcached.address)
    app.router.add(webapp2.Route("/remember", Remembers))
    tab = webtest.TestApp(app)
    tab.get("/remember", {"remember": "1", "set": "a", "value": "1"})
    old = sid_of(tab)
    age_id(memcached, old, HOUR + 1)
    response = tab.get("/", {"get": "a"})
    assert sid_of(tab) != old
    assert "Max-Age=2592000" in response.headers["Set-Cookie"]


def test_rotation_with_the_database_moves_the_rows(memcached, sqlite_url):
    engine = sa.create_engine(sqlite_url)
    try:
        browser = webtest.TestApp(build(memcached.address, database=engine, sweep_percent=0))
        cookie, _old, new = rotated(memcached, browser)
        with engine.connect() as conn:
            ids = {row.id for row in conn.execute(sa.select(sessions_table.c.id))}
            names = conn.execute(
                sa.select(variables_table.c.name).where(variables_table.c.session_id == new)
            )
            assert {row.name for row in names} == {"a", "b", ""}
        assert ids == {new}
        assert stale(browser, cookie).get("/", {"get": "b"}).json == {"b": "two"}
        memcached.raw(b"flush_all\r\n")
        assert browser.get("/", {"get": ["a", "b"]}).json == {"a": 1, "b": "two"}
        assert stale(browser, cookie).get("/", {"get": "a"}).json == {"a": None}
    finally:
        engine.dispose()


def test_a_session_rebuilt_from_the_database_after_a_rotation_is_not_rotated_again(
    memcached, engine
):
    browser = webtest.TestApp(build(memcached.address, database=engine, sweep_percent=0))
    _, _, new = rotated(memcached, browser)
    memcached.raw(b"flush_all\r\n")  # the record is rebuilt from the row, issue time and all
    response = browser.get("/", {"get": "a"})
    assert response.json == {"a": 1}
    assert "Set-Cookie" not in response.headers and sid_of(browser) == new


def test_the_codec_signs_the_new_id(memcached, browser):
    _, _, new = rotated(memcached, browser)
    assert CookieCodec([SECRET]).decode(browser.cookies["sid"]) == new
