"""What the admin command does, apart from its command line.

Look a session up without renewing it, end it exactly as a logout does, and
read memcached's own figures. The command line and its output are in
``cli.py``; everything here returns values and raises the package's errors.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pymemcache.client.base import Client, normalize_server_spec
from pymemcache.exceptions import MemcacheError

from . import transitions
from .config import SessionConfig
from .errors import ConfigurationError, SessionUnavailableError
from .keys import is_session_id, key_scheme
from .lifecycle import NO_CLIENT, Lifecycle
from .memcache import MemcacheStore
from .record import Record, parse_or_none
from .runtime import build_store
from .stores import Get, Item

if TYPE_CHECKING:
    from .durable import DurableTier

#: memcached's figures ``stats`` reports for each node.
NODE_FIGURES = ("curr_items", "bytes", "get_hits", "get_misses", "evictions", "curr_connections")


def check_session_id(value: str) -> str:
    """``value`` if it is a session id as the library issues them.

    The same check a cookie's id passes before any memcached key is built
    from it, so nothing else (a space, a newline, another key) can reach the
    server. Raises ``ConfigurationError`` naming ``SESSION_ID``.
    """
    if is_session_id(value):
        return value
    hint = (
        "32 lowercase hex digits shaped as a random UUID (13th digit 4, 17th one of 8, 9, a, b), "
        "as the library issues them"
    )
    if is_session_id(value.partition(".")[0]):
        hint += "; this looks like a signed cookie value: give the part before the '.'"
    raise ConfigurationError("SESSION_ID", f"not a session id ({hint})")


@dataclass
class Target:
    """The memcached servers (and optionally the database) the command works on."""

    config: SessionConfig
    store: MemcacheStore
    tier: DurableTier | None = None

    @classmethod
    def open(
        cls,
        servers: Sequence[str],
        key_prefix: str,
        timeout: float,
        database: str | None = None,
        absolute_timeout: int | None = None,
    ) -> Target:
        """Validate the settings as an application's are, then connect lazily.

        ``strict``: an unreachable server raises instead of being deferred to
        later requests, which a one-off command will never make.
        """
        config = SessionConfig.from_mapping(
            {
                "memcache_servers": list(servers),
                "key_prefix": key_prefix,
                "timeout": timeout,
                "connect_timeout": timeout,
                "absolute_timeout": absolute_timeout,
                "database": database,
                "strict": True,
            }
        )
        store = build_store(config)
        assert isinstance(store, MemcacheStore)
        return cls(config, store, open_tier(config) if database is not None else None)

    def close(self) -> None:
        self.store.close()
        if self.tier is not None:
            self.tier.database.close()


def open_tier(config: SessionConfig) -> DurableTier:
    """The durable tier of ``config.database``, refusing a SQLite file that is
    not there (opening it would create an empty one and report nothing) or a
    directory (every statement would fail, as if the database were down)."""
    import sqlalchemy as sa

    from .durable import DurableTier
    from .sql import Database

    url = sa.engine.make_url(config.database)
    path = url.database or ""
    in_memory = path in ("", ":memory:") or path.startswith("file:")
    if url.get_backend_name() == "sqlite" and not in_memory:
        if os.path.isdir(path):
            raise ConfigurationError("database", f"{path} is a directory, not a SQLite file")
        if not os.path.exists(path):
            raise ConfigurationError("database", f"no SQLite file at {path}")
    return DurableTier(Database(config.database), config)


# --------------------------------------------------------------------------- show


@dataclass
class Found:
    """A session as the servers hold it, read without renewing anything."""

    session_id: str
    record: Record
    #: ``host:port`` of the memcached node, or the database's description.
    where: str
    #: True when read from the database (memcached had nothing).
    from_database: bool = False
    #: Seconds the record has left in memcached: the idle window.
    idle_left: float | None = None
    #: Seconds until the absolute timeout (None: not known).
    absolute_left: float | None = None
    #: Seconds until the database's expiry (idle or absolute, whichever first).
    expires_left: float | None = None
    #: Why the session is over already (a logout under way, the absolute
    #: timeout), or None while it is live.
    ended: str | None = None
    #: Name -> (stored bytes, client flags); None where neither tier has it.
    values: dict[str, tuple[bytes, int] | None] = field(default_factory=dict)

    @property
    def left(self) -> float | None:
        """Seconds until the session ends, whichever timeout comes first."""
        known = [
            s for s in (self.idle_left, self.absolute_left, self.expires_left) if s is not None
        ]
        return min(known) if known else None


def look_up(target: Target, session_id: str, *, details: bool = True) -> Found | None:
    """The session ``session_id``, or None if no tier knows it.

    One memcached round trip for the record, and with ``details`` one for
    the variables and one for the record's remaining TTL; with the database,
    one query when memcached has nothing (or is unreachable) and one for
    variables memcached lost. Nothing is renewed.
    """
    check_session_id(session_id)
    now = time.time()
    keys = key_scheme(target.config.key_prefix)
    store = target.store
    where = store.node_for(session_id)
    try:
        item = store.execute(session_id, [Get(keys.record(session_id))])[0]
    except SessionUnavailableError:
        if target.tier is None:
            raise
        item = None
    record = parse_or_none(item)  # not a record of ours: ignored, as a request does
    found: Found | None
    if record is not None:
        found = Found(session_id, record, where)
        found.ended = "a logout is under way" if record.dead else None
    else:
        found = _from_database(target, session_id, now) if target.tier is not None else None
    if found is None:
        return None
    timeout = target.config.absolute_timeout
    if timeout is not None:
        found.absolute_left = found.record.created + timeout - now
        if found.absolute_left < 0 and found.ended is None:
            found.ended = "its absolute timeout has passed"
    if details and found.ended is None and not found.from_database:
        found.values = _read_values(target, session_id, sorted(found.record.names))
        found.idle_left = key_ttl(where, keys.record(session_id), target.config.timeout)
    return found


def _read_values(
    target: Target, session_id: str, names: list[str]
) -> dict[str, tuple[bytes, int] | None]:
    keys = key_scheme(target.config.key_prefix)
    ops = [Get(key) for key in keys.variables(session_id, names)]
    results = target.store.execute(session_id, ops) if ops else []
    found: dict[str, tuple[bytes, int] | None] = {}
    for name, result in zip(names, results, strict=True):
        found[name] = (result.value, result.flags) if isinstance(result, Item) else None
    missing = [name for name, value in found.items() if value is None]
    if missing and target.tier is not None:
        found.update(target.tier.database.load_variables(session_id, missing))
    return found


def _from_database(target: Target, session_id: str, now: float) -> Found | None:
    tier = target.tier
    assert tier is not None
    stored = tier.database.load(session_id, now)
    if stored is None:
        return None
    from .refill import record_of

    record = record_of(stored)
    found = Found(
        session_id,
        record,
        tier.database.describe(),
        from_database=True,
        expires_left=stored.expires - now,
    )
    found.values = {name: stored.variables.get(name) for name in sorted(record.names)}
    return found


# --------------------------------------------------------------------------- destroy


def destroy(target: Target, found: Found) -> None:
    """End the session exactly as a logout does (``transitions.delete_everything``).

    The database's rows go first, then memcached is marked and cleared in
    two round trips. Raises ``SessionUnavailableError`` if any part could
    not be done: a one-off command cannot leave the rest for later.
    """
    sid = found.session_id
    life = Lifecycle(target.config, target.store, sid, NO_CLIENT, time.time, _nothing, target.tier)
    transitions.delete_everything(life, sid, found.record)
    if life.failed:
        raise SessionUnavailableError(
            "memcached did not answer; the session is not fully deleted, run destroy again",
            target.store.node_for(sid),
        )


def _nothing() -> None:
    """A logout by the admin command has no request whose view to reset."""


# --------------------------------------------------------------------------- stats


@dataclass
class NodeStats:
    """memcached's own figures for one node, or why they could not be read."""

    server: str
    figures: dict[str, int] = field(default_factory=dict)
    error: str | None = None


