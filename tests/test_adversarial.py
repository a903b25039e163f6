"""Hostile input against a real memcached: cookies, names, values and planted items.

Every attack is checked on the server itself. Before it, another browser holds a
real session with a known variable and a raw ``canary`` key is written; after
it, both are intact, no flush or other unexpected command ran (the server's
counters moved exactly as for an ordinary request), and every live key has one
of the shapes the library writes.
"""

from __future__ import annotations

import base64
import json
import logging
import pickle
import time
from typing import Any

import pytest
import webapp2
import webtest
from conftest import PATIENT, SECRET, Handler, make_app
from hostile import (
    VICTIM_SECRET,
    Scene,
    assert_gone,
    assert_keys_sane,
    attributes,
    cookie_headers,
    cookie_value,
    keys_of,
)

from webapp2_sessions import MemcacheStore, Session, SessionConfig, SessionHandlerMixin
from webapp2_sessions.keys import KeyScheme, new_session_id
from webapp2_sessions.record import FLAGS_FLASHES, FLAGS_RECORD
from webapp2_sessions.serializers import FLAGS_JSON, FLAGS_PICKLE

# --------------------------------------------------------------------------- hostile cookies


# --------------------------------------------------------------------------- secret rotation


# --------------------------------------------------------------------------- variable names


# --------------------------------------------------------------------------- values


TRIPPED: list[str] = []


def _trip(label: str) -> str:
    TRIPPED.append(label)
    return label


