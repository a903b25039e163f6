"""Session ids and the memcached keys built from them.

Nothing from the request reaches a key until it has been checked: an id must
match the exact shape of the ids ``new_session_id`` makes (see
``cookies.CookieCodec``), and a variable name is either made of a small safe
alphabet or replaced by its SHA-256.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Iterable

#: memcached's limit on key length, in bytes.
MAX_KEY_LENGTH = 250

_ID_RE = re.compile(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}")
_SAFE_NAME_RE = re.compile(r"[A-Za-z0-9_.:\-]+")


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


def check_name(name: object) -> None:
    """Raise ``TypeError`` for a non-str variable name, ``ValueError`` for ''."""
    if not isinstance(name, str):
        raise TypeError(f"session variable names must be str, not {type(name).__name__}")
    if not name:
        raise ValueError("session variable names must not be empty")


def name_suffix(name: str, room: int = MAX_KEY_LENGTH) -> str:
    """The part of a variable's key after ``<id>-``.

    Names of letters, digits and ``_ . : -`` that fit in ``room`` bytes are used
    as they are, so ``<id>-cart`` can be read on the server by hand. Any other
    name becomes ``~`` plus its SHA-256; the safe alphabet has no ``~``, so the
    two forms never collide. Raises as ``check_name`` does.
    """
    check_name(name)
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
        """The key of variable ``name`` (a name that passed ``check_name``)."""
        return self.stem(session_id) + _suffix(name, self._room)

    def variables(self, session_id: str, names: Iterable[str]) -> list[str]:
        """``variable`` for each of ``names``, in order (one batch's keys)."""
        base = self.stem(session_id)
        room = self._room
        return [base + _suffix(name, room) for name in names]

    def stem(self, session_id: str) -> str:
        """What every variable key of ``session_id`` starts with; ``suffix`` ends it."""
        return self.prefix + session_id + "-"

    def suffix(self, name: str) -> str:
        """The end of ``name``'s key (a name that passed ``check_name``)."""
        return _suffix(name, self._room)

    def internal(self, session_id: str, label: str) -> str:
        """Key of a variable the library keeps for itself (e.g. flashes).

        ``!`` is outside the safe alphabet, so no user name maps to it.
        """
        return f"{self.prefix}{session_id}-!{label}"
