"""What a request changed, kept until the end of the request.

Every change is written in one batch by ``Session.save``; ``Changes.ops`` is
that batch's body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import flashes
from .config import SessionConfig
from .keys import KeyScheme
from .record import FLAGS_FLASHES
from .stores import Delete, Item, Op, Set

if TYPE_CHECKING:
    from .sql import Writer


class Changes:
    """Pending sets, deletes and flash changes of one request."""

    __slots__ = ("deleted", "flashes", "flashes_read", "force", "raw", "written")

    def __init__(self) -> None:
        #: Serialized values set, by name.
        self.written: dict[str, bytes] = {}
        self.deleted: set[str] = set()
        #: New flash lines.
        self.flashes: list[bytes] = []
        #: The stored flashes were read, so they are to be deleted.
        self.flashes_read = False
        #: Store the session even if nothing else changed.
        self.force = False
        #: Names written as they were stored, with their own flags (a move
        #: to a new id): a counter stays a counter under any serializer.
        self.raw: dict[str, int] = {}

    def __bool__(self) -> bool:
        return bool(
            self.written or self.deleted or self.flashes or self.flashes_read or self.force
        )

    def __len__(self) -> int:
        """How many variables are set or deleted (for log lines)."""
        return len(self.written) + len(self.deleted)

    def clear(self) -> None:
        self.written.clear()
        self.deleted.clear()
        self.flashes.clear()
        self.flashes_read = self.force = False
        self.raw.clear()

    def ops(
        self,
        keys: KeyScheme,
        session_id: str,
        config: SessionConfig,
        read: Item | None,
        ttl: int | None = None,
    ) -> list[Op]:
        """The operations writing these changes to ``session_id``.

        ``read`` is the stored flash list as this request read it: deleting
        it is guarded by its CAS token, so a flash added meanwhile survives.
        ``ttl`` is the session's own (``set_expiry``), if not the settings'.
        """
        value_flags = config.serializer.flags
        if ttl is None:
            ttl = config.ttl
        written = self.written
        stem, suffix, raw = keys.stem(session_id), keys.suffix, self.raw
        ops: list[Op] = [
            Set(stem + suffix(name), data, raw.get(name, value_flags), ttl)
            for name, data in written.items()
        ]
        if self.deleted:
            ops += [Delete(key) for key in keys.variables(session_id, sorted(self.deleted))]
        if self.flashes_read or self.flashes:
            taken = read if self.flashes_read else None
            room = config.item_room
            ops += flashes.write_ops(keys, session_id, taken, self.flashes, ttl, room)
        return ops


#: The changes of a request that made none: shared, and never changed itself
#: (``Session`` swaps in its own ``Changes`` before the first write).
NO_CHANGES = Changes()


class DurableChanges:
    """The part of a request's changes the database keeps (quick names aside)."""

    __slots__ = ("deleted", "flash_lines", "flashes_read", "raw", "written")

    def __init__(self, changes: Changes, quick: frozenset[str], read: Item | None) -> None:
        self.written = {n: d for n, d in changes.written.items() if n not in quick}
        self.raw = {n: f for n, f in changes.raw.items() if n in self.written}
        self.deleted = {n for n in changes.deleted if n not in quick}
        self.flash_lines = b"".join(changes.flashes)
        #: The stored flashes this request read, to take out of the database.
        self.flashes_read = read.value if changes.flashes_read and read is not None else None

    def __bool__(self) -> bool:
        return bool(self.written or self.deleted or self.flash_lines or self.flashes_read)

    def apply(self, writer: Writer, value_flags: int) -> bytes | None:
        """Write these changes; if they touched the flash list, return it as
        the database now holds it (b"" for none), for memcached to copy."""
        writer.delete(self.deleted)
        if self.raw:
            raw = self.raw
            writer.set({n: d for n, d in self.written.items() if n not in raw}, value_flags)
            for name, flags in raw.items():
                writer.set({name: self.written[name]}, flags)
        else:
            writer.set(self.written, value_flags)
        if self.flashes_read is None and not self.flash_lines:
            return None
        if self.flashes_read is not None:
            writer.consume_flashes(self.flashes_read, FLAGS_FLASHES)
        if self.flash_lines:
            writer.append_flashes(self.flash_lines, FLAGS_FLASHES)
        return writer.flash_list()
