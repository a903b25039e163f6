"""Concurrent requests of one session: how many writes survive?

Sixteen threads share one session; thread ``i`` owns the variable ``t<i>`` and
sets it to 0, 1, 2, ... in successive requests, reading the session as every
request of a real page does. Afterwards every variable should hold its
thread's last value.

Two designs run against the same real memcached:

- **whole-session**: the usual design of Flask-Session, Beaker and
  express-session: load the session dict from one key, change it, write the
  whole dict back at the end of the request;
- **webapp2_sessions**: one key per variable.

Run: ``.venv/bin/python benchmarks/lost_updates.py [--threads 16] [--requests 200]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import uuid
from collections.abc import Callable

from pymemcache.client.base import Client

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from memcached import MemcachedServer  # noqa: E402

from webapp2_sessions import MemcacheStore, Session, SessionConfig  # noqa: E402


def whole_session_design(address: str) -> tuple[Callable[[int, int], None], Callable[[], dict]]:
    """One JSON blob per session, read at the start and written at the end."""
    host, port = address.split(":")
    local = threading.local()
    key = f"whole:{uuid.uuid4().hex}"

    def client() -> Client:
        if not hasattr(local, "client"):
            local.client = Client((host, int(port)), no_delay=True, default_noreply=False)
        return local.client

    client().set(key, b"{}")

    def request(thread: int, value: int) -> None:
        data = json.loads(client().get(key) or b"{}")  # start of the request
        data[f"t{thread}"] = value  # the handler's change
        client().set(key, json.dumps(data).encode())  # end of the request

    def final() -> dict:
        return dict(json.loads(client().get(key) or b"{}"))

    return request, final


def per_variable_design(address: str) -> tuple[Callable[[int, int], None], Callable[[], dict]]:
    config = SessionConfig.from_mapping({"memcache_servers": [address]})
    store = MemcacheStore([address])
    first = Session(config, store, None)
    first["seed"] = 0
    first.save()
    sid = first.session_id

    def request(thread: int, value: int) -> None:
        session = Session(config, store, sid)
        session.get("seed")
        session[f"t{thread}"] = value
        session.save()

    def final() -> dict:
        return dict(Session(config, store, sid))

    return request, final


def run(design: str, address: str, threads: int, requests: int) -> tuple[int, int]:
    """Return (variables holding their last write, variables expected)."""
    build = whole_session_design if design == "whole" else per_variable_design
    request, final = build(address)

    def worker(i: int) -> None:
        for j in range(requests):
            request(i, j)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    result = final()
    survived = sum(1 for i in range(threads) if result.get(f"t{i}") == requests - 1)
    return survived, threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    server = MemcachedServer().start()
    try:
        rows = []
        for label, design in (("whole-session", "whole"), ("webapp2_sessions", "ours")):
            survived, expected = run(design, server.address, args.threads, args.requests)
            rows.append((label, survived, expected))
    finally:
        server.stop()
    print(f"{args.threads} threads x {args.requests} requests, one session, one variable each")
    print(f"{'design':<18} {'last writes kept':>18} {'lost':>6}")
    for label, survived, expected in rows:
        print(f"{label:<18} {f'{survived} of {expected}':>18} {expected - survived:>6}")


if __name__ == "__main__":
    main()
