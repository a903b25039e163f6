"""The embedded store: memcached's semantics, in one process."""

from __future__ import annotations

import threading

import pytest

from webapp2_sessions.stores import Delete, Failed, Get, Incr, Item, MemoryStore, Set


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_items_expire_after_their_ttl():
    clock = Clock()
    store = MemoryStore(clock=clock)
    store.execute("r", [Set("k", b"v", 1, ttl=10)])
    clock.now += 9.9
    assert store.execute("r", [Get("k")])[0] == Item(
        b"v", 1, store.execute("r", [Get("k")])[0].cas
    )
    clock.now += 0.2
    assert store.execute("r", [Get("k")]) == [None]


def test_get_with_touch_renews_the_ttl():
    clock = Clock()
    store = MemoryStore(clock=clock)
    store.execute("r", [Set("k", b"v", ttl=10)])
    clock.now += 8
    store.execute("r", [Get("k", touch=10)])
    clock.now += 8
    assert isinstance(store.execute("r", [Get("k")])[0], Item)


def test_least_recently_used_items_are_evicted_at_the_bound():
    store = MemoryStore(max_items=3)
    store.execute("r", [Set(k, b"v", ttl=60) for k in "abc"])
    store.execute("r", [Get("a")])  # 'b' is now the oldest
    store.execute("r", [Set("d", b"v", ttl=60)])
    present = [isinstance(r, Item) for r in store.execute("r", [Get(k) for k in "abcd"])]
    assert present == [True, False, True, True]
    assert store.evictions == 1 and len(store) == 3


def test_add_append_and_cas_follow_memcached():
    store = MemoryStore()
    assert store.execute("r", [Set("k", b"1", mode="append")]) == [False]
    assert store.execute("r", [Set("k", b"1", ttl=60, mode="add")]) == [True]
    assert store.execute("r", [Set("k", b"2", ttl=60, mode="add")]) == [False]
    assert store.execute("r", [Set("k", b"2", mode="append")]) == [True]
    item = store.execute("r", [Get("k")])[0]
    assert item.value == b"12"
    assert store.execute("r", [Set("k", b"x", ttl=60, cas=item.cas + 1)]) == [False]
    assert store.execute("r", [Set("k", b"x", ttl=60, cas=item.cas)]) == [True]
    assert store.execute("r", [Delete("k", cas=item.cas)]) == [False]
    assert store.execute("r", [Delete("k"), Delete("k")]) == [True, False]


def test_incr_is_unsigned_and_refuses_text():
    store = MemoryStore()
    store.execute("r", [Set("n", b"5", ttl=60), Set("t", b'"x"', ttl=60)])
    assert store.execute("r", [Incr("n", 3, 60), Incr("n", -100, 60), Incr("gone", 1, 60)]) == [
        8,
        0,
        None,
    ]
    assert isinstance(store.execute("r", [Incr("t", 1, 60)])[0], Failed)


def test_concurrent_increments_are_exact():
    store = MemoryStore()
    store.execute("r", [Set("n", b"0", ttl=60)])

    def work() -> None:
        for _ in range(1000):
            store.execute("r", [Incr("n", 1, 60)])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.execute("r", [Get("n")])[0].value == b"8000"


def test_max_items_must_be_positive():
    with pytest.raises(ValueError):
        MemoryStore(max_items=0)
