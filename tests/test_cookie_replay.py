"""Replaying a cookie that should no longer work: after regeneration or logout, after
an idle or absolute timeout, or from another client of a bound session.

Such a cookie reads nothing and cannot bring its id back; the session it named is gone
from the server.
"""

from __future__ import annotations

import time

import pytest
import webtest
from conftest import SECRET
from hostile import Scene, assert_gone, attributes, cookie_headers, cookie_value, keys_of

# --------------------------------------------------------------------------- ended ids


def test_after_regeneration_the_old_cookie_reads_nothing_and_no_old_key_remains(memcached):
    scene = Scene(memcached, secret_key=SECRET)
    browser = webtest.TestApp(scene.app)
    odd = "odd name\r\nflush_all"
    browser.get("/", {"set": ["a", odd], "value": ["1", "2"], "flash": "hello"}, status=200)
    browser.get("/", {"incr": "n"}, status=200)
    old_cookie = browser.cookies["sid"]
    old = scene.codec.decode(old_cookie)
    assert old is not None and len(keys_of(memcached, old)) == 5
    new = browser.get("/", {"regen": "1", "sid": "1"}, status=200).json["sid"]
    scene.owners.add(new)
    assert new != old
    assert_gone(memcached, old, ["a", odd, "n"])
    stale = scene.send(f"sid={old_cookie}", {"get": ["a", odd, "n"], "flashes": "1"})
    assert stale.json == {"a": None, odd: None, "n": None, "flashes": []}
    body = browser.get("/", {"get": ["a", odd, "n"], "flashes": "1"}, status=200).json
    assert body == {"a": 1, odd: 2, "n": 1, "flashes": [["hello", "info"]]}
    scene.assert_intact()


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"set": "x", "value": "1"}, id="set"),
        pytest.param({"incr": "n"}, id="incr"),
        pytest.param({"flash": "f"}, id="flash"),
        pytest.param({"regen": "1", "set": "x", "value": "1"}, id="regen"),
    ],
)
@pytest.mark.parametrize("ending", ["regen", "destroy"])
def test_the_cookie_of_an_ended_id_cannot_bring_that_id_back(memcached, params, ending):
    scene = Scene(memcached, secret_key=SECRET)
    browser = webtest.TestApp(scene.app)
    browser.get("/", {"set": "a", "value": "1"}, status=200)
    old_cookie = browser.cookies["sid"]
    old = scene.codec.decode(old_cookie)
    assert old is not None
    browser.get("/", {ending: "1"}, status=200)
    if ending == "regen":
        assert scene.track(browser) != old
    response = scene.send(f"sid={old_cookie}", params)
    for header in cookie_headers(response, "sid"):
        assert old not in header
    assert_gone(memcached, old, ["a", "x", "n"])
    scene.assert_intact()


# --------------------------------------------------------------------------- logout


def test_logout_deletes_every_key_expires_the_cookie_and_the_old_cookie_reads_nothing(
    memcached,
):
    scene = Scene(memcached, secret_key=SECRET)
    browser = webtest.TestApp(scene.app)
    names = ["a", "n" * 300, "x\r\nflush_all"]
    browser.get("/", {"set": names, "value": ["1", "2", "3"], "flash": "f"}, status=200)
    browser.get("/", {"incr": "counter", "delete": "a"}, status=200)
    cookie = browser.cookies["sid"]
    sid = scene.codec.decode(cookie)
    assert sid is not None and len(keys_of(memcached, sid)) == 5
    response = browser.get("/", {"destroy": "1"}, status=200)
    assert_gone(memcached, sid, [*names, "counter"])
    (header,) = cookie_headers(response, "sid")
    assert cookie_value(header) == "" and attributes(header)["max-age"] == "0"
    stale = scene.send(f"sid={cookie}", {"get": [*names, "counter"], "flashes": "1"})
    assert stale.json == {**dict.fromkeys([*names, "counter"]), "flashes": []}
    scene.assert_intact()


# --------------------------------------------------------------------------- expiry


def test_idle_timeout_ends_the_session_and_issues_a_new_id(app_on, memcached):
    app = app_on(idle_timeout=1)
    app.get("/", {"set": "secret", "value": '"s"'}, status=200)
    old = app.cookies["sid"]
    assert memcached.mg(f"{old}-secret") is not None
    time.sleep(1)
    # memcached's clock ticks once a second: wait for the expiry to show.
    deadline = time.monotonic() + 10
    while memcached.mg(old) is not None:  # the record expires on the server
        assert time.monotonic() < deadline, "the record outlived idle_timeout by 9 s"
        time.sleep(0.05)
    body = app.get("/", {"get": "secret", "set": "b", "value": "1", "sid": "1"}).json
    assert body["secret"] is None and body["sid"] != old
    assert app.cookies["sid"] == body["sid"]


