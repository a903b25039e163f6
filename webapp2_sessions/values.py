"""A request's cache of session values: each decoded once, then read freely.

Only items that carry our serializer's flags (or a counter's) are decoded;
anything else reads as missing and is logged, never decoded (see
``serializers.decode_item``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from .serializers import Serializer, decode_item
from .stores import Item, Result

log = logging.getLogger("webapp2_sessions")

#: The value of a name known to have none (never stored, deleted, evicted or
#: not ours).
MISSING: Any = object()


class Values:
    """Decoded values by name, with the stored items they came from."""

    __slots__ = ("_serializer", "decoded", "items", "lost")

    def __init__(self, serializer: Serializer) -> None:
        self._serializer = serializer
        #: Name -> value, or ``MISSING``; also what this request wrote.
        self.decoded: dict[str, Any] = {}
        #: Name -> the stored item its value was decoded from.
        self.items: dict[str, Item] = {}
        #: Names the record lists whose value was gone (evicted or expired).
        self.lost: frozenset[str] = frozenset()

    def take(
        self,
        names: Sequence[str],
        results: Sequence[Result],
        listed: AbstractSet[str],
        tag: Callable[[], str],
    ) -> None:
        """Remember a batch's results for ``names`` (``listed``: the record's names)."""
        flags, loads = self._serializer.flags, self._serializer.loads
        decoded, items = self.decoded, self.items
        for name, result in zip(names, results, strict=True):
            # The common case inline; anything else (missing, a counter,
            # foreign or unreadable) is sorted out by remember().
            if result.__class__ is Item and result.flags == flags:
                try:
                    decoded[name] = loads(result.value)
                    items[name] = result
                    continue
                except ValueError:
                    pass
            self.remember(name, result, name in listed, tag)

    def remember(self, name: str, result: Result, listed: bool, tag: Callable[[], str]) -> None:
        """``tag()`` names the session in a log line; only called to log one."""
        if not isinstance(result, Item):
            self.decoded[name] = MISSING
            if listed:
                self.lost = self.lost | {name}
                log.info("session %s: a listed variable was evicted", tag())
            return
        try:
            self.decoded[name] = decode_item(self._serializer, result)
        except ValueError as exc:
            log.warning("session %s: value of a variable is not ours (%s), ignored", tag(), exc)
            self.decoded[name] = MISSING
            return
        self.items[name] = result

    def unreadable(self, names: Iterable[str]) -> None:
        """The store failed to answer for ``names``: missing now, not lost."""
        for name in names:
            self.decoded[name] = MISSING

    def keep_only(self, names: AbstractSet[str]) -> None:
        """Forget every value but those of ``names`` (after a fresh start)."""
        kept = {n: v for n, v in self.decoded.items() if n in names}
        self.decoded.clear()
        self.decoded.update(kept)
        self.items.clear()

    def stored_form(self, name: str, serialize: Callable[[str, Any], bytes]) -> bytes | None:
        """What to write to store ``name``'s value again (None: it has none)."""
        value = self.decoded.get(name, MISSING)
        if value is MISSING:
            return None
        item = self.items.get(name)
        return item.value if item is not None else serialize(name, value)
