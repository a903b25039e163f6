"""The connection pool's bookkeeping under contention (pure logic, no server).

``take()`` and ``give_back()`` skip the lock in the common case; these tests
pin what that must not break: never more connections open than the cap,
each connection in one pair of hands at a time, and ``close()`` leaving none
open once every batch has handed its connection back.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from webapp2_sessions.errors import SessionUnavailableError
from webapp2_sessions.memcache.pool import Pool


class _FakeConnection:
    """Stands in for a socket: records whether it was closed."""

    def __init__(self, opened: list[_FakeConnection]) -> None:
        self.generation = 0
        self.closed = False
        self.holder: int | None = None
        opened.append(self)

    def close(self) -> None:
        self.closed = True


def _churn(pool: Pool, rounds: int, errors: list[str], peak: list[int], cap: int) -> None:
    me = threading.get_ident()
    try:
        for _ in range(rounds):
            conn, _fresh = pool.take()
            if conn.holder is not None:
                errors.append("a connection was handed to two batches at once")
            conn.holder = me
            peak.append(pool.open)
            if pool.open > cap:
                errors.append(f"{pool.open} connections open, cap {cap}")
            conn.holder = None
            pool.give_back(conn)
    except BaseException as exc:  # a thread's exception would otherwise vanish
        errors.append(repr(exc))


class _YieldingDeque(collections.deque):  # type: ignore[type-arg]
    """A deque that lets other threads run just before each pop and while
    it is copied: the windows where a check-then-pop would go wrong."""

    def pop(self) -> object:
        time.sleep(0)
        return super().pop()

    def __iter__(self) -> Iterator[object]:
        for item in list(super().__iter__()):
            time.sleep(0)
            yield item


def _pool(opened: list[_FakeConnection], size: int, wait: float) -> Pool:
    pool = Pool(lambda: _FakeConnection(opened), size=size, wait=wait)  # type: ignore[arg-type,return-value]
    pool._idle = _YieldingDeque()
    return pool


@pytest.fixture(autouse=True)
def _switch_often():
    """Switch threads every few microseconds, so the races get their chance."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_concurrent_batches_never_share_a_connection_or_pass_the_cap():
    opened: list[_FakeConnection] = []
    pool = _pool(opened, 3, 60.0)
    errors: list[str] = []
    peak: list[int] = []
    threads = [
        threading.Thread(target=_churn, args=(pool, 300, errors, peak, 3)) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(opened) <= 3
    assert max(peak) <= 3
    assert pool.open == len(opened)  # all idle again, none lost from the count


def test_close_during_traffic_leaves_no_connection_open_once_all_are_back():
    opened: list[_FakeConnection] = []
    pool = _pool(opened, 4, 60.0)
    errors: list[str] = []
    peak: list[int] = []
    threads = [
        threading.Thread(target=_churn, args=(pool, 200, errors, peak, 4)) for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for _ in range(20):
        pool.close()
    for thread in threads:
        thread.join()
    pool.close()
    assert errors == []
    assert pool.open == 0
    assert all(conn.closed for conn in opened)


def test_a_batch_at_the_cap_gives_up_after_the_wait():
    opened: list[_FakeConnection] = []
    pool = _pool(opened, 1, 0.05)
    held, _ = pool.take()
    with pytest.raises(SessionUnavailableError, match="max_connections"):
        pool.take()
    pool.give_back(held)
    again, fresh = pool.take()
    assert again is held and not fresh
