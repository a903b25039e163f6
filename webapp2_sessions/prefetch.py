"""Which variables a handler reads, so the first batch fetches them all.

A wrong guess costs only a few bytes in a batch that is sent anyway; a right
one saves a round trip per name.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

#: Names a handler class may learn beyond those it declared.
MAX_LEARNED = 64


@dataclass(frozen=True, slots=True)
class Names:
    """What to fetch with the session record: an immutable snapshot."""

    names: frozenset[str]
    #: ``names`` sorted: the order of the batch, the same every time.
    ordered: tuple[str, ...]
    #: The handler reads flashes. A field rather than a reserved name: every
    #: non-empty str is a valid variable name.
    flashes: bool = False


class Prefetch:
    """The names one handler class reads: declared, plus those it learned.

    ``declared`` comes from the handler's ``session_prefetch``; with
    ``learn``, every name a request reads is added (up to ``MAX_LEARNED``). The
    snapshot in ``current`` is replaced, never changed, so readers need no lock.
    """

    def __init__(self, declared: Iterable[str] = (), learn: bool = True) -> None:
        names = frozenset(declared)
        self.declared = names
        self.learn = learn
        self.current = Names(names, tuple(sorted(names)))
        self._lock = threading.Lock()

    def note_read(self, name: str) -> None:
        """A request read ``name``: fetch it up front from now on."""
        if not self.learn or name in self.current.names:
            return
        with self._lock:
            now = self.current
            if name not in now.names and len(now.names) < len(self.declared) + MAX_LEARNED:
                names = now.names | {name}
                self.current = Names(names, tuple(sorted(names)), now.flashes)

    def note_flashes(self) -> None:
        """A request read the flashes: fetch them up front from now on."""
        if self.learn and not self.current.flashes:
            with self._lock:
                now = self.current
                self.current = Names(now.names, now.ordered, True)


#: For sessions made without a handler: fetches nothing ahead, learns nothing.
NO_PREFETCH = Prefetch(learn=False)