def node_stats(servers: Sequence[str], timeout: float) -> list[NodeStats]:
    """``stats`` from each server, one round trip each; a failure is reported, not raised."""
    out = []
    for server in servers:
        try:
            with _client(server, timeout) as client:
                raw: dict[Any, Any] = client.stats()
        except SessionUnavailableError as exc:
            out.append(NodeStats(server, error=str(exc).removeprefix(f"{server}: ")))
            continue
        figures = {name: int(raw.get(name.encode(), 0)) for name in NODE_FIGURES}
        out.append(NodeStats(server, figures))
    return out


def key_ttl(server: str, key: str, timeout: float) -> int | None:
    """Seconds ``key`` has left on ``server`` (-1: no expiry; None: absent).

    memcached's meta ``mg <key> t``, which neither fetches nor renews the item.
    ``key`` must be built by ``KeyScheme`` from a checked id.
    """
    with _client(server, timeout) as client:
        reply: bytes = client.raw_command(b"mg " + key.encode("ascii") + b" t", b"\r\n")
    for token in reply.split()[1:] if reply.startswith(b"HD") else ():
        if token.startswith(b"t"):
            return int(token[1:])
    return None


@contextlib.contextmanager
def _client(server: str, timeout: float) -> Iterator[Any]:
    """A pymemcache client on ``server`` for one command; failures become
    ``SessionUnavailableError`` naming the server."""
    client = Client(normalize_server_spec(server), connect_timeout=timeout, timeout=timeout)
    try:
        yield client
    except (OSError, MemcacheError) as exc:
        raise SessionUnavailableError(f"cannot be read ({type(exc).__name__})", server) from None
    finally:
        client.close()
