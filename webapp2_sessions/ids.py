"""Session ids, the cookie that carries them, and the keys built from them.

Nothing from the request reaches a memcached key until it has been checked
here: an id must match the exact shape of ids we generate, and a variable name
is either made of a small safe alphabet or replaced by its SHA-256.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Sequence

#: memcached's limit on key length, in bytes.
MAX_KEY_LENGTH = 250

_ID_RE = re.compile(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}")
_SAFE_NAME_RE = re.compile(r"[A-Za-z0-9_.:\-]+")
# Longest cookie value worth looking at: an id, a dot and a SHA-256 signature
# in unpadded URL-safe base64.
_MAX_COOKIE_LENGTH = 32 + 1 + 43
_SIGNER_SALT = b"webapp2_sessions.cookie"


def new_session_id() -> str:
    """A fresh id: a UUID4 (122 random bits from the OS CSPRNG) in hex.

    The same bits ``uuid.uuid4().hex`` gives, set by hand: building a UUID
    object costs more than the random bytes do, on every new visitor.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


def is_session_id(value: str) -> bool:
    """True when ``value`` has exactly the shape of ``new_session_id()``."""
    return _ID_RE.fullmatch(value) is not None


def log_token(session_id: str) -> str:
    """A short, irreversible tag for a session id, safe to write to logs."""
    return hashlib.sha256(session_id.encode("ascii", "replace")).hexdigest()[:12]


class CookieCodec:
    """Turns an id into the cookie value and back.

    With secret keys, the value is ``<id>.<signature>``: HMAC-SHA256 of the id
    under a key derived from the secret (HMAC of a fixed salt, so the secret
    itself never signs user-visible data), in unpadded URL-safe base64. The
    first key signs and every key verifies, so keys can be rotated. Without
    keys the value is the bare id. ``decode`` never raises: anything
    malformed, forged or signed with a retired key comes back as ``None``.

    The format is the one itsdangerous' ``Signer`` writes with
    ``key_derivation="hmac"`` and SHA-256; it is built on ``hmac`` directly
    because that costs half as much per new visitor and one dependency less.
    """

    def __init__(self, secret_keys: Sequence[str] = ()) -> None:
        self._keys = tuple(
            hmac.digest(key.encode("utf-8"), _SIGNER_SALT, "sha256") for key in secret_keys
        )
        # A returning visitor presents the same value on every request: verify
        # it once per process (bounded; only exact values that verified map
        # to an id, anything else maps to None).
        self.decode = functools.lru_cache(maxsize=8192)(self._decode)  # type: ignore[method-assign]

    @property
    def signed(self) -> bool:
        return bool(self._keys)

    def encode(self, session_id: str) -> str:
        if not self._keys:
            return session_id
        return session_id + "." + _signature(self._keys[0], session_id)

    def decode(self, raw: str | None) -> str | None:
        """The id in cookie value ``raw``, or None if it is not a valid one."""
        return self._decode(raw)

    def _decode(self, raw: str | None) -> str | None:
        if not raw or len(raw) > _MAX_COOKIE_LENGTH or not raw.isascii():
            return None
        if self._keys:
            raw, dot, signature = raw.partition(".")
            if not dot:
                return None
            # Every key is tried, so the time taken says nothing about which
            # (if any) matched; each comparison is constant-time.
            valid = False
            for key in self._keys:
                valid |= hmac.compare_digest(_signature(key, raw), signature)
            if not valid:
                return None
        return raw if is_session_id(raw) else None


def _signature(key: bytes, session_id: str) -> str:
    digest = hmac.digest(key, session_id.encode("ascii"), "sha256")
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def name_suffix(name: str, room: int = MAX_KEY_LENGTH) -> str:
    """The part of a variable's key after ``<id>-``.

    Names of letters, digits and ``_ . : -`` that fit in ``room`` bytes are used
    as they are, so ``<id>-cart`` can be read on the server by hand. Any other
    name becomes ``~`` plus its SHA-256; the safe alphabet has no ``~``, so the
    two forms never collide. Raises ``TypeError`` for a non-str name and
    ``ValueError`` for an empty one.
    """
    if not isinstance(name, str):
        raise TypeError(f"session variable names must be str, not {type(name).__name__}")
    if not name:
        raise ValueError("session variable names must not be empty")
    return _suffix(name, room)


@functools.lru_cache(maxsize=4096)
def _suffix(name: str, room: int) -> str:
    if len(name) <= room and _SAFE_NAME_RE.fullmatch(name):
        return name
    return "~" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()


@functools.lru_cache(maxsize=64)
def key_scheme(prefix: str) -> KeyScheme:
    """The shared (stateless) KeyScheme for ``prefix``."""
    return KeyScheme(prefix)


class KeyScheme:
    """Builds every memcached key of a session from a validated id.

    ``record(sid)`` is ``<prefix><sid>``: the session's own record (creation
    time, bindings and the list of its variable names). ``variable(sid, name)``
    is ``<prefix><sid>-<name>`` as described in ``name_suffix``.
    """

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._room = MAX_KEY_LENGTH - len(prefix) - 33

    def record(self, session_id: str) -> str:
        return self.prefix + session_id

    def variable(self, session_id: str, name: str) -> str:
        return f"{self.prefix}{session_id}-{name_suffix(name, self._room)}"

    def variable_fast(self, session_id: str, name: str) -> str:
        """``variable`` for a name already checked by ``name_suffix``."""
        return self.prefix + session_id + "-" + _suffix(name, self._room)

    def variables(self, session_id: str, names: Iterable[str]) -> list[str]:
        """``variable_fast`` for each of ``names``, in order."""
        base = self.prefix + session_id + "-"
        room = self._room
        return [base + _suffix(name, room) for name in names]

    def internal(self, session_id: str, label: str) -> str:
        """Key of a variable the library keeps for itself (e.g. flashes).

        ``!`` is outside the safe alphabet, so no user name maps to it.
        """
        return f"{self.prefix}{session_id}-!{label}"
