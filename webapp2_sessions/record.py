"""The session record's format: parsed, encoded and appended to, as pure functions.

The record is the one key that makes a session id real.

Stored at ``<prefix><id>`` as a JSON header line followed by an append-only
index of variable names, one JSON value a line (so the whole record parses in
one ``json.loads``)::

    {"v":1,"c":1700000000.0}
    "cart"            <- a name was stored
    "user"
    {"-":"cart"}      <- a name was deleted
    {"!":"flashes"}   <- the session has a flash list
    {"o":"9f86...08"} <- the session's owner, as a SHA-256 (see owners.py)
    {"!":"dead"}      <- logout has begun: the session is over
    {"x":2592000}     <- set_expiry() changed the session's lifetime (null: back)
    {"!":"moving","to":"<new id>","t":1700000000.0}
                      <- an id rotation has claimed it (see rotation.py)

The header may also hold ``"x"`` (the remembered lifetime, ``set_expiry``)
and ``"i"`` (when this id was issued, if not at creation). After a rotation
the record is replaced by a pointer, ``{"v":1,"c":...,"i":...,"to":"<new id>"}``,
that leads to the new id for ``rotate_grace`` seconds from its ``"i"``.

The index is append-only because appending is atomic on the server: the
batches that rely on that, and on the logout mark, are planned in
``plans.py``. Nothing here touches a store.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, TypeVar, dataclass_transform

from .keys import is_session_id
from .stores import Item, Result

_T = TypeVar("_T")

#: Client flags of session records and of flash lists.
FLAGS_RECORD = 0x5753_0010
FLAGS_FLASHES = 0x5753_0011

_FLASHES_LINE = b'{"!":"flashes"}'
DEAD_LINE = b'{"!":"dead"}'
_encode_name = json.JSONEncoder(ensure_ascii=True).encode
#: An owner as the record keeps it: the SHA-256 of the owner, in hex.
_OWNER_RE = re.compile(r"[0-9a-f]{64}")


#: A logout mark as it shows inside a record's bytes.
DEAD_MARK = b"\n" + DEAD_LINE + b"\n"
#: In a moving mark and a pointer only: inside a JSON string every quote is
#: escaped, so no variable name's line can hold it.
_MOVED_MARK = b'"to":'


def is_live(item: object) -> bool:
    """True for a record that exists, with no logout or id rotation under way."""
    return isinstance(item, Item) and DEAD_MARK not in item.value and _MOVED_MARK not in item.value


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


@dataclass_transform(frozen_default=True)
def _immutable(cls: type[_T]) -> type[_T]:
    """A dataclass that the type checker holds frozen (it refuses any
    assignment to a field), built as a plain one.

    A frozen dataclass sets each field through ``object.__setattr__``: with
    13 fields, building a Record cost 3.4 us against 0.3, and a new visitor
    builds two. Hashed by its fields, as a frozen one is.
    """
    return dataclass(slots=True, unsafe_hash=True)(cls)


@_immutable
class Record:
    """A parsed session record.

    ``created`` (a Unix time) drives the absolute timeout and survives id
    regeneration. ``names`` are the variables currently listed, ``listed_ever`` every
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
    listed_ever: AbstractSet[str] = frozenset()
    flashes: bool = False
    dead: int = 0
    lines: int = 0
    #: The SHA-256 (hex) of the session's owner (``owners.py``), or None.
    owner: str | None = None
    #: Seconds the session is remembered for (``set_expiry``); None: the settings'.
    expiry: int | None = None
    #: When this id was issued, if not at ``created`` (0.0): a rotation's clock.
    issued: float = 0.0
    #: A pointer's new id: this id was rotated away (see ``rotation.py``).
    to: str | None = None
    #: The rotations that claimed this record, in order: (new id, when).
    moving: tuple[tuple[str, float], ...] = ()

    @property
    def issued_at(self) -> float:
        """When this id was issued (records older than rotation: its creation)."""
        return self.issued or self.created

    def encode(self) -> bytes:
        """Header plus a compact index of the current names."""
        # Formatted by hand (json.dumps of a dict is the slow part of a new
        # session); the hashes are hex, so they need no escaping.
        head = b'{"v":1,"c":%.3f' % self.created
        if self.user_agent is not None:
            head += b',"ua":"%s"' % self.user_agent.encode("ascii")
        if self.remote_addr is not None:
            head += b',"ip":"%s"' % self.remote_addr.encode("ascii")
        if self.owner is not None:
            head += b',"o":"%s"' % self.owner.encode("ascii")
        if self.expiry is not None:
            head += b',"x":%d' % self.expiry
        if self.issued:
            head += b',"i":%.3f' % self.issued
        return head + b"}\n" + index_lines(self.names, flashes=self.flashes)

    def needs_compaction(self) -> bool:
        """True once deletions have made the index much longer than needed."""
        return self.lines > 2 * len(self.names) + 32

    # The copies below are built field by field: dataclasses.replace() costs
    # as much as the rest of a new visitor's record handling together.

    def listing(self, names: AbstractSet[str], flashes: bool) -> Record:
        """A new session's record: this header with ``names`` (and the flashes) listed."""
        return Record(
            self.created,
            self.user_agent,
            self.remote_addr,
            names,
            names,
            flashes,
            self.dead,
            len(names) + int(flashes),
            self.owner,
            self.expiry,
            self.issued,
            self.to,
            self.moving,
        )

    def changed(self, added: AbstractSet[str], removed: AbstractSet[str], flashes: bool) -> Record:
        """This record once ``index_lines(added, removed, flashes)`` is appended."""
        return Record(
            self.created,
            self.user_agent,
            self.remote_addr,
            (self.names | added) - removed,
            self.listed_ever | added,
            self.flashes or flashes,
            self.dead,
            self.lines + len(added) + len(removed) + int(flashes),
            self.owner,
            self.expiry,
            self.issued,
            self.to,
            self.moving,
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
        return parse_value(item.value)


# A returning visitor's record is the same bytes request after request: parse
# it once per process. Records are small; the cache is bounded.
@functools.lru_cache(maxsize=4096)
def parse_value(value: bytes) -> Record:
    """Decode record bytes; ``ValueError`` if they are not a record."""
    try:
        entries = json.loads(b"[" + value.rstrip(b"\n").replace(b"\n", b",") + b"]")
        if not entries or not isinstance(entries[0], dict):
            raise ValueError("header is not an object")
        header = entries[0]
        created = _time(header.get("c"))
        names: set[str] = set()
        listed_ever: set[str] = set()
        flashes = False
        dead = 0
        owner = _owner(header.get("o"))
        expiry = _expiry(header.get("x"))
        moving: list[tuple[str, float]] = []
        for entry in entries[1:]:
            if isinstance(entry, str) and entry:
                names.add(entry)
                listed_ever.add(entry)
            elif not isinstance(entry, dict):
                raise ValueError("index entry is not a name")
            elif isinstance(entry.get("-"), str) and entry["-"]:
                names.discard(entry["-"])
            elif entry.get("!") == "flashes":
                flashes = True
            elif entry.get("!") == "dead":
                dead += 1
            elif "o" in entry:
                owner = _owner(entry["o"]) or owner
            elif "x" in entry:
                expiry = _expiry(entry["x"])
            elif entry.get("!") == "moving" and _new_id(entry.get("to")):
                moving.append((entry["to"], _time(entry.get("t"))))
        return Record(
            created=created,
            user_agent=_optional_str(header.get("ua")),
            remote_addr=_optional_str(header.get("ip")),
            names=frozenset(names),
            listed_ever=frozenset(listed_ever),
            flashes=flashes,
            dead=dead,
            lines=len(entries) - 1,
            owner=owner,
            expiry=expiry,
            issued=_time(header["i"]) if "i" in header else 0.0,
            to=header["to"] if _new_id(header.get("to")) else None,
            moving=tuple(moving),
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


def _expiry(value: Any) -> int | None:
    """A remembered lifetime from the record (anything else: none)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _new_id(value: Any) -> bool:
    return isinstance(value, str) and is_session_id(value)


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _owner(value: Any) -> str | None:
    """An owner's hash as the record holds it; anything else is no owner
    (it becomes part of a key, so only this exact shape is taken)."""
    return value if isinstance(value, str) and _OWNER_RE.fullmatch(value) else None


def owner_line(owner_hash: str) -> bytes:
    """The index line that ties a session to ``owner_hash`` (the last one wins)."""
    assert _OWNER_RE.fullmatch(owner_hash)
    return b'{"o":"%s"}\n' % owner_hash.encode("ascii")


def parse_or_none(item: Result) -> Record | None:
    """The record in ``item``, or None if it is missing or not a record."""
    if not isinstance(item, Item):
        return None
    try:
        return Record.parse(item)
    except ValueError:
        return None
