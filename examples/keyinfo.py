"""Where a session lives: its memcached keys, and how long each one has left.

This is what the "Your session" page shows. It asks memcached directly, with
the meta command ``mg <key> t`` (the remaining TTL, no value), every key in
one round trip on a short-lived connection, the way you would check by hand::

    printf 'mg 3f2a...c9-cart t\\r\\nmn\\r\\n' | nc -q1 127.0.0.1 11211
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass

from webapp2_sessions import MemcacheStore, Session

# The example's only import of the library's key layout.
from webapp2_sessions.keys import key_scheme

#: Seconds to wait for memcached when asking it for TTLs.
TIMEOUT = 0.5


@dataclass
class KeyRow:
    """One key of the session."""

    #: The variable's name; None for the session record.
    name: str | None
    key: str
    #: The name is outside ``A-Z a-z 0-9 _ . : -`` (or too long): the key holds its SHA-256.
    hashed: bool
    #: Seconds left; -1 never expires; None when the key is not on the server.
    ttl: int | None
    #: The TTL is the configured one, not one the store reported.
    estimated: bool = False
    #: How much of ``key`` is the session's own part (``<prefix><id>-``).
    stem: int = 0


def store_name(session: Session) -> str:
    """Where this session's keys are kept, for people."""
    store = session.store
    if isinstance(store, MemcacheStore):
        return "memcached at " + store.node_for(session.session_id)
    return "the embedded store (in this process)"


def session_keys(session: Session, names: Iterable[str]) -> list[KeyRow]:
    """The record's key and each variable's key, with the TTL each has left.

    Call it after reading the variables: reading renews a variable's TTL (the
    library's sliding expiry), so what it shows is the life each one has now.
    """
    sid = session.session_id
    scheme = key_scheme(session.config.key_prefix)
    plain = scheme.prefix + sid + "-"
    rows = [KeyRow(None, scheme.record(sid), False, None)]
    for name in names:
        key = scheme.variable(sid, name)
        rows.append(KeyRow(name, key, key != plain + name, None, stem=len(plain)))
    keys = [row.key for row in rows]
    store = session.store
    if isinstance(store, MemcacheStore):
        ttls = memcached_ttls(store.node_for(sid), keys)
        for row in rows:
            row.ttl = ttls.get(row.key)
    elif not session.is_new:
        # Other stores cannot be asked. Every variable listed was just read,
        # which renewed it: it has the configured lifetime.
        config = session.config
        for row in rows:
            row.ttl = config.record_ttl if row.name is None else config.ttl
            row.estimated = True
    return rows


def memcached_ttls(address: str, keys: list[str]) -> dict[str, int]:
    """``{key: seconds left}`` for the keys present on memcached at ``address``.

    One connection, one round trip: ``mg <key> t`` per key, then ``mn`` (the
    no-op that marks the end of the batch). Returns what it got so far if the
    server cannot be reached or stops answering.
    """
    host, _, port = address.rpartition(":")
    request = b"".join(b"mg " + key.encode() + b" t\r\n" for key in keys) + b"mn\r\n"
    data = b""
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=TIMEOUT) as sock:
            sock.sendall(request)
            while not data.endswith(b"MN\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        pass
    ttls: dict[str, int] = {}
    # One reply line per key, in order: "HD t<seconds>" (t-1: no expiry) or "EN".
    for key, line in zip(keys, data.split(b"\r\n"), strict=False):
        parts = line.split()
        if parts[:1] == [b"HD"]:
            for flag in parts[1:]:
                if flag.startswith(b"t"):
                    ttls[key] = int(flag[1:])
    return ttls
