"""Remember me: ``set_expiry`` makes the cookie persistent and keeps the session
on the server at least as long, against a real memcached (and SQLite)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
import webapp2
import webtest
from conftest import PATIENT, SECRET, Handler

from webapp2_sessions import MemoryStore, Session, SessionConfig, expiry
from webapp2_sessions.record import Record
from webapp2_sessions.sql import sessions_table
from webapp2_sessions.stores import Item

DAY = 24 * 3600
MONTH = 30 * DAY


class Remembers(Handler):
    """The tests' handler, plus ``?remember=<seconds>|none`` and ``?regen``."""

    def get(self) -> None:
        remember = self.request.GET.get("remember")
        if remember is not None:
            self.set_session_expiry(None if remember == "none" else int(remember))
        for name in self.request.GET.getall("update"):
            self.update_session_var(name, lambda old: (old or 0) + 1)
        super().get()


def build(memcached: Any, **settings: Any) -> webapp2.WSGIApplication:
    config = {
        "memcache_servers": [memcached.address],
        "cookie_name": "sid",
        "secret_key": SECRET,
        "ttl": 600,
        **PATIENT,
        **settings,
    }
    return webapp2.WSGIApplication([("/", Remembers)], config={"webapp2_sessions": config})


def set_cookie(response: webtest.TestResponse) -> str:
    headers = [v for k, v in response.headerlist if k == "Set-Cookie" and v.startswith("sid=")]
    assert len(headers) == 1, response.headerlist
    return headers[0]


def sid_of(browser: webtest.TestApp) -> str:
    return browser.cookies["sid"].split(".")[0]


@pytest.fixture(autouse=True)
def _forget_what_this_process_learned() -> None:
    expiry._known.clear()


def test_remember_me_sets_a_persistent_cookie_and_writes_renew_it(memcached):
    browser = webtest.TestApp(build(memcached))
    first = browser.get("/", {"set": "user", "value": '"ann"', "remember": str(MONTH)})
    header = set_cookie(first)
    assert f"Max-Age={MONTH}" in header and "expires=" in header
    later = browser.get("/", {"set": "cart", "value": "[1]"})
    assert f"Max-Age={MONTH}" in set_cookie(later)
    assert browser.get("/", {"get": "user"}).json == {"user": "ann"}


def test_a_reader_in_another_process_is_sent_the_persistent_cookie_again(memcached):
    browser = webtest.TestApp(build(memcached))
    browser.get("/", {"set": "user", "value": '"ann"', "remember": str(MONTH)})
    cookie = browser.cookies["sid"]
    elsewhere = webtest.TestApp(build(memcached))  # its renewals know nothing yet
    elsewhere.set_cookie("sid", cookie)
    response = elsewhere.get("/", {"get": "user"})
    assert response.json == {"user": "ann"}
    assert f"Max-Age={MONTH}" in set_cookie(response)


def test_set_expiry_none_returns_to_a_browser_session_cookie(memcached):
    browser = webtest.TestApp(build(memcached))
    browser.get("/", {"set": "user", "value": '"ann"', "remember": str(MONTH)})
    header = set_cookie(browser.get("/", {"remember": "none"}))
    assert "Max-Age" not in header and "expires" not in header
    later = browser.get("/", {"set": "x", "value": "1"})
    assert "Set-Cookie" not in later.headers  # a session cookie is not sent again
    sid = sid_of(browser)
    assert memcached.mg(sid)[1] <= 600  # back to the settings' lifetime
    assert memcached.mg(f"{sid}-user")[1] <= 600


def test_the_record_and_every_variable_live_as_long_as_the_session_is_remembered(memcached):
    browser = webtest.TestApp(build(memcached))
    browser.get("/", {"set": "early", "value": "1", "flash": "hi"})
    sid = sid_of(browser)
    assert memcached.mg(f"{sid}-early")[1] <= 600
    browser.get("/", {"set": "late", "value": "2", "remember": str(MONTH)})
    for key in (sid, f"{sid}-early", f"{sid}-late", f"{sid}-!flashes"):
        ttl = memcached.mg(key)[1]
        assert MONTH - 60 < ttl <= MONTH, key


def test_a_lifetime_over_thirty_days_is_not_read_by_memcached_as_a_past_timestamp(memcached):
    browser = webtest.TestApp(build(memcached))
    browser.get("/", {"set": "a", "value": "1", "remember": str(90 * DAY)})
    sid = sid_of(browser)
    assert browser.get("/", {"get": "a"}).json == {"a": 1}
    for key in (sid, f"{sid}-a"):
        # Sent as a Unix time; memcached's clock ticks once a second and may
        # lag ours by one, so the TTL it reports can be a second longer.
        assert 89 * DAY < memcached.mg(key)[1] <= 90 * DAY + 2, key


def test_a_process_that_meets_a_remembered_session_renews_it_with_its_lifetime(memcached):
    browser = webtest.TestApp(build(memcached))
    browser.get("/", {"set": "a", "value": "1", "remember": str(MONTH)})
    sid = sid_of(browser)
    expiry._known.clear()  # as in a process that never served it
    assert browser.get("/", {"get": "a"}).json == {"a": 1}
    assert memcached.mg(sid)[1] > MONTH - 60
    assert memcached.mg(f"{sid}-a")[1] > MONTH - 60


