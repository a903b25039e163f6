"""How variable values become bytes in the store.

Each format stamps its own memcached client flags on what it writes, and only
ever decodes items carrying those flags: an item planted by someone else (a
pickle, a raw string) is treated as missing instead of being trusted.
"""

from __future__ import annotations

import json
import math
import pickle
import re
from collections.abc import Callable, Sequence
from json.encoder import c_encode_basestring as _c_encode_str  # type: ignore[attr-defined]
from json.encoder import c_make_encoder as _c_make_encoder  # type: ignore[attr-defined]
from json.encoder import encode_basestring as _encode_str
from typing import Any, Protocol

#: Client flags of values written by the JSON serializer ("WS" + format 1).
FLAGS_JSON = 0x5753_0001
#: Client flags of values written by the pickle serializer.
FLAGS_PICKLE = 0x5753_0002
#: A JSON string that holds no escape: no backslash, no control character.
_PLAIN_STRING = re.compile(rb'"([^"\\\x00-\x1f]*)"')


class Serializer:
    """Turns session values into bytes and back.

    Subclasses set ``flags`` to a number no other format uses; ``dumps`` raises
    ``TypeError`` for a value it cannot represent, ``loads`` raises
    ``ValueError`` for bytes it cannot decode.
    """

    flags: int = 0

    def dumps(self, value: Any) -> bytes:
        raise NotImplementedError

    def loads(self, data: bytes) -> Any:
        raise NotImplementedError


class JSONSerializer(Serializer):
    """The default: str, int, float, bool, None, list and dict (str keys).

    Tuples come back as lists and non-str dict keys as strings, as with any JSON
    session store. NaN and infinity are refused because JSON has no spelling
    for them, when stored and when read back.
    """

    flags = FLAGS_JSON

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(
            ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )
        # The encoder's C core, made once: ``encode`` builds it anew on every
        # call (with a dict to detect circular references, and a closure),
        # which costs more than encoding a short list. Without that dict a
        # circular value ends in RecursionError, and ``encode`` then says which.
        self._encode_c: Callable[[Any, int], Sequence[str]] | None = None
        if _c_make_encoder is not None:
            self._encode_c = _c_make_encoder(
                None,  # markers: no circular-reference check (see above)
                self._encoder.default,
                _c_encode_str or _encode_str,
                None,  # indent
                ":",
                ",",
                False,  # sort_keys
                False,  # skipkeys
                False,  # allow_nan
            )
        # NaN, Infinity and a number too large for a float are not JSON:
        # refused on the way in, as on the way out (bytes planted in the store).
        self._decoder = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)
        # The scanner ``decode`` runs (C), an attribute typeshed leaves out.
        self._scan: Callable[[str, int], tuple[Any, int]] = self._decoder.scan_once  # type: ignore[attr-defined]

    def dumps(self, value: Any) -> bytes:
        # Counters and short strings are most of what sessions hold.
        kind = value.__class__
        if kind is int:
            return b"%d" % value
        try:
            if kind is str:
                return _encode_str(value).encode("utf-8")
            if self._encode_c is not None:
                try:
                    return "".join(self._encode_c(value, 0)).encode("utf-8")
                except RecursionError:
                    pass  # circular, or nested too deeply: encode() tells which
            return self._encoder.encode(value).encode("utf-8")
        except UnicodeEncodeError:
            raise TypeError("value holds a lone surrogate, which UTF-8 cannot carry") from None
        except ValueError as exc:  # NaN, infinity, circular reference
            raise TypeError(str(exc)) from None
        except RecursionError:
            raise TypeError("value is nested too deeply for JSON") from None

    def loads(self, data: bytes) -> Any:
        if data.isdigit() and len(data) < 20:
            return int(data)
        # A string without escapes, as most stored strings are: the text
        # between its quotes is the value (a quarter of the decoder's cost).
        plain = _PLAIN_STRING.fullmatch(data)
        if plain is not None:
            return plain[1].decode("utf-8")
        text = data.decode("utf-8")
        try:
            # The decoder's C scanner, called directly: ``decode`` wraps it in
            # two whitespace matches, which cost more than a short list.
            value, end = self._scan(text, 0)
            if end == len(text):
                return value
            # Whitespace around the value, or more after it: the decoder says.
            return self._decoder.decode(text)
        except StopIteration:  # the scanner's word for "no value here"
            return self._decoder.decode(text)  # raises its own ValueError
        except RecursionError:
            raise ValueError("value is nested too deeply") from None


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:20]} is out of a float's range")
    return value


class PickleSerializer(Serializer):
    """Any picklable object. Unsafe unless nobody else can write to memcached.

    Unpickling runs code chosen by whoever wrote the bytes, so anyone with
    write access to the memcached servers can take over the application. Use it
    only on servers that are reachable from this application alone.
    """

    flags = FLAGS_PICKLE

    def dumps(self, value: Any) -> bytes:
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, AttributeError) as exc:
            raise TypeError(str(exc)) from None
        except RecursionError:
            raise TypeError("value is nested too deeply to pickle") from None

    def loads(self, data: bytes) -> Any:
        try:
            return pickle.loads(data)  # noqa: S301 - documented as unsafe
        except Exception as exc:
            raise ValueError(f"cannot unpickle: {type(exc).__name__}") from None


class _Stored(Protocol):
    value: bytes
    flags: int


def decode_item(serializer: Serializer, item: _Stored) -> Any:
    """The value of a stored item, or ``ValueError`` if it is not ours.

    Only the serializer's own flags are decoded, and counters (decimal text
    under the JSON flags, whatever the serializer): anything else, a pickle
    planted under foreign flags for one, is never decoded.
    """
    if item.flags == serializer.flags:
        return serializer.loads(item.value)
    if item.flags == FLAGS_JSON and item.value.strip().isdigit():
        return int(item.value)
    raise ValueError(f"flags {item.flags:#x}")
