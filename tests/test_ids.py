"""Ids, cookie values and key derivation, including property-based checks."""

from __future__ import annotations

import string
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from webapp2_sessions.cookies import CookieCodec
from webapp2_sessions.keys import (
    KeyScheme,
    is_session_id,
    log_token,
    name_suffix,
    new_session_id,
)

KEY_OK = set(string.printable) - set(string.whitespace)


def test_new_ids_are_uuid4_hex_and_distinct():
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(is_session_id(i) for i in ids)
    for sid in ids:
        parsed = uuid.UUID(sid)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and parsed.hex == sid


def test_only_the_exact_id_shape_is_accepted():
    good = new_session_id()
    assert is_session_id(good)
    for bad in (good.upper(), good[:-1], good + "0", "x" + good[1:], good[:12] + "1" + good[13:]):
        assert not is_session_id(bad)


def test_log_token_does_not_reveal_the_id():
    sid = new_session_id()
    token = log_token(sid)
    assert sid not in token and token not in sid and len(token) == 12


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
@settings(max_examples=300)
def test_any_text_cookie_decodes_to_none_or_a_valid_id(raw):
    for codec in (CookieCodec(), CookieCodec(["k" * 32])):
        result = codec.decode(raw)
        assert result is None or is_session_id(result)


@given(st.text(min_size=1, max_size=400), st.text(alphabet="abc:_-", max_size=40))
@settings(max_examples=400)
def test_every_name_maps_to_a_valid_memcached_key(name, prefix):
    key = KeyScheme(prefix).variable(new_session_id(), name)
    raw = key.encode("utf-8")
    assert len(raw) <= 250
    assert set(key) <= KEY_OK


@given(st.text(min_size=1, max_size=300), st.text(min_size=1, max_size=300))
@settings(max_examples=400)
def test_distinct_names_never_share_a_key(a, b):
    if a != b:
        assert name_suffix(a) != name_suffix(b)


def test_names_differing_after_250_bytes_do_not_collide():
    a, b = "n" * 260 + "a", "n" * 260 + "b"
    scheme = KeyScheme()
    sid = new_session_id()
    assert scheme.variable(sid, a) != scheme.variable(sid, b)


def test_plain_names_stay_readable_in_the_key():
    sid = new_session_id()
    assert KeyScheme("app:").variable(sid, "cart_items") == f"app:{sid}-cart_items"
    assert KeyScheme().variable(sid, "with space").startswith(f"{sid}-~")


def test_hashed_form_cannot_be_produced_by_a_plain_name():
    hashed = name_suffix("a b")
    assert hashed.startswith("~")
    assert name_suffix(hashed) != hashed  # '~' is outside the plain alphabet


def test_record_key_differs_from_every_variable_key():
    sid = new_session_id()
    scheme = KeyScheme()
    assert scheme.record(sid) == sid
    assert all(scheme.variable(sid, n) != scheme.record(sid) for n in ("x", "-", "~"))
