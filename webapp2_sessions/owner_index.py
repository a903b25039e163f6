"""An owner's index on memcached: its key, lifetime and format, as pure functions.

Only memcached alone keeps one (with the database tier, the session's row
holds the owner's hash, an indexed column, and the database lists an
owner's sessions). What runs these against a store is ``owners.py``.

The index is the item ``<prefix>owner~<sha256>``: a header line ``#<n>``
(the ids kept by the last compaction) and one session id a line, appended
to (so concurrent logins never lose each other's line). It lives on the
node that ``owner~<sha256>`` hashes to. The index is never trusted on its
own: a listed session is ended only if its record, read first, is live and
names this owner (``owned_by``). So ids of sessions logged out, expired,
evicted or since tied to someone else are harmless, and compaction drops
them once the index has grown.

Its lifetime: ``2 * record_ttl``, renewed at each login and by any request
of an owned session once that session's last renewal by this process is
more than half the idle window old (one round trip then, never for
sessions without an owner). So it outlives every session it lists; if it is
evicted all the same, that renewal lists the session again.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import MAX_SECONDS, SessionConfig
from .keys import KeyScheme, is_session_id
from .record import Record, parse_or_none
from .stores import Item, Result

#: Client flags of an owner's index.
FLAGS_INDEX = 0x5753_0012
#: Bytes of one index line: an id and its newline.
_LINE = 33
#: Lines an index may gain over twice what its last compaction kept.
COMPACT_SLACK = 16


def index_key(keys: KeyScheme, digest: str) -> str:
    """``<prefix>owner~<sha256>``: no session or variable key has that shape."""
    return f"{keys.prefix}owner~{digest}"


def route(digest: str) -> str:
    """What the store routes the index by (as a session by its id)."""
    return "owner~" + digest


def index_ttl(config: SessionConfig) -> int:
    """Twice the idle window: see the module's docstring."""
    return min(2 * config.record_ttl, MAX_SECONDS)


@dataclass
class Index:
    """An owner's index as read."""

    #: Listed ids, oldest first, each once.
    ids: list[str]
    #: Ids the last compaction kept.
    kept: int
    size: int
    cas: int
    #: The item is not an index of ours (replaced at the next compaction).
    foreign: bool = False


def parse_index(item: Result) -> Index | None:
    """The index in ``item``, or None if there is none.

    Only lines of the exact shape of our ids count: nothing else read here
    ever reaches a key.
    """
    if not isinstance(item, Item):
        return None
    if item.flags != FLAGS_INDEX:
        return Index([], 0, len(item.value), item.cas, foreign=True)
    lines = item.value.split(b"\n")
    kept = 0
    if lines and lines[0].startswith(b"#") and lines[0][1:].isdigit() and len(lines[0]) < 12:
        kept = int(lines.pop(0)[1:])
    seen: dict[str, None] = {}
    for line in lines:
        sid = line.decode("ascii", "replace")
        if is_session_id(sid):
            seen.pop(sid, None)  # listed again: it counts where it was last listed
            seen[sid] = None
    return Index(list(seen), kept, len(item.value), item.cas)


def grown(index: Index, config: SessionConfig) -> bool:
    """True once ``index`` is due a compaction: not ours, grown well past what
    its last compaction kept, or half of ``item_size_max``."""
    return (
        index.foreign
        or len(index.ids) > 2 * index.kept + COMPACT_SLACK
        or index.size > config.item_size_max // 2
    )


def compact_limit(config: SessionConfig) -> int:
    """Most ids a compacted index keeps: half of ``item_size_max``, room to grow."""
    return max(1, (config.item_size_max // 2 - 300) // _LINE)


def owned_by(item: Result, digest: str) -> bool:
    """True for a live session record naming the owner ``digest``."""
    record = parse_or_none(item)
    return record is not None and not record.dead and record.owner == digest


def to_revoke(item: Result, digest: str) -> Record | None:
    """The record in ``item`` if a revocation of ``digest`` must end it, else None.

    A live record naming that owner, or one naming it that carries a single
    logout mark: a regeneration under way (``transitions.claim``) has marked
    it, and keeps its copy only if the record is still there, so the record
    must be deleted. More than one mark means another request is ending the
    session already. Only the record's own owner line counts, never the
    index that listed it.
    """
    record = parse_or_none(item)
    if record is None or record.owner != digest or record.dead > 1:
        return None
    return record
