"""Session values: encoded when set, decoded once per request into its cache.

A value is serialized as it is set, so a value the store cannot take fails
in the handler that set it. Only items that carry our serializer's flags (or
a counter's) are decoded; anything else reads as missing and is logged, never
decoded (see ``serializers.decode_item``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

from .serializers import Serializer, decode_item
from .stores import Item, Result

if TYPE_CHECKING:
    from .config import SessionConfig

log = logging.getLogger("webapp2_sessions")

#: The value of a name known to have none (never stored, deleted, evicted or
#: not ours).
MISSING: Any = object()
_NONE: frozenset[str] = frozenset()


def serialize(config: SessionConfig, name: str, value: Any) -> bytes:
    """``value`` of variable ``name`` as the store will keep it.

    Raises ``TypeError`` for a value ``config``'s serializer cannot store and
    ``ValueError`` for one too large for an item (``item_size_max``).
    """
    try:
        data = config.serializer.dumps(value)
    except TypeError as exc:
        raise TypeError(f"session variable {name!r} cannot be stored: {exc}") from None
    room = config.item_room
    if len(data) > room:
        raise ValueError(
            f"session variable {name!r} is {len(data)} bytes serialized; "
            f"items are limited to {room} (item_size_max={config.item_size_max})"
        )
    return data


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
    config: SessionConfig,
) -> bytes | None:
    """What to write to store ``name``'s value again (None: it has none)."""
    value = decoded.get(name, MISSING)
    if value is MISSING:
        return None
    item = items.get(name)
    return item.value if item is not None else serialize(config, name, value)