class _Tripwire:
    """Unpickling this calls ``_trip``: proof that a pickle was trusted."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_trip, ("unpickled",))


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(0, id="no-flags"),
        pytest.param(1, id="pickle-as-python-memcached"),
        pytest.param(FLAGS_PICKLE, id="our-pickle-flags"),
        pytest.param(FLAGS_JSON, id="our-json-flags"),
        pytest.param(0xFFFFFFFF, id="all-bits"),
    ],
)
def test_a_planted_pickle_under_a_session_key_reads_as_missing_and_is_never_unpickled(
    memcached, flags
):
    TRIPPED.clear()
    scene = Scene(memcached)
    payload = pickle.dumps(_Tripwire())
    assert pickle.loads(payload) == "unpickled" and TRIPPED == ["unpickled"]  # it is armed
    TRIPPED.clear()
    memcached.set(f"{scene.victim_sid}-secret", payload, flags)
    response = scene.send(f"sid={scene.victim_cookie}", {"get": "secret"})
    assert response.json == {"secret": None}
    session = Session(
        SessionConfig.from_mapping({"memcache_servers": [memcached.address], **PATIENT}),
        MemcacheStore([memcached.address], **PATIENT),
        scene.victim_sid,
    )
    assert session.get("secret", "missing") == "missing"
    assert TRIPPED == []
    assert memcached.stats()["cmd_flush"] == 0


#: Names planted under flags the pickle serializer must not decode, by flags.
FOREIGN = {
    "under_json_flags": FLAGS_JSON,
    "under_no_flags": 0,
    "under_python_memcached_pickle_flags": 1,
    "under_record_flags": FLAGS_RECORD,
    "under_flash_flags": FLAGS_FLASHES,
    "under_all_bits": 0xFFFFFFFF,
}


class PrefetchesEverything(SessionHandlerMixin, webapp2.RequestHandler):
    """Reads every planted name, each fetched in the batch that loads the record."""

    session_prefetch = (*FOREIGN, "ours", "counter")

    def get(self) -> None:
        names = self.session_prefetch
        self.response.content_type = "application/json"
        self.response.write(
            json.dumps({n: repr(self.get_session_var(n, "missing")) for n in names})
        )


def test_values_under_foreign_flags_are_never_decoded_in_the_batch_that_loads_the_session(
    memcached,
):
    from rtproxy import RoundTripProxy

    proxy = RoundTripProxy(memcached.port)
    try:
        app = make_app(
            {"memcache_servers": [proxy.address], "cookie_name": "sid", "serializer": "pickle"},
            [("/", Handler), ("/read", PrefetchesEverything)],
        )
        names = [*FOREIGN, "ours", "counter"]
        app.get("/", {"set": names, "value": ['"stored"'] * len(names)}, status=200)
        sid = app.cookies["sid"]
        keys = KeyScheme()
        armed = pickle.dumps(_Tripwire())
        for name, flags in FOREIGN.items():
            memcached.set(keys.variable(sid, name), armed, flags)
        memcached.set(keys.variable(sid, "ours"), pickle.dumps(["a", "list"]), FLAGS_PICKLE)
        memcached.set(keys.variable(sid, "counter"), b"42", FLAGS_JSON)  # a counter, decimal text
        TRIPPED.clear()
        proxy.reset()
        body = app.get("/read", status=200).json
        # One round trip: every value came with the record, on the inline path.
        assert proxy.round_trips == 1
    finally:
        proxy.close()
    assert body == {
        **dict.fromkeys(FOREIGN, "'missing'"),
        "ours": "['a', 'list']",
        "counter": "42",
    }
    assert TRIPPED == []


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"[" * 100_000, id="deeply-nested"),
        pytest.param(b'"\xff\xfe"', id="invalid-utf8"),
        pytest.param(b"9" * 5000, id="5000-digit-number"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\x80\x04K\x01.", id="pickle-bytes"),
    ],
)
def test_planted_garbage_with_our_own_value_flags_reads_as_missing(memcached, payload):
    scene = Scene(memcached)
    memcached.set(f"{scene.victim_sid}-secret", payload, FLAGS_JSON)
    response = scene.send(f"sid={scene.victim_cookie}", {"get": "secret"})
    assert response.json == {"secret": None}
    assert memcached.mg("canary")[0] == b"intact"


KEPT_FLASH = base64.b64encode(b'["kept","info"]')


def test_planted_garbage_flashes_are_skipped_without_an_error(memcached):
    scene = Scene(memcached)
    scene.victim.get("/", {"flash": "real"}, status=200)
    flash_key = KeyScheme().internal(scene.victim_sid, "flashes")
    assert memcached.mg(flash_key) is not None
    # Flash lines are base64 of the serialized [value, level]: plant junk in
    # both layers around one well-formed line.
    junk = [b"not json", b"[1,2,3]", b"42", b"[" * 100_000, b"\xff\xfe"]
    garbage = b"\n".join(
        [b"not base64!", *map(base64.b64encode, junk), b"\xff\xfe", KEPT_FLASH, b""]
    )
    memcached.set(flash_key, garbage, FLAGS_FLASHES)
    response = scene.send(f"sid={scene.victim_cookie}", {"flashes": "1", "get": "secret"})
    assert response.json == {"secret": VICTIM_SECRET, "flashes": [["kept", "info"]]}
    canary = memcached.mg("canary")
    assert canary is not None and canary[0] == b"intact"


def _record(extra: bytes = b"", **header: Any) -> bytes:
    now = round(time.time(), 3)
    fields = {"v": 1, "c": now, "b": now, **header}
    return json.dumps(fields, separators=(",", ":")).encode() + b'\n"secret"\n' + extra


@pytest.mark.parametrize(
    ("value", "flags"),
    [
        pytest.param(_record(), FLAGS_PICKLE, id="foreign-flags"),
        pytest.param(pickle.dumps({"c": 1}), FLAGS_RECORD, id="pickle-bytes"),
        pytest.param(b"[1]\n", FLAGS_RECORD, id="header-not-an-object"),
        pytest.param(b'{"v":1}\n', FLAGS_RECORD, id="header-without-times"),
        pytest.param(b"[" * 100_000, FLAGS_RECORD, id="deeply-nested-header"),
        pytest.param(b'{"v":1,"c":"\xff"}\n', FLAGS_RECORD, id="invalid-utf8"),
        pytest.param(b'{"c":' + b"9" * 5000 + b"}\n", FLAGS_RECORD, id="5000-digit-time"),
        pytest.param(_record(b"42\n"), FLAGS_RECORD, id="index-entry-not-a-name"),
        pytest.param(_record(b"[" * 100_000 + b"\n"), FLAGS_RECORD, id="deeply-nested-index"),
        pytest.param(_record(b'"a\\r\\nflush_all"\n'), FLAGS_RECORD, id="hostile-name-in-index"),
        pytest.param(_record(b'"\\ud800"\n'), FLAGS_RECORD, id="lone-surrogate-name"),
        pytest.param(_record(c=float("nan"), b=float("nan")), FLAGS_RECORD, id="nan-times"),
        pytest.param(_record(ua=5, ip=["x"]), FLAGS_RECORD, id="odd-bindings"),
        pytest.param(_record(c=float("inf")), FLAGS_RECORD, id="infinite-time"),
        pytest.param(_record(c=True, b=True), FLAGS_RECORD, id="boolean-times"),
        pytest.param(
            b'{"v":1,"c":1' + b"0" * 400 + b"}\n", FLAGS_RECORD, id="time-too-large-for-a-float"
        ),
        pytest.param(_record(b'""\n'), FLAGS_RECORD, id="empty-name-in-index"),
        pytest.param(_record(b'{"-":""}\n'), FLAGS_RECORD, id="empty-removed-name"),
    ],
)
def test_a_forged_session_record_never_causes_a_server_error(memcached, value, flags):
    scene = Scene(memcached)
    record_key = scene.victim_sid
    for params in (
        {"get": "secret"},
        {"set": "x", "value": "1"},
        {"incr": "n"},
        {"flashes": "1"},
        {"regen": "1"},
        {"destroy": "1"},
    ):
        memcached.set(record_key, value, flags)
        response = scene.send(f"sid={scene.victim_cookie}", params)
        assert response.json.get("secret") in (None, VICTIM_SECRET)
    canary = memcached.mg("canary")
    assert canary is not None and canary[0] == b"intact"
    assert memcached.stats()["cmd_flush"] == 0
    assert_keys_sane(memcached, "", scene.owners)


# --------------------------------------------------------------------------- fixation


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_an_id_the_server_never_issued_is_not_adopted(memcached, signed):
    scene = Scene(memcached, **({"secret_key": SECRET} if signed else {}))
    planted = new_session_id()
    cookie = f"sid={scene.codec.encode(planted)}"
    response = scene.attack(cookie, lookup=True)
    assert response.json["sid"] != planted
    (header,) = cookie_headers(response, "sid")
    assert scene.codec.decode(cookie_value(header)) not in (None, planted)
    for params in ({"set": "x", "value": "1"}, {"incr": "n"}, {"flash": "f"}, {"regen": "1"}):
        again = scene.send(cookie, params)
        for header in cookie_headers(again, "sid"):
            assert planted not in header
    assert_gone(memcached, planted, ["x", "n", "secret", "mine"])
    scene.assert_intact()


def test_an_attackers_real_session_planted_before_login_is_dead_after_regeneration(memcached):
    scene = Scene(memcached, secret_key=SECRET)
    planted_cookie = scene.own_cookie
    planted = scene.codec.decode(planted_cookie)
    assert planted is not None
    login = scene.send(
        f"sid={planted_cookie}", {"regen": "1", "set": "user", "value": '"victim"', "sid": "1"}
    )
    assert login.json["sid"] != planted
    (header,) = cookie_headers(login, "sid")
    assert scene.codec.decode(cookie_value(header)) == login.json["sid"]
    attacker = scene.send(f"sid={planted_cookie}", {"get": ["user", "mine"]})
    assert attacker.json == {"user": None, "mine": None}
    assert_gone(memcached, planted, ["mine", "user"])
    victim = scene.send(f"sid={cookie_value(header)}", {"get": "user"})
    assert victim.json == {"user": "victim"}
    scene.assert_intact()


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


@pytest.mark.parametrize(
    "action",
    [
        pytest.param("set"),
        pytest.param("incr"),
        pytest.param("update"),
    ],
)
def test_an_outage_while_loading_does_not_let_a_later_write_adopt_a_planted_id(memcached, action):
    planted = new_session_id()

    class LoadThenWrite(SessionHandlerMixin, webapp2.RequestHandler):
        def get(self) -> None:
            self.session.load()  # memcached is down: the id cannot be checked
            memcached.start()  # and back before the request ends
            time.sleep(0.05)  # longer than dead_retry
            if action == "set":
                self.set_session_var("n", 1)
            elif action == "incr":
                self.incr_session_var("n")
            else:
                self.update_session_var("n", lambda old: 1)

    app = make_app(
        {"memcache_servers": [memcached.address], "cookie_name": "sid", "dead_retry": 0.01},
        [("/", LoadThenWrite)],
    )
    memcached.stop()
    response = webtest.TestApp(app.app).get("/", headers={"Cookie": f"sid={planted}"}, status=200)
    # The write is not saved: the id could not be checked, so it is neither
    # adopted nor replaced (a real visitor's session would still be on the
    # node, and is served again once it answers).
    assert cookie_headers(response, "sid") == []
    assert_gone(memcached, planted, ["n"])


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


def test_an_active_visitor_outlives_a_short_idle_timeout_and_an_idle_one_does_not(
    app_on, memcached
):
    # Every load renews the record's TTL to idle_timeout. memcached counts
    # whole seconds, so a 2 s TTL may end as soon as 1 s after it was set:
    # the visitor comes back every half second, 5 s in all.
    app = app_on(idle_timeout=2)
    app.get("/", {"set": "user", "value": '"ann"'}, status=200)
    sid = app.cookies["sid"]
    start = time.monotonic()
    visits = 0
    while time.monotonic() - start < 5:
        visits += 1
        time.sleep(max(0.0, start + visits * 0.5 - time.monotonic()))
        body = app.get("/", {"get": "user", "sid": "1"}, status=200).json
        assert body == {"user": "ann", "sid": sid}, f"ended after {time.monotonic() - start:.1f}s"
        record = memcached.mg(sid)
        assert record is not None
        assert 0 < record[1] <= 2  # TTL left: renewed to idle_timeout, not the 1-day ttl
    # Left alone, the record expires on the server within 2 s (polled, with
    # 10 s to spare), and the next request starts a new session.
    deadline = time.monotonic() + 12
    while memcached.mg(sid) is not None:
        assert time.monotonic() < deadline, "the record outlived idle_timeout by 10 s"
        time.sleep(0.05)
    body = app.get("/", {"get": "user", "sid": "1"}, status=200).json
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


# --------------------------------------------------------------------------- cookie attributes


@pytest.mark.parametrize(
    ("name", "cookie_args"),
    [
        pytest.param("__Host-sid", {}, id="host-prefix"),
        pytest.param("__Secure-sid", {}, id="secure-prefix"),
        pytest.param("sid", {"secure": True}, id="secure-setting"),
    ],
)
def test_a_secure_cookie_stays_secure_when_it_is_cleared(app_on, name, cookie_args):
    app = app_on(cookie_name=name, cookie_args=cookie_args, secret_key=SECRET)
    issued = app.get("/", {"set": "a", "value": "1"}, status=200)  # plain http
    (header,) = cookie_headers(issued, name)
    attrs = attributes(header)
    assert "secure" in attrs and attrs["path"] == "/" and "domain" not in attrs
    value = cookie_value(header)
    browser = webtest.TestApp(app.app)
    cleared = browser.get("/", {"destroy": "1"}, headers={"Cookie": f"{name}={value}"})
    (header,) = cookie_headers(cleared, name)
    attrs = attributes(header)
    assert cookie_value(header) == "" and attrs["max-age"] == "0"
    assert "secure" in attrs and attrs["path"] == "/" and "domain" not in attrs
    stale = browser.get("/", {"get": "a"}, headers={"Cookie": f"{name}={value}"})
    assert stale.json == {"a": None}


class CachedPage(SessionHandlerMixin, webapp2.RequestHandler):
    """A page that sets its own caching headers (``?cc=``), then reads the session."""

    def get(self) -> None:
        self.response.headers["Cache-Control"] = self.request.GET["cc"]
        self.response.headers["Vary"] = "Accept-Encoding"
        self.response.write(json.dumps(self.get_session_var("secret")))


def assert_private(response: webtest.TestResponse) -> None:
    vary = [v.strip().lower() for v in response.headers.get("Vary", "").split(",")]
    assert "cookie" in vary
    cache = response.headers["Cache-Control"]
    directives = [d.strip().split("=")[0].lower() for d in cache.split(",")]
    assert "no-store" in directives or ("private" in directives and "public" not in directives)


@pytest.mark.parametrize(
    ("params", "with_cookie"),
    [
        pytest.param({"get": "secret"}, True, id="read"),
        pytest.param({"get": "secret"}, False, id="read-without-cookie"),
        pytest.param({"set": "x", "value": "1"}, True, id="write"),
        pytest.param({"destroy": "1"}, True, id="logout"),
        pytest.param({"get": "secret"}, "sid=x\r\nflush_all", id="hostile-cookie"),
    ],
)
def test_responses_that_use_the_session_are_private_and_vary_on_cookie(
    memcached, params, with_cookie
):
    scene = Scene(memcached)
    if isinstance(with_cookie, str):
        cookie: str | None = with_cookie
    else:
        cookie = f"sid={scene.victim_cookie}" if with_cookie else None
    assert_private(scene.send(cookie, params))


@pytest.mark.parametrize(
    "cache_control",
    [
        "public, max-age=3600",
        "PUBLIC",
        "public, private",
        "max-age=60, Public, immutable",
        "s-maxage=600",
        "no-store, public",
    ],
)
def test_a_page_asking_to_be_cached_publicly_is_made_private(memcached, cache_control):
    scene = Scene(memcached, routes=[("/", Handler), ("/cached", CachedPage)])
    cookie = f"sid={scene.victim_cookie}"
    response = scene.send(cookie, {"cc": cache_control}, path="/cached")
    assert_private(response)
    assert "Accept-Encoding" in response.headers["Vary"]
    assert json.loads(response.text) == VICTIM_SECRET


# --------------------------------------------------------------------------- logs


def test_logs_never_contain_a_session_id_or_a_cookie_value(memcached, caplog):
    hostile = [
        'sid="x\\015\\012flush_all\\015\\012"',
        "sid=" + "z" * 8192,
        "sid=\xff\xfe\x00garbage-cookie",
    ]
    with caplog.at_level(logging.DEBUG):
        scene = Scene(memcached, secret_key=SECRET, bind_user_agent=True)
        fields = scene.fields()
        planted = new_session_id()
        secrets = [scene.victim_cookie, scene.own_cookie, planted, *fields.values()]
        for cookie in [*hostile, "sid={forged}".format(**fields), f"sid={planted}"]:
            scene.send(cookie)
        scene.send(f"sid={scene.codec.encode(planted)}")
        memcached.set(f"{scene.victim_sid}-secret", pickle.dumps(1), FLAGS_PICKLE)
        scene.send(f"sid={scene.victim_cookie}", {"get": "secret"})
        regen = scene.send(f"sid={scene.victim_cookie}", {"regen": "1", "sid": "1"})
        cookie = f"sid={scene.codec.encode(regen.json['sid'])}"
        secrets.append(cookie)
        scene.send(cookie, {"get": "secret"}, headers={"User-Agent": "Other/1.0"})
        memcached.set(scene.own_cookie.split(".")[0], b"junk", FLAGS_RECORD)
        scene.send(f"sid={scene.own_cookie}", {"get": "secret"})
        memcached.stop()
        for params in ({"get": "a"}, {"set": "a", "value": "1"}, {"incr": "n"}, {"destroy": "1"}):
            scene.send(f"sid={scene.victim_cookie}", params)
            scene.send(f"sid={scene.codec.encode(planted)}", params)
    secrets += sorted(scene.owners)
    records = caplog.records
    assert any(r.name == "webapp2_sessions" and r.levelno >= logging.ERROR for r in records)
    assert any("ended" in r.getMessage() for r in records)
    texts = [caplog.text] + [
        f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records
    ]
    for secret in secrets:
        for text in texts:
            assert secret not in text
            for start in range(max(1, len(secret) - 15)):
                assert secret[start : start + 16] not in text, secret
    for raw in hostile:
        value = raw.partition("=")[2]
        assert all(value not in text for text in texts)
        assert all("flush_all" not in text for text in texts)


# --------------------------------------------------------------------------- properties