def test_remember_me_raises_the_idle_window_and_the_absolute_timeout_still_ends_it(memcached):
    browser = webtest.TestApp(build(memcached, idle_timeout=60, absolute_timeout=DAY))
    browser.get("/", {"set": "a", "value": "1", "remember": str(MONTH)})
    sid = sid_of(browser)
    assert memcached.mg(sid)[1] > 60  # the idle window is the remembered lifetime
    head, _, rest = memcached.mg(sid)[0].partition(b"\n")
    header = json.loads(head)
    header["c"] -= DAY + 1  # created over a day ago
    memcached.set(sid, json.dumps(header).encode() + b"\n" + rest, memcached.mg(sid)[2], 600)
    assert browser.get("/", {"get": "a"}).json == {"a": None}
    assert memcached.mg(sid) is None


def test_the_remembered_lifetime_survives_regeneration(memcached):
    browser = webtest.TestApp(build(memcached))
    browser.get("/", {"set": "a", "value": "1", "remember": str(MONTH)})
    old = sid_of(browser)
    response = browser.get("/", {"regen": "1"})
    assert f"Max-Age={MONTH}" in set_cookie(response)
    new = sid_of(browser)
    assert new != old and memcached.mg(old) is None
    assert memcached.mg(new)[1] > MONTH - 60
    assert json.loads(memcached.mg(new)[0].partition(b"\n")[0])["x"] == MONTH
    assert browser.get("/", {"get": "a"}).json == {"a": 1}


@pytest.mark.parametrize(
    ("seconds", "error"),
    [
        ("3600", TypeError),
        (3600.0, TypeError),
        (True, TypeError),
        (0, ValueError),
        (-5, ValueError),
        (expiry.MAX_EXPIRY + 1, ValueError),
    ],
)
def test_a_bad_lifetime_raises_naming_seconds(seconds, error):
    session = Session(SessionConfig.from_mapping({}), MemoryStore(), None)
    with pytest.raises(error, match="seconds"):
        session.set_expiry(seconds)
    assert not session.modified


def test_a_record_written_before_remember_me_still_reads():
    record = Record.parse(Item(b'{"v":1,"c":1700000000.0}\n"cart"\n', 0x5753_0010))
    assert record.expiry is None and record.issued_at == 1700000000.0
    assert record.names == {"cart"}
    changed = Record.parse(Item(b'{"v":1,"c":1.0,"x":60}\n"a"\n{"x":null}\n', 0x5753_0010))
    assert changed.expiry is None


def test_with_the_database_the_rows_follow_the_remembered_lifetime(memcached, sqlite_url):
    engine = sa.create_engine(sqlite_url)
    try:
        browser = webtest.TestApp(build(memcached, database=engine, sweep_percent=0))
        browser.get("/", {"set": "a", "value": "1"})
        sid = sid_of(browser)
        browser.get("/", {"set": "b", "value": "2", "remember": str(MONTH)})
        with engine.connect() as conn:
            row = conn.execute(sa.select(sessions_table).where(sessions_table.c.id == sid)).one()
        assert row.expiry == MONTH
        assert row.expires - row.created > MONTH - 60
        memcached.raw(b"flush_all\r\n")
        expiry._known.clear()
        elsewhere = webtest.TestApp(build(memcached, database=engine, sweep_percent=0))
        elsewhere.set_cookie("sid", browser.cookies["sid"])
        response = elsewhere.get("/", {"get": ["a", "b"]})
        assert response.json == {"a": 1, "b": 2}
        assert f"Max-Age={MONTH}" in set_cookie(response)  # the choice came back from SQL
        assert memcached.mg(sid)[1] > MONTH - 60
    finally:
        engine.dispose()


def test_counters_and_compare_and_set_keep_a_remembered_sessions_lifetime(memcached):
    browser = webtest.TestApp(build(memcached))
    browser.get("/", {"set": "user", "value": '"ann"', "remember": str(MONTH)})
    sid = sid_of(browser)
    elsewhere = webtest.TestApp(build(memcached))  # learns the lifetime from the record
    elsewhere.set_cookie("sid", browser.cookies["sid"])

    for visitor in (browser, elsewhere):
        visitor.get("/", {"incr": "visits", "update": "score"})

    for name in ("visits", "score"):
        assert memcached.mg(f"{sid}-{name}")[1] > MONTH - 60, name  # not the 600 s ttl
    assert browser.get("/", {"get": ["visits", "score"]}).json == {"visits": 2, "score": 2}


@pytest.mark.parametrize("first", [str(MONTH), "none"], ids=["remember", "forget"])
def test_a_lifetime_set_before_regeneration_in_the_same_request_moves_with_it(memcached, first):
    browser = webtest.TestApp(build(memcached))
    start = "none" if first != "none" else str(MONTH)
    browser.get("/", {"set": "user", "value": '"ann"', "remember": start})

    browser.get("/", {"remember": first, "regen": "1"})

    sid = sid_of(browser)
    want = None if first == "none" else MONTH
    elsewhere = webtest.TestApp(build(memcached))  # reads the record, not this process
    elsewhere.set_cookie("sid", browser.cookies["sid"])
    assert elsewhere.get("/", {"get": "user"}).json == {"user": "ann"}
    value, _, flags = memcached.mg(sid)
    assert Record.parse(Item(value, flags, 0)).expiry == want
