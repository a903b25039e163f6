"""Hostile Cookie headers: smuggled commands, control and non-UTF-8 bytes, forged or
truncated signatures, duplicate names and arbitrary text.

Such a cookie is looked up only when it is exactly a well-formed id, never reaches another
visitor's session or causes an error, and costs the server what a harmless request costs.
"""

from __future__ import annotations

import pytest
import webob
from conftest import SECRET
from hostile import (
    NOTHING,
    VICTIM_SECRET,
    Scene,
    attributes,
    cookie_headers,
    cookie_value,
    counters,
    same_cost,
    spent,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from memcached import MemcachedServer

from webapp2_sessions.keys import new_session_id


def utf8_as_environ(text: str) -> str:
    """What a WSGI server puts in the environ for ``text`` sent as UTF-8."""
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


# The second field: the value is exactly a well-formed id the server never
# issued, so it is looked up once. An id followed by anything (a CRLF and a
# command, a space, a NUL) is not an id at all and is never looked up.
UNSIGNED_COOKIES = [
    pytest.param("sid=x\r\nflush_all\r\n", False, id="crlf-flush_all"),
    pytest.param("sid={unknown}\r\ndelete canary\r\n", False, id="id-crlf-delete"),
    pytest.param('sid="x\\015\\012flush_all\\015\\012"', False, id="quoted-crlf-flush_all"),
    pytest.param('sid="{unknown}\\015\\012delete canary"', False, id="quoted-id-crlf-delete"),
    pytest.param(
        'sid="x 0 0 1\\015\\012Z\\015\\012set canary 0 0 4\\015\\012EVIL"',
        False,
        id="quoted-crlf-set",
    ),
    pytest.param('sid="{unknown}\\015\\012mg canary v\\015\\012md canary"', False, id="meta"),
    pytest.param('sid="{unknown} flush_all"', False, id="quoted-space"),
    pytest.param("sid={unknown} flush_all", False, id="space"),
    pytest.param("sid={unknown}\x00flush_all", False, id="nul"),
    pytest.param('sid="{unknown}\\000"', False, id="quoted-nul"),
    pytest.param("sid=\x01\x02\x07\x08\x0b\x0c\x1b\x7f", False, id="control-bytes"),
    pytest.param('sid="\\001\\033[2J\\177"', False, id="quoted-control-bytes"),
    pytest.param("sid=\xff\xfe\xc3\x28\x80", False, id="non-utf8"),
    pytest.param("sid={unknown}\xc0\xaf", False, id="id-then-non-utf8"),
    pytest.param("sid=" + "a" * 8192, False, id="8kb"),
    pytest.param("sid=" + "{unknown}" * 256, False, id="8kb-of-ids"),
    pytest.param("sid=", False, id="empty"),
    pytest.param('sid=""', False, id="empty-quoted"),
    pytest.param("sid", False, id="no-equals"),
    pytest.param("sid=x; sid={unknown}", True, id="duplicate-names"),
    pytest.param("sid={unknown}; sid=x\r\nflush_all", False, id="duplicate-names-crlf"),
    pytest.param("sid={UNKNOWN}", False, id="uppercase-id"),
    pytest.param("sid=" + "0" * 32, False, id="not-a-uuid4"),
]

SIGNED_COOKIES = [
    pytest.param("sid={victim}", False, id="victim-id-without-signature"),
    pytest.param("sid={forged}", False, id="forged-signature"),
    pytest.param("sid={truncated}", False, id="signature-missing-a-character"),
    pytest.param("sid={truncated_more}", False, id="truncated-signature"),
    pytest.param("sid={victim}.", False, id="empty-signature"),
    pytest.param("sid={swapped}", False, id="signature-of-another-id"),
    pytest.param("sid={other_key}", False, id="signed-with-another-secret"),
    pytest.param("sid={forged}" + "A" * 8192, False, id="8kb"),
    pytest.param("sid={own}; sid={victim}", False, id="duplicate-names"),
    pytest.param("sid={victim}; sid={forged}", False, id="duplicate-forgeries"),
    pytest.param('sid="{forged}\\015\\012delete canary"', False, id="quoted-crlf"),
    pytest.param("sid={signed_unknown}\r\nflush_all\r\n", False, id="valid-unknown-crlf"),
    pytest.param("sid={victim}\x00.{forged}", False, id="nul"),
    pytest.param("sid=\xff{victim}", False, id="non-utf8"),
]


@pytest.mark.parametrize(("template", "lookup"), UNSIGNED_COOKIES)
def test_hostile_unsigned_cookie_cannot_inject_a_command_or_reach_another_session(
    memcached, template, lookup
):
    scene = Scene(memcached)
    scene.attack(template.format(**scene.fields()), lookup=lookup)


@pytest.mark.parametrize(("template", "lookup"), SIGNED_COOKIES)
def test_hostile_signed_cookie_cannot_inject_a_command_or_reach_another_session(
    memcached, template, lookup
):
    scene = Scene(memcached, secret_key=SECRET)
    scene.attack(template.format(**scene.fields()), lookup=lookup)


def webob_parses(header: str) -> bool:
    """Whether WebOb can read this Cookie header at all (see the test below)."""
    try:
        webob.Request.blank("/", environ={"HTTP_COOKIE": header}).cookies.get("sid")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize(
    "template",
    [
        pytest.param("x=\\377", id="another-cookie-octal-escape"),
        pytest.param("theme=\\377; sid={victim_cookie}", id="tossed-next-to-a-valid-cookie"),
        pytest.param("x=\\377; sid={own}", id="tossed-next-to-an-attackers-cookie"),
        pytest.param("sid=\\377", id="octal-escape"),
        pytest.param('sid="\\200"', id="quoted-octal-escape"),
        pytest.param(utf8_as_environ("sid=a\\\u00e9"), id="escaped-utf8-lead-byte"),
        pytest.param("sid={victim}; x=\\377", id="bare-victim-id"),
    ],
)
def test_a_cookie_header_webob_cannot_decode_is_not_a_server_error(memcached, template):
    scene = Scene(memcached, secret_key=SECRET)
    cookie = template.format(victim_cookie=scene.victim_cookie, **scene.fields())
    assert not webob_parses(cookie)
    response = scene.send(cookie, {"get": "secret", "sid": "1"})
    if scene.victim_cookie in cookie:
        assert response.json["secret"] in (None, VICTIM_SECRET)  # the victim's own browser
    else:
        assert response.json["secret"] is None
        assert response.json["sid"] != scene.victim_sid
    scene.assert_intact()


def test_hostile_cookies_under_a_key_prefix_stay_inside_it(memcached):
    scene = Scene(memcached, key_prefix="app:", secret_key=SECRET)
    fields = scene.fields()
    scene.attack('sid="x\\015\\012flush_all\\015\\012"', lookup=False)
    scene.attack("sid={victim}".format(**fields), lookup=False)
    scene.attack("sid={signed_unknown}".format(**fields), lookup=True)


def test_a_hostile_cookie_on_a_read_only_request_sends_nothing_and_expires_it(memcached):
    scene = Scene(memcached, secret_key=SECRET)
    before = counters(memcached)
    response = scene.send('sid="x\\015\\012flush_all"', {"get": "secret"})
    assert spent(before, counters(memcached)) == NOTHING
    assert response.json == {"secret": None}
    (header,) = cookie_headers(response, "sid")
    assert cookie_value(header) == "" and attributes(header)["max-age"] == "0"
    scene.assert_intact()


def test_a_request_that_never_touches_the_session_ignores_a_hostile_cookie(memcached):
    scene = Scene(memcached)
    before = counters(memcached)
    response = scene.send("sid=x\r\nflush_all\r\n", {}, path="/untouched")
    assert spent(before, counters(memcached)) == NOTHING
    assert "Set-Cookie" not in response.headers
    scene.assert_intact()


# --------------------------------------------------------------------------- properties


class CookieProbe:
    """One victim and canary on the module's server, and the cost of a request."""

    def __init__(self, server: MemcachedServer) -> None:
        self.scene = Scene(server)
        self.server = server
        before = counters(server)
        self.scene.send(None)
        middle = counters(server)
        self.scene.send(f"sid={new_session_id()}")
        after = counters(server)
        self.costs = [spent(before, middle), spent(middle, after)]

    def check(self, header: str) -> None:
        before = counters(self.server)
        response = self.scene.send(header)
        cost = spent(before, counters(self.server))
        assert any(same_cost(cost, usual) for usual in self.costs), cost
        assert response.json["secret"] is None
        fresh = response.json["sid"]
        assert fresh != self.scene.victim_sid
        assert self.server.mg(fresh) is not None and self.server.mg(f"{fresh}-mine") is not None
        self.scene.assert_intact()


@pytest.fixture(scope="module")
def probe(shared_server: MemcachedServer) -> CookieProbe:
    return CookieProbe(shared_server)


@settings(max_examples=120, deadline=None)
@given(text=st.text(max_size=120))
def test_arbitrary_cookie_text_never_errors_or_touches_another_key(probe, text):
    probe.check("sid=" + utf8_as_environ(text))


@settings(max_examples=120, deadline=None)
@given(data=st.binary(max_size=120))
def test_arbitrary_cookie_bytes_never_error_or_touch_another_key(probe, data):
    probe.check("sid=" + data.decode("latin-1"))


@settings(max_examples=120, deadline=None)
@given(text=st.text(max_size=160))
def test_an_arbitrary_cookie_header_never_errors_or_touches_another_key(probe, text):
    probe.check(utf8_as_environ(text))
