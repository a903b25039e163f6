"""The JSON serializer's shortcuts decode exactly what the JSON decoder does."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webapp2_sessions.serializers import JSONSerializer

SERIALIZER = JSONSerializer()


def _json(data: bytes) -> object:
    """What the plain decoder makes of ``data``; ValueError as the serializer raises it."""
    return json.JSONDecoder().decode(data.decode("utf-8"))


@settings(deadline=None, max_examples=300)
@given(st.text())
def test_any_string_comes_back_as_it_was_set(text: str) -> None:
    try:
        data = SERIALIZER.dumps(text)
    except TypeError:  # a lone surrogate: refused when set
        return
    assert SERIALIZER.loads(data) == text


@settings(deadline=None, max_examples=500)
@given(st.binary(max_size=24))
def test_quoted_bytes_decode_as_the_json_decoder_decodes_them(inner: bytes) -> None:
    data = b'"' + inner + b'"'
    try:
        expected = _json(data)
    except ValueError:
        with pytest.raises(ValueError):
            SERIALIZER.loads(data)
        return
    assert SERIALIZER.loads(data) == expected


@pytest.mark.parametrize(
    "data",
    [b'"a\x01"', b'"\xff"', b'"unclosed', b'"a"b"', b'"tab\there"'],
)
def test_a_malformed_string_raises_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        SERIALIZER.loads(data)


def test_an_escaped_string_is_unescaped() -> None:
    assert SERIALIZER.loads(b'"a\\"b\\\\c\\u00e9\\n"') == 'a"b\\c\u00e9\n'
