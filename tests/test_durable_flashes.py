"""Flash lists on the durable tier when memcached lost its copy (expired,
evicted) but the database kept it: each flash is shown once, and a list
missing from memcached is read from the database."""

from __future__ import annotations

import webtest
from test_durable import build, sid_of


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
