"""Deletions a process owes its database: logouts that failed while it was down.

A logout deletes the session's rows first; if the database cannot be reached,
the rows stay, and a refill could bring the session back from them. So the
process remembers the id: it reads the session as gone until the rows are
deleted, which its next write transaction does once the database answers
(``sql.Database``). The memory is bounded: past ``MAX_OWED`` the oldest is
dropped with a log line, and that session's rows stay until they expire.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

log = logging.getLogger("webapp2_sessions")

#: Deletions that failed, remembered by a process until the database answers.
MAX_OWED = 10_000
#: Owed deletions completed at the start of one transaction, at most.
SETTLE_BATCH = 100


class OwedDeletions:
    """Session ids whose deletion failed, each with what to run once it is done.

    ``where()`` names the database in log lines. Thread-safe; ``in`` and
    ``bool()`` take no lock, since every request asks them.
    """

    def __init__(self, where: Callable[[], str]) -> None:
        self._where = where
        #: Session id -> what to run once its rows are deleted, or None.
        self._owed: OrderedDict[str, Callable[[], object] | None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._owed

    def __bool__(self) -> bool:
        return bool(self._owed)

    def __len__(self) -> int:
        return len(self._owed)

    def add(self, session_id: str, settled: Callable[[], object] | None = None) -> None:
        """Owe the deletion of ``session_id``; a ``settled`` given before is
        kept if none is given now."""
        with self._lock:
            owed = self._owed
            owed[session_id] = settled or owed.get(session_id)
            owed.move_to_end(session_id)
            dropped = 0
            while len(owed) > MAX_OWED:
                owed.popitem(last=False)
                dropped += 1
        if dropped:
            log.error(
                "%s: %d owed deletion(s) dropped (more than %d waiting); "
                "those sessions' rows stay until they expire",
                self._where(),
                dropped,
                MAX_OWED,
            )

    def discard(self, session_id: str) -> None:
        """A deletion of ``session_id`` succeeded: nothing is owed for it."""
        if self._owed:
            with self._lock:
                self._owed.pop(session_id, None)

    def next_batch(self) -> list[str]:
        """The oldest ids owed, at most ``SETTLE_BATCH``, for one transaction."""
        with self._lock:
            return list(itertools.islice(self._owed, SETTLE_BATCH))

    def settled(self, ids: Iterable[str]) -> None:
        """The rows of ``ids`` are deleted: forget them and run what each left."""
        with self._lock:
            done = [self._owed.pop(session_id, None) for session_id in ids]
        log.warning("%s: %d owed deletion(s) completed", self._where(), len(done))
        for then in done:
            if then is not None:
                try:
                    then()
                except Exception:  # the rows are gone; this is the cache's part
                    log.exception("%s: after an owed deletion", self._where())
