"""The memcached meta protocol: a batch of operations as text, and its replies.

Pure encoding and parsing (``read_replies`` reads from any object with a
``recv``), so it is tested without a server. A batch is written as meta commands
(``mg``, ``ms``, ``md``, ``ma``) and sent in one ``send``; the replies come
back in order.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Protocol

from ..stores import Delete, Failed, Get, Incr, Item, Op, Result, Set

#: memcached reads a larger expiry as an absolute Unix time.
_MAX_RELATIVE_EXPTIME = 30 * 24 * 3600
_MODE_FLAG = {"set": b"", "add": b" ME", "append": b" MA"}


def exptime(ttl: int) -> int:
    """The expiry to send for a TTL of ``ttl`` seconds.

    memcached takes anything above 30 days as a Unix timestamp, so a longer TTL
    is sent as one (this relies on the server's clock being roughly right).
    """
    if ttl > _MAX_RELATIVE_EXPTIME:
        return int(time.time()) + ttl
    return ttl


def encode(ops: Sequence[Op]) -> bytes:
    """The meta-protocol text of a batch."""
    # Keys are built from validated parts only; this is the last defence, run
    # once over all of them: joined by spaces, the text must be printable
    # ASCII (no control character, no DEL) with exactly one space fewer than
    # the keys, so that none holds a space of its own. Encoded once, then split.
    keys = [op.key for op in ops]
    joined = " ".join(keys)
    if not joined.isascii() or not joined.isprintable() or joined.count(" ") != len(keys) - 1:
        raise ValueError(f"refusing to send a malformed memcached key in {joined[:40]!r}")
    out: list[bytes] = []
    append = out.append
    for op, key in zip(ops, joined.encode("ascii").split(b" "), strict=True):
        if len(key) > 250 or not key:
            raise ValueError(f"refusing to send malformed memcached key {key[:40]!r}")
        kind = op.__class__
        if kind is Get:
            touch = op.touch  # type: ignore[union-attr]
            if touch is None:
                append(b"mg %s v f c\r\n" % key)
            else:
                if touch > _MAX_RELATIVE_EXPTIME:
                    touch = exptime(touch)
                append(b"mg %s v f c T%d\r\n" % (key, touch))
        elif kind is Set:
            assert isinstance(op, Set)
            value = op.value
            token = b"" if op.cas is None else b" C%d" % op.cas
            if op.mode == "append":
                append(b"ms %s %d F%d MA%s\r\n%s\r\n" % (key, len(value), op.flags, token, value))
                continue
            ttl = op.ttl
            if ttl > _MAX_RELATIVE_EXPTIME:
                ttl = exptime(ttl)
            append(
                b"ms %s %d F%d T%d%s%s\r\n%s\r\n"
                % (key, len(value), op.flags, ttl, _MODE_FLAG[op.mode], token, value)
            )
        elif kind is Delete:
            cas = op.cas  # type: ignore[union-attr]
            append(b"md %s\r\n" % key if cas is None else b"md %s C%d\r\n" % (key, cas))
        elif kind is Incr:
            assert isinstance(op, Incr)
            mode = b" MD" if op.delta < 0 else b""
            append(b"ma %s D%d T%d v%s\r\n" % (key, abs(op.delta), exptime(op.ttl), mode))
        else:
            raise TypeError(f"unknown store operation {op!r}")
    return b"".join(out)


class _Readable(Protocol):
    def recv(self, size: int, /) -> bytes: ...


_NEGATIVE = {b"NS", b"EX", b"NF"}
_VALUE_FC = re.compile(rb"VA (\d+) f(\d+) c(\d+)\r\n")


def read_replies(sock: _Readable, ops: Sequence[Op]) -> tuple[list[Result], bool]:
    """Read one reply per op from ``sock``.

    Returns the results and whether the connection must be closed afterwards
    (bytes left over, or an error that may have left the stream out of step).
    Raises ``ConnectionResetError`` if the server closes the connection and
    ``StaleConnectionError`` if it does so before sending anything.
    """
    try:
        buf = sock.recv(65536)
    except ConnectionResetError:
        raise StaleConnectionError("memcached reset the connection") from None
    if not buf:
        raise StaleConnectionError("memcached closed the connection")
    pos = 0
    results: list[Result] = []
    append = results.append
    desynced = False
    for op in ops:
        # The usual reply to ``mg <key> v f c`` in one match; anything else
        # (other flags, other orders, other replies) goes the general way.
        value = _VALUE_FC.match(buf, pos)
        if value is not None:
            size = int(value[1])
            start = value.end()
            pos = start + size + 2
            if pos <= len(buf) and op.__class__ is Get:
                append(Item(buf[start : pos - 2], int(value[2]), int(value[3])))
                continue
            pos = value.start()
        end = buf.find(b"\r\n", pos)
        while end < 0:
            buf = buf[pos:] + _more(sock)
            pos = 0
            end = buf.find(b"\r\n")
        head = buf[pos:end]
        pos = end + 2
        status = head[:2]
        kind = op.__class__
        if status == b"VA":
            parts = head.split()
            size = int(parts[1])
            while len(buf) < pos + size + 2:
                buf = buf[pos:] + _more(sock)
                pos = 0
            data = buf[pos : pos + size]
            pos += size + 2
            if kind is Incr:
                append(int(data.strip() or b"0"))
                continue
            flags = cas = 0
            for token in parts[2:]:
                first = token[0]
                if first == 102:  # f
                    flags = int(token[1:])
                elif first == 99:  # c
                    cas = int(token[1:])
            append(Item(data, flags, cas))
        elif status == b"HD":
            append(True)
        elif status == b"EN":
            append(None)
        elif status in _NEGATIVE:
            append(None if kind is Incr else False)
        elif head.startswith((b"CLIENT_ERROR", b"SERVER_ERROR", b"ERROR")):
            # Only an error about the data block can leave bytes unread.
            desynced = desynced or head.startswith((b"CLIENT_ERROR bad", b"ERROR"))
            append(Failed(head.decode("ascii", "replace")))
        else:
            raise ConnectionError(f"unexpected reply {head[:32]!r}")
    return results, desynced or pos != len(buf)


def _more(sock: _Readable) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionResetError("memcached closed the connection mid-reply")
    return chunk


class StaleConnectionError(ConnectionResetError):
    """The server had closed a pooled connection before this batch."""
