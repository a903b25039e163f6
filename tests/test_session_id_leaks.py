"""Ways a session id could leak: a shared cache keeping a page that used the session,
a secure cookie cleared over plain HTTP, or the library's own logs.

Such responses are private and vary on Cookie, a secure cookie stays secure when it is
cleared, and no id or cookie value is ever logged.
"""

from __future__ import annotations

import json
import logging
import pickle

import pytest
import webapp2
import webtest
from conftest import SECRET, Handler
from hostile import VICTIM_SECRET, Scene, attributes, cookie_headers, cookie_value

from webapp2_sessions import SessionHandlerMixin
from webapp2_sessions.keys import new_session_id
from webapp2_sessions.record import FLAGS_RECORD
from webapp2_sessions.serializers import FLAGS_PICKLE

# --------------------------------------------------------------------------- caches and cookies


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
