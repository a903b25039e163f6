"""A session read back from the database is put back in memcached while its row
is held: a logout, a write or another tab showing the flashes, coming between
the read and the refill, waits for it and then acts on what it put back.

Each test pauses the refill after the read (``durable.refill_ops``), runs the
racing request in a thread, and checks, a second later, that the racing
request is still waiting: it needs the row, so with the hold it cannot finish
before the refill does, however slow the machine.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import webtest
from test_durable import build, rows, session_row, sid_of

from webapp2_sessions import durable


class Race:
    """``race()`` run in a thread while the next refill holds the session's row."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, race: Callable[[], object]) -> None:
        self._racers: list[threading.Thread] = []
        #: Whether ``race()`` was still waiting a second after it started.
        self.waited: list[bool] = []
        real = durable.refill_ops

        def refill_ops(*args: Any, **kwargs: Any) -> Any:
            if not self._racers:  # the first refill only: the racer's own go on
                racer = threading.Thread(target=race)
                self._racers.append(racer)
                racer.start()
                racer.join(1.0)
                self.waited.append(racer.is_alive())
            return real(*args, **kwargs)

        monkeypatch.setattr(durable, "refill_ops", refill_ops)

    def finish(self) -> list[bool]:
        """Wait for the racing request; what ``waited`` says."""
        for racer in self._racers:
            racer.join(60)
            assert not racer.is_alive()
        return self.waited


def twin(app: Any, browser: webtest.TestApp) -> webtest.TestApp:
    """Another client with ``browser``'s session cookie (another tab, or a thief)."""
    other = webtest.TestApp(app)
    other.set_cookie("sid", browser.cookies["sid"])
    return other


def test_a_refill_never_puts_an_older_value_over_a_newer_write(memcached, engine, monkeypatch):
    app = build(memcached, engine)
    browser = webtest.TestApp(app)
    browser.get("/", {"set": "cart", "value": "[1]"})
    sid, writer = sid_of(browser), twin(app, browser)
    memcached.raw(b"flush_all\r\n")  # a restart: the rows keep [1]

    race = Race(monkeypatch, lambda: writer.get("/", {"set": "cart", "value": "[1, 2]"}))
    assert browser.get("/", {"get": "cart"}).json == {"cart": [1]}  # read before the write
    waited = race.finish()
    assert memcached.mg(f"{sid}-cart")[0] == b"[1,2]"
    assert browser.get("/", {"get": "cart"}).json == {"cart": [1, 2]}
    assert rows(engine, sid)["cart"] == b"[1,2]"
    assert waited == [True]  # the racing request needed the row


def test_a_logout_racing_a_refill_is_never_undone_by_it(memcached, engine, monkeypatch):
    app = build(memcached, engine)
    victim = webtest.TestApp(app)
    victim.get("/", {"set": "secret", "value": '"s"'})
    sid, thief = sid_of(victim), twin(app, victim)
    memcached.raw(b"flush_all\r\n")

    race = Race(monkeypatch, lambda: victim.get("/", {"destroy": "1"}))
    thief.get("/", {"get": "secret"})  # read before the logout: it may see it once
    waited = race.finish()
    assert session_row(engine, sid) is None and rows(engine, sid) == {}
    for _ in range(3):  # the stolen cookie, replayed: nothing, every time
        assert thief.get("/", {"get": "secret"}).json == {"secret": None}
    assert sid_of(thief) != sid
    assert waited == [True]  # the racing request needed the row


def test_a_refill_racing_a_write_of_a_new_name_never_hides_it(memcached, engine, monkeypatch):
    app = build(memcached, engine)
    reader = webtest.TestApp(app)
    reader.get("/", {"set": ["x", "other"], "value": ["1", "0"]})
    sid, writer = sid_of(reader), twin(app, reader)
    memcached.raw(b"flush_all\r\n")

    race = Race(monkeypatch, lambda: writer.get("/", {"set": "y", "value": "2"}))
    assert reader.get("/", {"get": "x"}).json == {"x": 1}
    waited = race.finish()
    memcached.raw(f"delete {sid}-y\r\n".encode())  # y evicted: listed, so read back
    assert reader.get("/", {"get": "y"}).json == {"y": 2}
    reader.get("/", {"regen": "1"})
    assert sid_of(reader) != sid
    assert rows(engine, sid_of(reader)) == {"x": b"1", "other": b"0", "y": b"2"}
    assert waited == [True]  # the racing request needed the row


def test_a_refill_never_brings_back_flashes_another_tab_showed(memcached, engine, monkeypatch):
    app = build(memcached, engine)
    browser = webtest.TestApp(app)
    browser.get("/", {"flash": "a"})
    assert browser.get("/", {"flashes": "1"}).json["flashes"] == [["a", "info"]]
    browser.get("/", {"flash": "c"})
    other = twin(app, browser)
    memcached.raw(b"flush_all\r\n")  # the rows keep c

    shown: list[Any] = []
    race = Race(
        monkeypatch, lambda: shown.append(other.get("/", {"flashes": "1"}).json["flashes"])
    )
    browser.get("/", {"get": "x"})  # reads the session back, flashes and all, not showing them
    waited = race.finish()
    assert shown == [[["c", "info"]]]
    assert [browser.get("/", {"flashes": "1"}).json["flashes"] for _ in range(2)] == [[], []]
    assert waited == [True]  # the racing request needed the row
