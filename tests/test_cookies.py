"""The cookie: its signed value, finding it in the header, the response headers."""

from __future__ import annotations

import base64
import hmac

from hypothesis import given, settings
from hypothesis import strategies as st

from webapp2_sessions.config import CookieArgs
from webapp2_sessions.cookies import (
    VERIFIED_CACHE_SIZE,
    CookieCodec,
    cookie_header,
    mark_private,
    put_cookie,
)
from webapp2_sessions.keys import is_session_id, new_session_id


def test_unsigned_codec_round_trips_and_rejects_junk():
    codec = CookieCodec()
    sid = new_session_id()
    assert codec.decode(codec.encode(sid)) == sid
    for junk in (None, "", "x", sid + "\r\nflush_all", " " + sid, sid + "." + "a" * 43):
        assert codec.decode(junk) is None


def test_signed_codec_rejects_forged_truncated_and_unsigned_values():
    codec = CookieCodec(["k" * 32])
    sid = new_session_id()
    value = codec.encode(sid)
    assert codec.decode(value) == sid
    assert codec.decode(sid) is None
    assert codec.decode(value[:-1]) is None
    # Tamper with the signature's first character: the last one also carries
    # two padding bits, so some changes to it decode to the same signature.
    first = value[33]
    assert codec.decode(value[:33] + ("A" if first != "A" else "B") + value[34:]) is None
    other = new_session_id()
    assert codec.decode(other + value[32:]) is None


def test_key_rotation_first_key_signs_all_verify_retired_key_fails():
    old, new = "o" * 32, "n" * 32
    sid = new_session_id()
    old_value = CookieCodec([old]).encode(sid)
    rotated = CookieCodec([new, old])
    assert rotated.decode(old_value) == sid
    assert rotated.encode(sid) == CookieCodec([new]).encode(sid)
    assert CookieCodec([new]).decode(old_value) is None


def test_signed_cookie_format_is_stable_across_releases():
    # A deployed site's cookies must keep verifying after an upgrade. This
    # vector was written by itsdangerous' Signer (salt "webapp2_sessions.cookie",
    # key_derivation="hmac", SHA-256), the format 0.1 cookies have.
    sid = "0123456789ab4def8123456789abcdef"
    value = sid + ".E4Puj_Kix71NP4I9fI52K-xKebrFCHgo9ofmhytE9Tc"
    codec = CookieCodec(["first-secret-key-0123456789", "older-secret-key-0123456789"])
    assert codec.encode(sid) == value
    assert codec.decode(value) == sid
    assert CookieCodec(["older-secret-key-0123456789"]).decode(value) is None


def test_a_signature_with_padding_or_a_second_dot_is_refused():
    codec = CookieCodec(["k" * 32])
    value = codec.encode(new_session_id())
    for bad in (value + "=", value + ".", value.replace(".", ".."), value + "." + value[33:]):
        assert codec.decode(bad) is None


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_any_text_cookie_decodes_to_none_or_a_valid_id(raw):
    for codec in (CookieCodec(), CookieCodec(["k" * 32])):
        result = codec.decode(raw)
        assert result is None or is_session_id(result)


def test_the_codec_remembers_verified_values_only_and_stays_bounded():
    codec = CookieCodec(["k" * 32])
    for _ in range(3):
        assert codec.decode(codec.encode("0" * 12 + "4" + "0" * 3 + "8" + "0" * 15)) is not None
    assert len(codec._verified) == 1
    for _ in range(50):
        assert codec.decode(new_session_id()) is None  # unsigned: refused, not remembered
    assert len(codec._verified) == 1
    for _ in range(VERIFIED_CACHE_SIZE + 10):
        codec.decode(codec.encode(new_session_id()))
    assert len(codec._verified) <= VERIFIED_CACHE_SIZE


def test_the_cookie_header_carries_the_configured_attributes():
    args = CookieArgs(path="/app", domain="example.com", samesite="Strict", max_age=3600)
    name, value = cookie_header(args, "sid", "v", https=False, max_age=3600)
    assert name == "Set-Cookie"
    parts = value.split("; ")
    assert parts[0] == "sid=v" and "Path=/app" in parts and "Domain=example.com" in parts
    assert "Max-Age=3600" in parts and "HttpOnly" in parts and "SameSite=Strict" in parts
    assert "secure" not in parts
    assert "secure" in cookie_header(args, "sid", "v", https=True, max_age=None)[1].split("; ")


def test_a_cleared_cookie_expires_at_once_and_a_host_cookie_stays_secure():
    _, value = cookie_header(CookieArgs(), "__Host-sid", None, https=False, max_age=None)
    parts = value.split("; ")
    assert parts[0] == "__Host-sid=" and "Max-Age=0" in parts and "secure" in parts


def test_a_browser_session_cookie_has_no_max_age_or_expiry():
    _, value = cookie_header(CookieArgs(), "sid", "v", https=False, max_age=None)
    assert "Max-Age" not in value and "expires" not in value


def test_marking_private_adds_vary_cookie_and_keeps_shared_caches_out():
    headers = [("Content-Type", "text/html"), ("Vary", "Accept-Encoding")]
    mark_private(headers)
    assert ("Vary", "Accept-Encoding, Cookie") in headers
    assert ("Cache-Control", "private") in headers
    public = [("Cache-Control", "public, max-age=60"), ("Vary", "cookie")]
    mark_private(public)
    assert public == [("Cache-Control", "max-age=60, private"), ("Vary", "cookie")]
    store = [("Cache-Control", "no-store")]
    mark_private(store)
    assert store[0] == ("Cache-Control", "no-store")


def test_several_cache_control_or_vary_headers_are_read_as_one_list():
    headers = [
        ("Cache-Control", "public"),
        ("Vary", "Cookie"),
        ("Cache-Control", "max-age=600"),
        ("Vary", "Accept-Encoding"),
    ]
    mark_private(headers)
    assert [v for n, v in headers if n == "Cache-Control"] == ["max-age=600, private"]
    assert [v for n, v in headers if n == "Vary"] == ["Cookie", "Accept-Encoding"]


def test_our_set_cookie_replaces_one_for_the_same_name_only():
    headers = [("Set-Cookie", "sid=old; Path=/"), ("Set-Cookie", "sidx=kept")]
    put_cookie(headers, ("Set-Cookie", "sid=new; Path=/"))
    assert headers == [("Set-Cookie", "sidx=kept"), ("Set-Cookie", "sid=new; Path=/")]


_NO_SURROGATES = st.characters(blacklist_categories=("Cs",))


@settings(deadline=None, max_examples=200)
@given(st.text(_NO_SURROGATES, min_size=1, max_size=80), st.integers(0, 3))
def test_the_signature_is_hmac_sha256_under_the_derived_key(secret: str, which: int):
    sid = _IDS[which]
    derived = hmac.digest(secret.encode("utf-8"), b"webapp2_sessions.cookie", "sha256")
    expected = base64.urlsafe_b64encode(hmac.digest(derived, sid.encode("ascii"), "sha256"))
    assert CookieCodec([secret]).encode(sid) == sid + "." + expected.rstrip(b"=").decode()


_IDS = [new_session_id() for _ in range(4)]
