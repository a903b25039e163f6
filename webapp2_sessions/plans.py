"""The batches a request sends for a session, planned on its record as pure functions.

Appending is atomic on the server and fails once the record is gone, which is
how concurrent requests add names without losing each other's. A logout
appends ``!dead`` before it reads the names to delete, so every writer either
appended its names in time to be deleted, or finds the session dead (or gone)
when it re-reads the record at the end of its batch, and undoes its writes.

Here are those batches: the load (``LoadPlan``), a new session's record
(``new_record_op``), the guarded write (``WritePlan``, and ``WriteOutcome``
for what it did), taking a write back (``undo_ops``), the logout's mark
(``mark_batch``) and deletion (``deletion_ops``, ``merged``). ``Session``
runs them; the record's format is ``record.py``. Nothing here touches a store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from .keys import KeyScheme
from .record import (
    DEAD_LINE,
    DEAD_MARK,
    FLAGS_RECORD,
    Record,
    index_lines,
    is_live,
    parse_or_none,
    parse_value,
)
from .stores import Batch, Delete, Failed, Get, Item, Op, Result, Set

_NO_NAMES: frozenset[str] = frozenset()


class LoadPlan:
    """Read the record and ``names`` (and the flashes), renewing their TTLs.

    Its results are found by name: ``RECORD``, the slice ``values`` (one per
    name, in order) and ``flashes`` (-1: not asked for).
    """

    __slots__ = ("flashes", "ops", "values")

    RECORD = 0

    def __init__(
        self,
        keys: KeyScheme,
        session_id: str,
        names: Sequence[str],
        flashes: bool,
        record_ttl: int,
        ttl: int,
    ) -> None:
        ops: list[Op] = [Get(keys.record(session_id), record_ttl)]
        ops += [Get(key, ttl) for key in keys.variables(session_id, names)]
        self.values = slice(1, len(ops))
        self.flashes = -1
        if flashes:
            self.flashes = len(ops)
            ops.append(Get(keys.internal(session_id, "flashes"), ttl))
        self.ops = ops


def new_record_op(keys: KeyScheme, session_id: str, record: Record, record_ttl: int) -> Set:
    """Store the record of a new session; refused if the id is taken."""
    return Set(keys.record(session_id), record.encode(), FLAGS_RECORD, record_ttl, "add")


@dataclass(slots=True)
class WriteOutcome:
    """What a guarded write did, read from its results."""

    #: The record was gone at the end (ended, or evicted: the durable tier
    #: tells them apart).
    gone: bool
    #: The record carried a logout mark: a logout is under way.
    dead: bool
    #: The live record refused the new index lines (too large): undo the body.
    refused: Failed | None
    #: This request's copy of the record afterwards.
    record: Record
    #: The results of the body, in its order.
    body: Sequence[Result]
    #: Index lines to append because another request changed the index under
    #: this one (empty when none are needed).
    relist: bytes
    #: The id is being rotated away (or was): undo the body, keep the session.
    moved: bool = False

    @property
    def ended(self) -> bool:
        """The session ended while the batch ran (logout, expiry): undo the body."""
        return self.gone or self.dead


class WritePlan:
    """One batch that writes ``body`` to a stored session, guarded.

    It appends index lines for new and deleted names, compacts the index when
    deletions have made it long (a compare-and-set, skipped by the server if
    anyone appended since it was read), and reads the record back last: a
    session that ended while the batch ran shows it there. Its results are
    found by name: ``compact`` and ``index`` (-1: not in this batch), the
    slice ``body`` and ``readback``.
    """

    __slots__ = (
        "added",
        "body",
        "compact",
        "deleted",
        "index",
        "lines",
        "new_flashes",
        "ops",
        "readback",
        "record",
        "removed",
        "written",
    )

    def __init__(
        self,
        keys: KeyScheme,
        session_id: str,
        record: Record,
        record_cas: int,
        body: Sequence[Op],
        written: AbstractSet[str],
        deleted: AbstractSet[str],
        new_flashes: bool,
        record_ttl: int,
    ) -> None:
        record_key = keys.record(session_id)
        self.record = record
        self.written = written
        self.deleted = deleted
        names = record.names
        # Usually nothing to add or remove: found by a loop, before any set
        # arithmetic is done.
        added: AbstractSet[str] = _NO_NAMES
        removed: AbstractSet[str] = _NO_NAMES
        for name in written:
            if name not in names:
                added = written - names
                break
        for name in deleted:
            if name in names:
                removed = deleted & names
                break
        self.added, self.removed = added, removed
        self.new_flashes = new_flashes
        ops: list[Op] = []
        self.compact = -1
        if record_cas and record.needs_compaction():
            self.compact = 0
            ops.append(Set(record_key, record.encode(), FLAGS_RECORD, record_ttl, cas=record_cas))
        #: The index lines this write appends (empty: none).
        self.lines = b""
        self.index = -1
        if added or removed or new_flashes:
            self.lines = index_lines(added, removed, new_flashes)
            self.index = len(ops)
            ops.append(Set(record_key, self.lines, mode="append"))
        self.body = slice(len(ops), len(ops) + len(body))
        ops += body
        self.readback = len(ops)
        ops.append(Get(record_key))
        self.ops = ops

    def outcome(self, results: Sequence[Result]) -> WriteOutcome:
        body = results[self.body]
        readback = results[self.readback]
        record = self.record
        if (
            self.index < 0
            and self.compact < 0
            and is_live(readback)
            and readback.flags == FLAGS_RECORD  # type: ignore[union-attr]
            and parse_value(readback.value) is record  # type: ignore[union-attr]
        ):
            # The usual write: no index lines, and the live record read back
            # is the very one loaded (the parse cache: unchanged bytes).
            return WriteOutcome(False, False, None, record, body, b"")
        if not is_live(readback):
            gone = not isinstance(readback, Item)
            moved = not gone and DEAD_MARK not in readback.value  # type: ignore[union-attr]
            return WriteOutcome(gone, not (gone or moved), None, record, body, b"", moved)
        index = self.index
        if index >= 0 and results[index] is not True:
            # The record is there and live, so the append was refused for
            # its size (memcached answers NOT_STORED or an error).
            refusal = results[index]
            refused = refusal if isinstance(refusal, Failed) else Failed("index append refused")
            return WriteOutcome(False, False, refused, record, body, b"")
        if self.compact >= 0 and results[self.compact] is True:
            record = record.compacted()
        if index >= 0:
            record = record.changed(self.added, self.removed, self.new_flashes)
        relist = b""
        latest = parse_or_none(readback)
        # Unchanged bytes parse to the very record loaded (the parse cache):
        # then nobody changed the index meanwhile.
        if latest is not None and latest is not self.record:
            # The last line for a name wins: if another request changed the
            # index meanwhile (deleting a name this one just wrote, or listing
            # one it deleted), one more append puts it right.
            hidden = self.written - latest.names
            stale = self.deleted & latest.names
            if hidden or stale:
                relist = index_lines(hidden, stale)
                record = dataclasses.replace(record, names=(record.names | hidden) - stale)
        return WriteOutcome(False, False, None, record, body, relist)


def undo_ops(keys: KeyScheme, session_id: str, ops: Sequence[Op]) -> list[Op]:
    """Deletes taking back what ``ops`` stored, but for the record itself."""
    record_key = keys.record(session_id)
    written = {op.key for op in ops if isinstance(op, Set) and op.key != record_key}
    return [Delete(key) for key in sorted(written)]


def mark_batch(keys: KeyScheme, session_id: str) -> Batch:
    """Append the logout mark and read the record back, in one round trip.

    Parts: ``mark`` (True if appended, so the record existed) and
    ``record``. Any writer after the mark undoes itself; any name appended
    before it is in the record read back, so the deletion can find it.
    """
    record_key = keys.record(session_id)
    batch = Batch()
    batch.add("mark", Set(record_key, DEAD_LINE + b"\n", mode="append"))
    batch.add("record", Get(record_key))
    return batch


def deletion_ops(keys: KeyScheme, session_id: str, record: Record) -> list[Op]:
    """Delete the record and every variable it ever listed (and the flashes)."""
    ops: list[Op] = [Delete(keys.record(session_id))]
    ops += [Delete(key) for key in keys.variables(session_id, sorted(record.listed_ever))]
    if record.flashes:
        ops.append(Delete(keys.internal(session_id, "flashes")))
    return ops


def merged(record: Record, latest: Record | None) -> Record:
    """``record`` with the names and flashes ``latest`` knows of added."""
    if latest is None:
        return record
    return dataclasses.replace(
        record,
        listed_ever=record.listed_ever | latest.listed_ever,
        flashes=record.flashes or latest.flashes,
    )
