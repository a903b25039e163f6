"""Concurrent requests of one session, on a real memcached."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import webapp2
import webtest
from conftest import PATIENT, Handler

from webapp2_sessions import MemcacheStore, Session, SessionConfig, UpdateConflictError


def run_threads(count: int, work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]


@pytest.fixture
def shared(memcached):
    config = SessionConfig.from_mapping({"memcache_servers": [memcached.address], **PATIENT})
    store = MemcacheStore([memcached.address], **PATIENT)
    first = Session(config, store, None)
    first["seed"] = 0
    first.save()
    return config, store, first.session_id


def test_concurrent_requests_writing_different_variables_lose_nothing(memcached):
    config = {"memcache_servers": [memcached.address], "cookie_name": "sid", **PATIENT}
    app = webapp2.WSGIApplication([("/", Handler)], config={"webapp2_sessions": config})
    first = webtest.TestApp(app)
    first.get("/", {"set": "seed", "value": "0"})
    cookie = first.cookies["sid"]

    def writer(i: int) -> None:
        browser = webtest.TestApp(app)
        browser.set_cookie("sid", cookie)
        for j in range(200):
            # Every request also reads the other variables, as a real page would.
            browser.get("/", {"get": "seed", "set": f"t{i}", "value": str(j)}, status=200)

    run_threads(16, writer)
    names = [f"t{i}" for i in range(16)]
    assert first.get("/", {"get": names}).json == dict.fromkeys(names, 199)


def test_incr_is_exact_under_contention_and_starts_from_zero(shared):
    config, store, sid = shared

    def bump(_: int) -> None:
        for _ in range(500):
            Session(config, store, sid).incr("hits")

    run_threads(16, bump)
    assert Session(config, store, sid)["hits"] == 16 * 500


def test_incr_on_a_new_session_stores_the_session(memcached):
    config = SessionConfig.from_mapping({"memcache_servers": [memcached.address], **PATIENT})
    store = MemcacheStore([memcached.address], **PATIENT)
    session = Session(config, store, None)
    assert session.incr("n", 5) == 5
    assert session.incr("n", -9) == 0  # counters are unsigned, as in memcached
    assert Session(config, store, session.session_id)["n"] == 0


def test_incr_of_a_non_integer_raises_type_error(shared):
    config, store, sid = shared
    session = Session(config, store, sid)
    session["word"] = "ten"
    session.save()
    with pytest.raises(TypeError, match="'word'"):
        Session(config, store, sid).incr("word")


def test_update_var_is_exact_under_contention(shared):
    config, store, sid = shared

    def append(i: int) -> None:
        for j in range(50):
            Session(config, store, sid).update_var(
                "log", lambda old, item=f"{i}:{j}": [*(old or []), item], attempts=200
            )

    run_threads(8, append)
    log = Session(config, store, sid)["log"]
    assert len(log) == len(set(log)) == 8 * 50


def test_update_var_gives_up_with_a_clear_error(shared):
    config, store, sid = shared

    def meddle(old):
        rival = Session(config, store, sid)
        rival.incr("n")  # changes the value under the compare-and-set every time
        return (old or 0) + 100

    Session(config, store, sid).incr("n")
    with pytest.raises(UpdateConflictError, match=r"'n'.*3"):
        Session(config, store, sid).update_var("n", meddle, attempts=3)


@pytest.mark.parametrize("round_", range(5))
def test_destroy_racing_with_writers_leaves_nothing_behind(memcached, shared, round_):
    config, store, sid = shared
    logout_started = threading.Event()
    writes_during_logout = [0]
    writes = [0]

    def add_names(i: int) -> None:
        for j in range(400):
            session = Session(config, store, sid)
            session[f"w{i}-{j}"] = j
            session.save()
            writes[0] += 1
            if logout_started.is_set():
                writes_during_logout[0] += 1
                if writes_during_logout[0] > 40:
                    return

    threads = [threading.Thread(target=add_names, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    # The logout starts once the writers are under way, a little later each round.
    deadline = time.monotonic() + 30
    while writes[0] < 4 * (2 + round_):
        assert time.monotonic() < deadline, f"only {writes[0]} writes in 30 s"
        time.sleep(0.001)
    logout_started.set()
    Session(config, store, sid).destroy()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert writes_during_logout[0] > 0  # the writers really raced the logout
    leftovers = [k for k in memcached.keys() if k.startswith(sid)]
    assert leftovers == []
