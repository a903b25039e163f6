"""Ids and key derivation, including property-based checks."""

from __future__ import annotations

import string
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

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


@given(st.text(min_size=1, max_size=400), st.text(alphabet="abc:_-", max_size=40))
@settings(max_examples=400, deadline=None)
def test_every_name_maps_to_a_valid_memcached_key(name, prefix):
    key = KeyScheme(prefix).variable(new_session_id(), name)
    raw = key.encode("utf-8")
    assert len(raw) <= 250
    assert set(key) <= KEY_OK


@given(st.text(min_size=1, max_size=300), st.text(min_size=1, max_size=300))
@settings(max_examples=400, deadline=None)
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
