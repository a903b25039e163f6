"""Costs of the session's hot-path steps, each timed on its own.

Run ``.venv/bin/python benchmarks/hotpath.py``. These are warm-cache figures
(the best of several repeats of a tight loop); inside a request, after a
round trip has left the CPU idle, the same steps cost two to three times as
much, which is why the handler does what it can while a batch is in flight.
"""

from __future__ import annotations

import os
import sys
import timeit
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from webapp2_sessions.cookies import CookieCodec, read_cookie
from webapp2_sessions.keys import KeyScheme, name_suffix, new_session_id
from webapp2_sessions.memcache import encode, read_replies
from webapp2_sessions.record import FLAGS_RECORD, Record, parse_value
from webapp2_sessions.serializers import JSONSerializer
from webapp2_sessions.stores import Get, Item, Set

SECRET = "hotpath-secret-key-0123456789abcdef"


class _Replies:
    """A socket stand-in that hands back one canned reply."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def recv(self, size: int) -> bytes:
        return self.data


def measure(work: Callable[[], object], number: int = 20000) -> float:
    """Best-of-5 microseconds per call."""
    best = min(timeit.repeat(work, number=number, repeat=5))
    return best / number * 1e6


def rows() -> list[tuple[str, float]]:
    codec = CookieCodec([SECRET])
    sid = new_session_id()
    cookie = codec.encode(sid)
    uncached = codec._check  # the verification itself, without the per-process cache
    keys = KeyScheme("")
    json = JSONSerializer()
    listed = b'{"v":1,"c":1700000000.000,"b":1700000000.000}\n"a"\n"b"\n"c"\n'
    record_item = Item(listed, FLAGS_RECORD, 7)
    read_ops = [Get(keys.record(sid), 90000)] + [
        Get(k, 86400) for k in keys.variables(sid, ["a", "b", "c"])
    ]
    write_ops = [Set(keys.variable(sid, "a"), b"2", json.flags, 86400), Get(keys.record(sid))]
    reply = b"".join(
        b"VA %d f%d c%d\r\n%s\r\n" % (len(v), f, 100 + i, v)
        for i, (v, f) in enumerate(
            [(listed, FLAGS_RECORD), (b"1", 1), (b'"hello"', 1), (b"[1,2,3]", 1)]
        )
    )
    environ = {"HTTP_COOKIE": f"_ga=GA1.2.3; theme=dark; sid={cookie}; lang=en"}
    odd_name = "näme with spaces"
    name_suffix(odd_name)  # hashed once; later calls hit the cache
    return [
        ("new session id (UUID4 hex)", measure(new_session_id)),
        ("sign a cookie (HMAC-SHA256)", measure(lambda: codec.encode(sid))),
        ("verify a cookie, first sight", measure(lambda: uncached(cookie))),
        ("verify a cookie, seen before (cached)", measure(lambda: codec.decode(cookie))),
        ("find our cookie in a 4-cookie header", measure(lambda: read_cookie(environ, "sid"))),
        ("key for a plain name", measure(lambda: keys.variable(sid, "cart"))),
        ("key for a hashed name (cached)", measure(lambda: keys.variable(sid, odd_name))),
        ("keys for 3 names, one batch", measure(lambda: keys.variables(sid, ["a", "b", "c"]))),
        ("JSON out: int", measure(lambda: json.dumps(12345))),
        ("JSON out: short str", measure(lambda: json.dumps("hello"))),
        ("JSON out: list of 3", measure(lambda: json.dumps([1, 2, 3]))),
        ("JSON in: int", measure(lambda: json.loads(b"12345"))),
        ("JSON in: short str", measure(lambda: json.loads(b'"hello"'))),
        ("JSON in: list of 3", measure(lambda: json.loads(b"[1,2,3]"))),
        ("parse a record, first sight", measure(lambda: parse_value.__wrapped__(listed))),
        ("parse a record, seen before (cached)", measure(lambda: Record.parse(record_item))),
        ("encode a read batch (record + 3)", measure(lambda: encode(read_ops))),
        ("encode a write batch (1 set + read-back)", measure(lambda: encode(write_ops))),
        ("parse 4 value replies", measure(lambda: read_replies(_Replies(reply), read_ops))),
    ]


def main() -> int:
    print(f"{'step':<44}{'µs':>8}")
    print("-" * 52)
    for label, micros in rows():
        print(f"{label:<44}{micros:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
