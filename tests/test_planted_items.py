"""Items planted on memcached under a session's keys: pickles, values under foreign
flags, garbage values and flashes, forged session records.

Such an item reads as missing (a pickle is never unpickled), a broken flash is skipped,
and none of them causes a server error.
"""

from __future__ import annotations

import base64
import json
import pickle
import time
from typing import Any

import pytest
import webapp2
from conftest import PATIENT, Handler, make_app
from hostile import VICTIM_SECRET, Scene, assert_keys_sane

from webapp2_sessions import MemcacheStore, Session, SessionConfig, SessionHandlerMixin
from webapp2_sessions.keys import KeyScheme
from webapp2_sessions.record import FLAGS_FLASHES, FLAGS_RECORD
from webapp2_sessions.serializers import FLAGS_JSON, FLAGS_PICKLE

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