def test_each_visit_renews_the_record_to_idle_timeout_and_an_idle_session_ends(app_on, memcached):
    # Every load renews the record's TTL to idle_timeout. Shown on the server
    # itself rather than by racing its clock (a busy machine can stall a
    # request past a short window): the record's TTL is cut to 2 s by hand,
    # and each visit puts it back to the whole idle window.
    app = app_on(idle_timeout=60)
    app.get("/", {"set": "user", "value": '"ann"'}, status=200)
    sid = app.cookies["sid"]
    for _ in range(3):
        assert memcached.raw(f"mg {sid} T2\r\n".encode()).startswith(b"HD")
        assert memcached.mg(sid)[1] <= 2
        body = app.get("/", {"get": "user", "sid": "1"}, status=200).json
        assert body == {"user": "ann", "sid": sid}
        assert 30 < memcached.mg(sid)[1] <= 60  # renewed to idle_timeout, not the 1-day ttl
    # Left alone, a record with a short idle window expires on the server
    # within 2 s (polled, with 10 s to spare), and the next request starts a
    # new session.
    idle = app_on(idle_timeout=2)
    idle.get("/", {"set": "user", "value": '"bob"'}, status=200)
    sid = idle.cookies["sid"]
    deadline = time.monotonic() + 12
    while memcached.mg(sid) is not None:
        assert time.monotonic() < deadline, "the record outlived idle_timeout by 10 s"
        time.sleep(0.05)
    body = idle.get("/", {"get": "user", "sid": "1"}, status=200).json
    assert body["user"] is None and body["sid"] != sid


def test_absolute_timeout_ends_a_busy_session_even_across_regeneration(app_on, memcached):
    # The requests within the lifetime end 1.5 s in (plus their own time),
    # leaving 3.5 s to spare; the last one comes 1 s after it is over.
    app = app_on(absolute_timeout=5)
    start = time.monotonic()  # the session is created after this...
    app.get("/", {"set": "secret", "value": '"s"'}, status=200)
    created_by = time.monotonic()  # ...and before this
    seen = {app.cookies["sid"]}
    for at, params in (
        (0.5, {"get": "secret"}),
        (1.0, {"get": "secret", "regen": "1"}),
        (1.5, {"get": "secret"}),
    ):
        time.sleep(max(0.0, start + at - time.monotonic()))
        assert app.get("/", params, status=200).json == {"secret": "s"}
        seen.add(app.cookies["sid"])
    assert len(seen) == 2  # regeneration gave a new id, not a new lifetime
    time.sleep(max(0.0, created_by + 5 + 1 - time.monotonic()))
    body = app.get("/", {"get": "secret", "sid": "1"}, status=200).json
    assert body["secret"] is None and body["sid"] not in seen
    for sid in seen:
        assert_gone(memcached, sid, ["secret"])


# --------------------------------------------------------------------------- binding


@pytest.mark.parametrize(
    ("setting", "mine", "theirs"),
    [
        pytest.param(
            "bind_user_agent",
            {"headers": {"User-Agent": "Browser/1.0"}},
            {"headers": {"User-Agent": "Other/2.0"}},
            id="user-agent",
        ),
        pytest.param(
            "bind_user_agent",
            {"headers": {"User-Agent": "Browser/1.0"}},
            {},
            id="user-agent-missing",
        ),
        pytest.param(
            "bind_ip",
            {"environ": {"REMOTE_ADDR": "203.0.113.5"}},
            {"environ": {"REMOTE_ADDR": "198.51.100.7"}},
            id="address",
        ),
    ],
)
def test_a_request_from_another_client_ends_a_bound_session(memcached, setting, mine, theirs):
    scene = Scene(memcached, secret_key=SECRET, **{setting: True})
    first = scene.send(None, {"set": "bound", "value": '"mine"', "sid": "1"}, **mine)
    sid = first.json["sid"]
    cookie = f"sid={scene.codec.encode(sid)}"
    assert scene.send(cookie, {"get": "bound"}, **mine).json == {"bound": "mine"}
    other = scene.send(cookie, {"get": "bound", "sid": "1"}, **theirs)
    assert other.json["bound"] is None and other.json["sid"] != sid
    assert_gone(memcached, sid, ["bound"])
    assert scene.send(cookie, {"get": "bound"}, **mine).json == {"bound": None}
    scene.assert_intact()
