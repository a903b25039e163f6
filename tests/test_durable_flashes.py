"""Flash lists on the durable tier when memcached lost its copy (expired,
evicted) but the database kept it: each flash is shown once, and a list
missing from memcached is read from the database (and not put back there,
where a request showing them meanwhile would have them come back)."""

from __future__ import annotations

import threading
from typing import Any

import webtest
from test_durable import build, rows, sid_of

from webapp2_sessions.sql import FLASHES, Database


def test_a_flash_added_after_memcached_lost_the_list_is_shown_exactly_once(memcached, engine):
    browser = webtest.TestApp(build(memcached, engine))
    browser.get("/", {"flash": "a"})
    sid = sid_of(browser)
    # The flash list's key expires (its TTL is renewed only when it is read,
    # the record's on every request) or is evicted; the database keeps it.
    memcached.raw(f"delete {sid}-!flashes\r\n".encode())
    browser.get("/", {"flash": "b"})
    shown = [browser.get("/", {"flashes": "1"}).json["flashes"] for _ in range(2)]
    memcached.raw(b"flush_all\r\n")  # a restart: the record is rebuilt from the rows
    shown.append(browser.get("/", {"flashes": "1"}).json["flashes"])
    assert shown == [[["a", "info"], ["b", "info"]], [], []]


def test_prefetched_flashes_missing_from_memcached_are_read_from_the_database(memcached, engine):
    browser = webtest.TestApp(build(memcached, engine))
    browser.get("/", {"flash": "a"})
    sid = sid_of(browser)
    assert browser.get("/", {"flashes": "1"}).json["flashes"] == [["a", "info"]]  # learned
    browser.get("/", {"flash": "c"})
    memcached.raw(f"delete {sid}-!flashes\r\n".encode())  # evicted / expired
    shown = [browser.get("/", {"flashes": "1"}).json["flashes"]]
    memcached.raw(b"flush_all\r\n")
    shown.append(browser.get("/", {"flashes": "1"}).json["flashes"])
    assert shown == [[["c", "info"]], []]


def test_a_flash_list_grown_past_item_room_is_saved_without_a_false_refusal(memcached, engine):
    # strict: a refused write raises. item_size_max 1024: item_room 724 bytes.
    browser = webtest.TestApp(build(memcached, engine, strict=True, item_size_max=1024))
    browser.get("/", {"flash": "a" * 400})
    sid = sid_of(browser)
    response = browser.get("/", {"flash": "b" * 400}, expect_errors=True)
    saved = rows(engine, sid)[FLASHES].count(b"\n")
    # the database kept both flashes: the write was saved, so nothing may be refused
    assert (saved, response.status_int) == (2, 200), response.text[-300:]


def test_a_prefetched_refill_of_the_flash_list_never_brings_back_consumed_flashes(
    memcached, engine, monkeypatch
):
    app = build(memcached, engine)
    browser = webtest.TestApp(app)
    browser.get("/", {"flash": "a"})
    sid = sid_of(browser)
    assert browser.get("/", {"flashes": "1"}).json["flashes"] == [["a", "info"]]  # learned
    browser.get("/", {"flash": "c"})
    memcached.raw(f"delete {sid}-!flashes\r\n".encode())  # evicted; the row keeps c
    other = webtest.TestApp(app)
    other.set_cookie("sid", browser.cookies["sid"])

    original = Database.load_variables
    shown: list[Any] = []

    def load_variables(self: Database, session_id: str, names: Any) -> Any:
        found = original(self, session_id, names)  # this request read c from the rows
        if FLASHES in names and not shown:
            shown.append(None)
            # another tab of the visitor shows (and consumes) the flashes meanwhile
            monkeypatch.setattr(Database, "load_variables", original)
            done = threading.Thread(
                target=lambda: shown.append(other.get("/", {"flashes": "1"}).json["flashes"])
            )
            done.start()
            done.join(60)
        return found

    monkeypatch.setattr(Database, "load_variables", load_variables)
    browser.get("/", {"get": "x"})  # prefetches the flashes, does not show them
    monkeypatch.setattr(Database, "load_variables", original)
    later = browser.get("/", {"flashes": "1"}).json["flashes"]
    assert shown[1:] == [[["c", "info"]]]  # the other tab showed c
    assert later == []  # ... so c must not be shown a second time
