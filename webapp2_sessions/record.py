"""The session record: the one key that makes a session id real.

Stored at ``<prefix><id>`` as a JSON header line followed by an append-only
index of variable names, one JSON value a line (so the whole record parses in
one ``json.loads``)::

    {"v":1,"c":1700000000.0}
    "cart"            <- a name was stored
    "user"
    {"-":"cart"}      <- a name was deleted
    {"!":"flashes"}   <- the session has a flash list
    {"!":"dead"}      <- logout has begun: the session is over

Appending is atomic on the server and fails once the record is gone, which is
how concurrent requests add names without losing each other's. A logout
appends ``!dead`` before it reads the names to delete, so every writer either
appended its names in time to be deleted, or finds the session dead (or gone)
when it re-reads the record at the end of its batch, and undoes its writes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from .stores import Item

#: Client flags of session records and of flash lists.
FLAGS_RECORD = 0x5753_0010
FLAGS_FLASHES = 0x5753_0011

_FLASHES_LINE = b'{"!":"flashes"}'
DEAD_LINE = b'{"!":"dead"}'
_encode_name = json.JSONEncoder(ensure_ascii=True).encode


_DEAD_MARK = b"\n" + DEAD_LINE + b"\n"


def is_live(item: object) -> bool:
    """True for a record that exists and has no logout under way."""
    return isinstance(item, Item) and _DEAD_MARK not in item.value


def client_hash(text: str | None) -> str | None:
    """What the record keeps of a user agent or address: a hash, not the text."""
    if text is None:
        return None
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:32]


def index_lines(
    added: AbstractSet[str] = frozenset(),
    removed: AbstractSet[str] = frozenset(),
    flashes: bool = False,
) -> bytes:
    """Index lines recording ``added`` and ``removed`` names (JSON-quoted)."""
    lines = [_name_line(n) for n in sorted(added)]
    if removed:
        lines += [b'{"-":' + _name_line(n)[:-1] + b"}\n" for n in sorted(removed)]
    if flashes:
        lines.append(_FLASHES_LINE + b"\n")
    return b"".join(lines)


@functools.lru_cache(maxsize=4096)
def _name_line(name: str) -> bytes:
    """The index line of ``name``; the same few names are listed over and over."""
    # ensure_ascii: a JSON string then holds no raw newline or non-ASCII byte.
    return _encode_name(name).encode("ascii") + b"\n"


@dataclass(frozen=True, slots=True)
class Record:
    """A parsed session record.

    ``created`` (a Unix time) drives the absolute timeout and survives id
    regeneration. ``names`` are the variables currently listed, ``ever`` every
    name listed at any point (what logout must delete). ``dead`` counts the
    logout marks: one is enough to end the session, and a regeneration that
    finds more than its own knows another request is ending it too.

    Immutable: a returning visitor's record is parsed once per process and
    the same object serves every request, so changes make a new one.
    """

    created: float
    user_agent: str | None = None
    remote_addr: str | None = None
    names: AbstractSet[str] = frozenset()
    ever: AbstractSet[str] = frozenset()
    flashes: bool = False
    dead: int = 0
    lines: int = 0

    def encode(self) -> bytes:
        """Header plus a compact index of the current names."""
        # Formatted by hand (json.dumps of a dict is the slow part of a new
        # session); the hashes are hex, so they need no escaping.
        head = b'{"v":1,"c":%.3f' % self.created
        if self.user_agent is not None:
            head += b',"ua":"%s"' % self.user_agent.encode("ascii")
        if self.remote_addr is not None:
            head += b',"ip":"%s"' % self.remote_addr.encode("ascii")
        return head + b"}\n" + index_lines(self.names, flashes=self.flashes)

    def needs_compaction(self) -> bool:
        """True once deletions have made the index much longer than needed."""
        return self.lines > 2 * len(self.names) + 32

    def changed(self, added: AbstractSet[str], removed: AbstractSet[str], flashes: bool) -> Record:
        """This record once ``index_lines(added, removed, flashes)`` is appended."""
        return dataclasses.replace(
            self,
            names=(self.names | added) - removed,
            ever=self.ever | added,
            flashes=self.flashes or flashes,
            lines=self.lines + len(added) + len(removed) + int(flashes),
        )

    def compacted(self) -> Record:
        """This record once rewritten by ``encode``."""
        return dataclasses.replace(self, lines=len(self.names) + int(self.flashes))

    @classmethod
    def parse(cls, item: Item) -> Record:
        """Decode a stored record; ``ValueError`` if it is not one of ours.

        The result may be shared with other requests (see the class).
        """
        if item.flags != FLAGS_RECORD:
            raise ValueError("foreign flags")
        return _parse(item.value)


# A returning visitor's record is the same bytes request after request: parse
# it once per process. Records are small; the cache is bounded.
@functools.lru_cache(maxsize=4096)
def _parse(value: bytes) -> Record:
    """Decode record bytes; ``ValueError`` if they are not a record."""
    try:
        entries = json.loads(b"[" + value.rstrip(b"\n").replace(b"\n", b",") + b"]")
        if not entries or not isinstance(entries[0], dict):
            raise ValueError("header is not an object")
        header = entries[0]
        created = _time(header.get("c"))
        names: set[str] = set()
        ever: set[str] = set()
        flashes = False
        dead = 0
        for entry in entries[1:]:
            if isinstance(entry, str) and entry:
                names.add(entry)
                ever.add(entry)
            elif not isinstance(entry, dict):
                raise ValueError("index entry is not a name")
            elif isinstance(entry.get("-"), str) and entry["-"]:
                names.discard(entry["-"])
            elif entry.get("!") == "flashes":
                flashes = True
            elif entry.get("!") == "dead":
                dead += 1
        return Record(
            created=created,
            user_agent=_optional_str(header.get("ua")),
            remote_addr=_optional_str(header.get("ip")),
            names=frozenset(names),
            ever=frozenset(ever),
            flashes=flashes,
            dead=dead,
            lines=len(entries) - 1,
        )
    except (UnicodeDecodeError, RecursionError, OverflowError) as exc:
        raise ValueError(type(exc).__name__) from None


def _time(value: Any) -> float:
    """A finite Unix time from the header, or ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("missing times")
    result = float(value)  # OverflowError for huge integers, caught by the caller
    if not math.isfinite(result):
        raise ValueError("non-finite time")
    return result


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
