"""What lands on the memcached server, read back from the server itself."""

from __future__ import annotations

import json

from conftest import SECRET

from webapp2_sessions.record import FLAGS_RECORD
from webapp2_sessions.serializers import FLAGS_JSON


def sid_of(app, cookie_name: str = "sid") -> str:
    return app.cookies[cookie_name].split(".")[0]


def test_variable_lives_at_sid_dash_name_with_24h_ttl(app_on, memcached):
    app = app_on()
    app.get("/", {"set": "token", "value": '"abc"'})
    sid = sid_of(app)
    value, ttl, flags = memcached.mg(f"{sid}-token")
    assert json.loads(value) == "abc"
    assert flags == FLAGS_JSON
    assert 86390 <= ttl <= 86400


def test_key_prefix_and_ttl_settings_shape_the_key(app_on, memcached):
    app = app_on(key_prefix="myapp:", ttl=600)
    app.get("/", {"set": "n", "value": "5"})
    sid = sid_of(app)
    assert memcached.mg(f"{sid}-n") is None
    value, ttl, _ = memcached.mg(f"myapp:{sid}-n")
    assert value == b"5"
    assert 590 <= ttl <= 600
    record = memcached.mg(f"myapp:{sid}")
    assert record is not None and record[2] == FLAGS_RECORD


def test_session_id_is_a_uuid4_in_hex(app_on):
    app = app_on()
    body = app.get("/", {"set": "a", "value": "1", "sid": "1"}).json
    import uuid

    parsed = uuid.UUID(hex=body["sid"])
    assert parsed.version == 4
    assert parsed.hex == body["sid"] == sid_of(app)


def test_default_cookie_is_browser_session_httponly_path_root(app_on):
    app = app_on()
    response = app.get("/", {"set": "a", "value": "1"})
    header = response.headers["Set-Cookie"]
    attributes = [part.strip().lower() for part in header.split(";")]
    assert attributes[0].startswith("sid=")
    assert "path=/" in attributes
    assert "httponly" in attributes
    assert not any(a.startswith(("expires", "max-age")) for a in attributes)
    assert "samesite=lax" in attributes
    assert "secure" not in attributes  # plain http request, secure='auto'


def test_cookie_args_are_applied(app_on):
    app = app_on(
        cookie_args={
            "max_age": 3600,
            "domain": "example.com",
            "secure": True,
            "samesite": "Strict",
        }
    )
    header = app.get("/", {"set": "a", "value": "1"}).headers["Set-Cookie"].lower()
    for part in ("max-age=3600", "domain=example.com", "secure", "samesite=strict", "httponly"):
        assert part in header


def test_secure_auto_marks_cookie_secure_on_https(app_on):
    app = app_on()
    response = app.get("/", {"set": "a", "value": "1"}, extra_environ={"wsgi.url_scheme": "https"})
    assert "; secure" in response.headers["Set-Cookie"].lower()


def test_value_set_in_one_request_is_read_in_the_next(app_on):
    app = app_on()
    app.get("/", {"set": "color", "value": '"blue"'})
    assert app.get("/", {"get": "color"}).json == {"color": "blue"}


def test_second_browser_never_sees_the_first_browsers_values(app_on):
    first, second = app_on(), app_on()
    first.get("/", {"set": "secret", "value": '"mine"'})
    assert second.get("/", {"get": "secret"}).json == {"secret": None}
    second.get("/", {"set": "secret", "value": '"theirs"'})
    assert first.get("/", {"get": "secret"}).json == {"secret": "mine"}
    assert sid_of(first) != sid_of(second)


def test_cookie_name_comes_from_app_config(app_on):
    app = app_on(cookie_name="my_sid")
    app.get("/", {"set": "a", "value": "1"})
    assert "my_sid" in app.cookies and "sid" not in app.cookies


def test_signed_cookie_carries_id_and_signature(app_on, memcached):
    app = app_on(secret_key=SECRET)
    app.get("/", {"set": "a", "value": "1"})
    raw = app.cookies["sid"]
    sid, _, signature = raw.partition(".")
    assert len(sid) == 32 and len(signature) == 43
    assert memcached.mg(f"{sid}-a") is not None


def test_deleting_a_variable_removes_its_key(app_on, memcached):
    app = app_on()
    app.get("/", {"set": "a", "value": "1"})
    sid = sid_of(app)
    app.get("/", {"delete": "a"})
    assert memcached.mg(f"{sid}-a") is None
    assert app.get("/", {"get": "a"}).json == {"a": None}


def test_reading_a_variable_renews_its_ttl(app_on, memcached):
    app = app_on(ttl=1000)
    app.get("/", {"set": "a", "value": "1"})
    sid = sid_of(app)
    memcached.raw(f"mg {sid}-a T10\r\n".encode())  # age it on the server
    assert memcached.mg(f"{sid}-a")[1] <= 10
    app.get("/", {"get": "a"})
    assert memcached.mg(f"{sid}-a")[1] >= 990


def test_ttl_over_30_days_is_sent_as_an_absolute_time(app_on, memcached):
    app = app_on(ttl=40 * 24 * 3600)
    app.get("/", {"set": "a", "value": "1"})
    _, ttl, _ = memcached.mg(f"{sid_of(app)}-a")
    # Sent as a relative number, memcached would have taken it as a date in
    # 1970 and expired the item at once.
    # memcached's clock ticks once a second, so the absolute time may read
    # a second or two long.
    assert 40 * 24 * 3600 - 10 <= ttl <= 40 * 24 * 3600 + 2


def test_untouched_request_sets_no_cookie_and_sends_nothing(app_on, memcached):
    app = app_on()
    before = memcached.stats()
    response = app.get("/untouched")
    after = memcached.stats()
    assert "Set-Cookie" not in response.headers
    assert "Vary" not in response.headers
    for stat in ("cmd_get", "cmd_set", "cmd_touch", "delete_hits", "delete_misses"):
        assert after[stat] == before[stat], stat
