"""The meta-protocol reply parser, fed replies cut at every possible point.

Pure parsing logic, so a scripted socket stands in for memcached here; every
other test talks to a real server.
"""

from __future__ import annotations

import pytest

from webapp2_sessions.memcache import encode, read_replies
from webapp2_sessions.stores import Delete, Failed, Get, Incr, Item, Set


class ScriptedSocket:
    """Hands out the given chunks, one per recv."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    def recv(self, size: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


OPS = [
    Get("rec", 60),
    Get("a", 60),
    Get("gone", 60),
    Set("b", b"x"),
    Set("c", b"y", mode="add"),
    Delete("d"),
    Incr("n", 1, 60),
    Get("e"),
    Get("odd"),
]
REPLY = (
    b"VA 12 f1465057296 c77\r\nrecord\r\nbody\r\n"  # a value holding a CRLF
    b"VA 1 f1465057281 c78\r\n1\r\n"
    b"EN\r\n"
    b"HD\r\n"
    b"NS\r\n"
    b"NF\r\n"
    b"VA 2\r\n42\r\n"
    b"EN\r\n"
    b"VA 3 c9 f5\r\nabc\r\n"  # flags in another order: the general path
)
EXPECTED = [
    Item(b"record\r\nbody", 1465057296, 77),
    Item(b"1", 1465057281, 78),
    None,
    True,
    False,
    False,
    42,
    None,
    Item(b"abc", 5, 9),
]


def test_a_reply_in_one_piece_parses_and_leaves_the_connection_in_step():
    assert read_replies(ScriptedSocket([REPLY]), OPS) == (EXPECTED, False)


@pytest.mark.parametrize("cut", range(1, len(REPLY)))
def test_a_reply_cut_anywhere_parses_the_same(cut):
    sock = ScriptedSocket([REPLY[:cut], REPLY[cut:]])
    assert read_replies(sock, OPS) == (EXPECTED, False)


def test_a_reply_delivered_a_byte_at_a_time_parses_the_same():
    sock = ScriptedSocket([REPLY[i : i + 1] for i in range(len(REPLY))])
    assert read_replies(sock, OPS) == (EXPECTED, False)


def test_bytes_beyond_the_last_reply_mark_the_connection_for_closing():
    results, close = read_replies(ScriptedSocket([REPLY + b"HD\r\n"]), OPS)
    assert results == EXPECTED and close


def test_a_server_error_is_a_failed_result_not_an_exception():
    results, close = read_replies(
        ScriptedSocket([b"SERVER_ERROR out of memory storing object\r\nHD\r\n"]),
        [Set("a", b"x"), Set("b", b"y")],
    )
    assert results == [Failed("SERVER_ERROR out of memory storing object"), True]
    assert not close


def test_a_connection_closed_mid_reply_is_a_connection_error():
    with pytest.raises(ConnectionResetError):
        read_replies(ScriptedSocket([REPLY[:30]]), OPS)


@pytest.mark.parametrize(
    "key",
    ["a b", "a\x00b", "a\tb", "a\x1fb", "a\r\nflush_all", "", "é", "a\x7f", "x" * 251, " a", "a "],
)
def test_a_malformed_key_anywhere_in_a_batch_is_refused_before_sending(key):
    for ops in ([Get(key)], [Get("ok"), Set(key, b"v")], [Get("ok"), Delete(key), Get("ok2")]):
        with pytest.raises(ValueError, match="malformed memcached key"):
            encode(ops)
