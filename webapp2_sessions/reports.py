"""What the admin command prints: a session, and the nodes' figures.

Each report comes twice, as JSON data for scripts and as text for people.
Pure functions over what ``admin.py`` found.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from .admin import NODE_FIGURES, Found, NodeStats
from .serializers import FLAGS_PICKLE, JSONSerializer, decode_item
from .stores import Item

#: A report: the JSON document, and the same for people.
Report = tuple[dict[str, Any], str]

_JSON = JSONSerializer()


def session_report(found: Found) -> Report:
    """Variables, creation time and time left of a live session."""
    values, unreadable, missing = _variables(found)
    record = found.record
    data = {
        "session_id": found.session_id,
        "stored_in": "database" if found.from_database else "memcached",
        "server": found.where,
        "created": record.created,
        "idle_seconds_left": _whole(found.idle_left),
        "absolute_seconds_left": _whole(found.absolute_left),
        "database_seconds_left": _whole(found.expires_left),
        "seconds_left": _whole(found.left),
        "ends_by": _ends_by(found),
        "flashes": record.flashes,
        "variables": values,
        "unreadable": unreadable,
        "missing": missing,
    }
    created = datetime.fromtimestamp(record.created, UTC)
    lines = [
        f"session:  {found.session_id}",
        f"stored:   {'' if found.from_database else 'memcached '}{found.where}",
        f"created:  {created:%Y-%m-%d %H:%M:%S} UTC "
        f"({_duration(time.time() - record.created)} ago)",
    ]
    if found.idle_left is not None:
        lines.append(f"idle:     {_duration(found.idle_left)} left")
    if found.absolute_left is None:
        lines.append("absolute: not known (give --absolute-timeout)")
    else:
        lines.append(f"absolute: {_duration(found.absolute_left)} left")
    if found.expires_left is not None:
        lines.append(f"database: {_duration(found.expires_left)} left")
    if found.left is not None:
        lines.append(f"ends in:  {_duration(found.left)} ({_ends_by(found)})")
    if record.flashes:
        lines.append("flashes:  some waiting to be shown")
    lines.append(f"variables ({len(found.values)}):")
    lines += [f"  {_name(n)} = {_value(v)}" for n, v in values.items()]
    lines += [f"  {_name(n)}: ({why})" for n, why in unreadable.items()]
    lines += [f"  {_name(n)}: (missing: evicted or expired)" for n in missing]
    return data, "\n".join(lines)


def _variables(found: Found) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """Decoded values, those not decoded here (with why), and the missing names.

    Only JSON is decoded: unpickling runs whatever code the bytes name.
    """
    values: dict[str, Any] = {}
    unreadable: dict[str, str] = {}
    missing: list[str] = []
    for name, stored in found.values.items():
        if stored is None:
            missing.append(name)
            continue
        try:
            values[name] = decode_item(_JSON, Item(*stored))
        except ValueError:
            kind = "pickled" if stored[1] == FLAGS_PICKLE else f"flags {stored[1]:#x}"
            unreadable[name] = f"{kind}, {len(stored[0])} bytes, not decoded"
    return values, unreadable, missing


def _ends_by(found: Found) -> str | None:
    left = found.left
    if left is None:
        return None
    if left == found.absolute_left:
        return "absolute timeout"
    return "idle timeout" if left == found.idle_left else "database expiry"


def _name(name: str) -> str:
    """A variable's name as printed: JSON-quoted when it could be misread (or
    carries terminal control characters)."""
    plain = name.isascii() and name.isprintable() and not any(c in name for c in ' ="')
    return name if plain else json.dumps(name)


def _value(value: Any) -> str:
    """A decoded value as printed: JSON, readable non-ASCII kept, but every
    character a terminal could act on (C1 controls, bidi overrides) escaped:
    values are often text a visitor typed."""
    text = json.dumps(value, ensure_ascii=False)
    return text if text.isprintable() else json.dumps(value)


def _whole(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds)


def _duration(seconds: float) -> str:
    """``1d 2h 3m 4s``, leaving out what is zero."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    parts = [(days, "d"), (rest // 3600, "h"), (rest // 60 % 60, "m"), (rest % 60, "s")]
    return " ".join(f"{n}{unit}" for n, unit in parts if n) or "0s"


def stats_report(
    nodes: Sequence[NodeStats], database: str | None, counts: Mapping[str, int] | None
) -> Report:
    """memcached's figures per node (a table), and the database's counts."""
    data = {
        "servers": [{"server": n.server, **n.figures, "error": n.error} for n in nodes],
        "database": None if counts is None else {"name": database, **counts},
    }
    rows = [["server", *NODE_FIGURES]]
    rows += [[n.server, *(str(n.figures[f]) for f in NODE_FIGURES)] for n in nodes if n.figures]
    lines = _table(rows)
    lines += [f"{n.server}: unreachable ({n.error})" for n in nodes if n.error is not None]
    if counts is not None:
        lines.append(
            f"{database}: {counts['sessions']} session(s), {counts['variables']} variable(s); "
            f"{counts['expired']} expired session(s) not yet purged"
        )
    return data, "\n".join(lines)


def _table(rows: list[list[str]]) -> list[str]:
    """Columns aligned: the first to the left, the figures to the right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
