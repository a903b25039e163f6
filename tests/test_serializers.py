"""The JSON serializer's shortcuts decode exactly what the JSON decoder does, and
encode exactly what the JSON encoder does."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from webapp2_sessions.serializers import JSONSerializer

SERIALIZER = JSONSerializer()


def _refuse(name: str) -> object:
    raise ValueError(name)


def _finite(text: str) -> float:
    if math.isinf(float(text)):
        raise ValueError(text)
    return float(text)


#: The plain decoder, refusing what JSON has no spelling for (NaN, Infinity, and
#: a number beyond a float's range), as the serializer documents.
_DECODER = json.JSONDecoder(parse_constant=_refuse, parse_float=_finite)


def _json(data: bytes) -> object:
    """What the plain decoder makes of ``data``; ValueError as the serializer raises it."""
    return _DECODER.decode(data.decode("utf-8"))


def assert_decoded_as_the_json_decoder_does(data: bytes) -> None:
    """The same value, or a ValueError where the decoder raises one."""
    try:
        expected = _json(data)
    except ValueError:
        with pytest.raises(ValueError):
            SERIALIZER.loads(data)
        return
    assert SERIALIZER.loads(data) == expected


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
    assert_decoded_as_the_json_decoder_does(b'"' + inner + b'"')


@pytest.mark.parametrize(
    "data",
    [b'"a\x01"', b'"\xff"', b'"unclosed', b'"a"b"', b'"tab\there"'],
)
def test_a_malformed_string_raises_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        SERIALIZER.loads(data)


def test_an_escaped_string_is_unescaped() -> None:
    assert SERIALIZER.loads(b'"a\\"b\\\\c\\u00e9\\n"') == 'a"b\\c\u00e9\n'


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(deadline=None, max_examples=300)
@given(_JSON, st.sampled_from([(",", ":"), (", ", ": ")]), st.sampled_from(["", " ", "\n"]))
def test_any_json_text_decodes_as_the_json_decoder_decodes_it(value, separators, pad):
    text = pad + json.dumps(value, separators=separators) + pad
    assert SERIALIZER.loads(text.encode("utf-8")) == _json(text.encode("utf-8"))


@settings(deadline=None, max_examples=300)
@given(st.text(alphabet='[]{}",:0123456789 .-etrunlfa\\', max_size=16))
def test_malformed_text_raises_value_error_where_the_json_decoder_does(text):
    data = text.encode("utf-8")
    assume(not data.isdigit())  # decimal text is a counter's stored form, read as a number
    assert_decoded_as_the_json_decoder_does(data)


@pytest.mark.parametrize("data", [b"NaN", b"-Infinity", b"[1, Infinity]", b'{"a": 1e999}'])
def test_what_json_has_no_spelling_for_is_refused_when_read_back(data: bytes) -> None:
    with pytest.raises(ValueError):
        SERIALIZER.loads(data)


def _encoded(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


@settings(deadline=None, max_examples=300)
@given(_JSON | st.dictionaries(st.integers() | st.booleans() | st.none(), _JSON, max_size=3))
def test_any_value_encodes_as_the_json_encoder_encodes_it(value):
    # st.text() draws no lone surrogates, which neither can carry in UTF-8.
    assert SERIALIZER.dumps(value) == _encoded(value)


def test_a_circular_value_is_named_circular_not_too_deep() -> None:
    loop: list[object] = []
    loop.append([loop])
    with pytest.raises(TypeError, match="Circular reference"):
        SERIALIZER.dumps(loop)
    shared = [1]
    assert SERIALIZER.dumps([shared, {"again": shared}]) == b'[[1],{"again":[1]}]'
