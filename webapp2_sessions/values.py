"""Decoding session values, each once per request, into the request's cache.

Only items that carry our serializer's flags (or a counter's) are decoded;
anything else reads as missing and is logged, never decoded (see
``serializers.decode_item``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from .serializers import Serializer, decode_item
from .stores import Item, Result

log = logging.getLogger("webapp2_sessions")

#: The value of a name known to have none (never stored, deleted, evicted or
#: not ours).
MISSING: Any = object()
_NONE: frozenset[str] = frozenset()


def take(
    decoded: dict[str, Any],
    items: dict[str, Item],
    serializer: Serializer,
    names: Sequence[str],
    results: Sequence[Result],
    listed: AbstractSet[str],
    tag: Callable[[], str],
) -> frozenset[str]:
    """Decode a batch's ``results`` for ``names`` into ``decoded`` (and ``items``).

    Returns the names ``listed`` (by the record) whose value was gone:
    evicted or expired. ``tag()`` names the session in a log line, and is
    only called to log one.
    """
    flags, loads = serializer.flags, serializer.loads
    lost = _NONE
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
        elif result is None and name not in listed:
            decoded[name] = MISSING  # never stored: read before it was set
            continue
        if not remember(decoded, items, serializer, name, result, tag) and name in listed:
            lost = lost | {name}
            log.info("session %s: a listed variable was evicted", tag())
    return lost


def remember(
    decoded: dict[str, Any],
    items: dict[str, Item],
    serializer: Serializer,
    name: str,
    result: Result,
    tag: Callable[[], str],
) -> bool:
    """Decode one result into ``decoded``; False if the store had no value."""
    if not isinstance(result, Item):
        decoded[name] = MISSING
        return False
    try:
        decoded[name] = decode_item(serializer, result)
    except ValueError as exc:
        log.warning("session %s: value of a variable is not ours (%s), ignored", tag(), exc)
        decoded[name] = MISSING
        return True
    items[name] = result
    return True


def stored_form(
    decoded: dict[str, Any],
    items: dict[str, Item],
    name: str,
    serialize: Callable[[str, Any], bytes],
) -> bytes | None:
    """What to write to store ``name``'s value again (None: it has none)."""
    value = decoded.get(name, MISSING)
    if value is MISSING:
        return None
    item = items.get(name)
    return item.value if item is not None else serialize(name, value)
