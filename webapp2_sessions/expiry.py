"""Remember me: a lifetime chosen per session with ``Session.set_expiry``.

The choice is kept in the session record (``"x"`` in its header, or an
appended ``{"x":...}`` line until the index is next rewritten), so every
request of the session knows it once the record is read. A remembered
session gets:

- a persistent cookie, ``Max-Age`` (and ``Expires``) of the chosen seconds,
  renewed as a ``cookie_args.max_age`` cookie is;
- a record and variables that live at least that long on the server, renewed
  on use: the lifetime raises the session's idle window (``idle_timeout``,
  or ``ttl`` without one) and its variables' ``ttl``, never lowers them;
  ``absolute_timeout`` still ends it.

The load batch is sent before the record is read, so it renews with the
lifetime this process last saw for the session (``known``): a process
meeting a remembered session for the first time (or after it changed) spends
one more round trip renewing what it read with the right TTLs.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .stores import Get, Op, Set

if TYPE_CHECKING:
    from .config import SessionConfig
    from .lifecycle import Lifecycle
    from .plans import LoadPlan
    from .session import Session

log = logging.getLogger("webapp2_sessions")

#: Longest lifetime ``set_expiry`` accepts: 400 days, the longest a browser
#: keeps a cookie (RFC 6265bis). TTLs over 30 days go to memcached as Unix
#: times (``memcache.meta.exptime``), so they count from now as they should.
MAX_EXPIRY = 400 * 24 * 3600
#: Remembered sessions whose lifetime this process knows (bounded).
KNOWN_SIZE = 10_000

_known: dict[str, int] = {}
_lock = threading.Lock()


def check(seconds: object) -> int | None:
    """``seconds`` as ``set_expiry`` takes it: None or an int of 1 to MAX_EXPIRY."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise TypeError(f"seconds must be an int or None, not {type(seconds).__name__}")
    if not 1 <= seconds <= MAX_EXPIRY:
        raise ValueError(f"seconds must be from 1 to {MAX_EXPIRY} (400 days), got {seconds}")
    return seconds


def ttls(config: SessionConfig, expiry: int | None) -> tuple[int, int]:
    """(variable TTL, record TTL) of a session remembered for ``expiry`` seconds."""
    if expiry is None:
        return config.ttl, config.record_ttl
    return max(config.ttl, expiry), max(config.record_ttl, expiry)


#: ``known(session_id)``: the lifetime this process last saw for the session
#: (None: not remembered). The dict's own ``get``, with no call around it:
#: every returning visitor's load asks.
known = _known.get


def learn(session_id: str, expiry: int | None) -> None:
    with _lock:
        if expiry is None:
            _known.pop(session_id, None)
            return
        if len(_known) >= KNOWN_SIZE and session_id not in _known:
            _known.clear()  # costs each remembered session one renewal
        _known[session_id] = expiry


def apply(life: Lifecycle, expiry: int | None) -> None:
    """Make ``life``'s TTLs and cookie follow a lifetime of ``expiry`` seconds."""
    life.ttl, life.record_ttl = ttls(life.config, expiry)
    life.max_age = expiry if expiry is not None else life.config.cookie_args.max_age


def loaded(life: Lifecycle, assumed: int | None, plan: LoadPlan) -> None:
    """After a load that assumed ``assumed``: follow the record's own lifetime.

    If the load renewed with other TTLs than the record's, renew what it read
    again (one round trip; values are small, and it happens once per process
    and lifetime).
    """
    sid = life.sid
    assert sid is not None
    expiry = life.record.expiry
    apply(life, expiry)
    if expiry == assumed:
        return
    learn(sid, expiry)
    record_key = life.keys.record(sid)
    renew: list[Op] = [
        Get(op.key, life.record_ttl if op.key == record_key else life.ttl)
        for op in plan.ops
        if isinstance(op, Get)
    ]
    if life.durable is None:
        life.execute(renew)
    else:
        life.cache(renew)


def set_expiry(session: Session, seconds: int | None) -> None:
    """Remember this session for ``seconds`` (None: forget); see ``expiry.py``.

    ``Session.set_expiry``: a persistent cookie, and the session kept at
    least ``seconds`` on the server. ``TypeError`` unless an int or None;
    ``ValueError`` outside 1 to 400 days. Saved with the other changes.
    """
    expiry = check(seconds)
    session._ensure_loaded()
    server = session._server
    server.record = dataclasses.replace(server.record, expiry=expiry)
    apply(server, expiry)
    server.expiry_changed = True
    server.cookie_action = "set"  # the new Max-Age, or none
    session._edit().force = True


def expiry_line(seconds: int | None) -> bytes:
    """The index line that changes the session's remembered lifetime."""
    return b'{"x":null}\n' if seconds is None else b'{"x":%d}\n' % seconds


def write_ops(life: Lifecycle, written: Sequence[str]) -> list[Op]:
    """What a stored session's write adds once its lifetime changed: the new
    ``{"x":...}`` line, and every key renewed with the new TTLs."""
    sid = life.sid
    assert sid is not None
    keys = life.keys
    record = life.record
    record_key = keys.record(sid)
    ops: list[Op] = [Set(record_key, expiry_line(record.expiry), mode="append")]
    others = sorted(record.names - set(written))
    ops += [Get(key, life.ttl) for key in keys.variables(sid, others)]
    if record.flashes:
        ops.append(Get(keys.internal(sid, "flashes"), life.ttl))
    ops.append(Get(record_key, life.record_ttl))
    return ops


def written(life: Lifecycle) -> None:
    """A write with the new lifetime was kept: remember it in this process."""
    if life.expiry_changed and life.sid is not None:
        life.expiry_changed = False
        learn(life.sid, life.record.expiry)
