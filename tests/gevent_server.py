# ruff: noqa: E402 - every import after patch_all() must see the patched stdlib
"""A webapp2 app with sessions, served by gevent's WSGIServer, monkey-patched.

Run by tests/test_gevent.py as a child process, so the test process itself is
never monkey-patched. It listens on a free loopback port and prints
``listening <port>`` on stdout once it accepts connections; the store logs to
stderr. Stop it by its PID (SIGTERM).

Routes (every one answers 200 unless the app itself fails):

``/incr``                  ``incr_session_var('n')``; the new value as text.
``/get?name=``             ``{"value": ...}``, the variable's value (or null).
``/set?name=&value=``      sets the variable to the string ``value``.
``/slow-read?name=``       reads the variable under ``gevent.Timeout(seconds)``
                           (``&seconds=``, default 0.2); ``timeout`` if it fired.
``/stats``                 connections open now and peaks seen, as JSON.
"""

from gevent import monkey

monkey.patch_all()

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import gevent
import webapp2
from gevent.pywsgi import WSGIServer

from webapp2_sessions import MemcacheStore, SessionHandlerMixin
from webapp2_sessions.stores import Op, Result

SECRET = "gevent-test-secret-0123456789abcdef"


class Meter:
    """Requests in flight and connections open, with the peaks of both.

    Greenlets switch only when they block, so plain counters are exact here.
    """

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak_requests = 0
        self.peak_connections = 0
        self.requests = 0
        self.store: MeteredStore | None = None

    def sample(self) -> None:
        store = self.store
        if store is not None:
            open_now = sum(store.connections(s) for s in store.servers)
            self.peak_connections = max(self.peak_connections, open_now)


METER = Meter()


class MeteredStore(MemcacheStore):
    """A MemcacheStore that notes the connections open after every batch.

    A pool only closes a connection on a failure, so the count after a batch
    is at least what it was during it.
    """

    def execute(
        self, session_id: str, ops: Sequence[Op], *, on_sent: Callable[[], object] | None = None
    ) -> list[Result]:
        try:
            return super().execute(session_id, ops, on_sent=on_sent)
        finally:
            METER.sample()


class Page(SessionHandlerMixin, webapp2.RequestHandler):
    def write_json(self, value: Any) -> None:
        self.response.content_type = "application/json"
        self.response.write(json.dumps(value))


class Incr(Page):
    def get(self) -> None:
        self.response.content_type = "text/plain"
        self.response.write(str(self.incr_session_var("n")))


class Get(Page):
    def get(self) -> None:
        self.write_json({"value": self.get_session_var(self.request.GET["name"])})


class Set(Page):
    def get(self) -> None:
        self.set_session_var(self.request.GET["name"], self.request.GET["value"])
        self.response.content_type = "text/plain"
        self.response.write("ok")


class SlowRead(Page):
    def get(self) -> None:
        seconds = float(self.request.GET.get("seconds", "0.2"))
        timeout = gevent.Timeout(seconds)
        timeout.start()
        try:
            value = self.get_session_var(self.request.GET["name"])
        except gevent.Timeout as fired:
            if fired is not timeout:
                raise
            self.response.content_type = "text/plain"
            self.response.write("timeout")
            return
        finally:
            timeout.close()
        self.write_json({"value": value})


class Stats(webapp2.RequestHandler):
    def get(self) -> None:
        METER.sample()
        store = METER.store
        assert store is not None
        self.response.content_type = "application/json"
        self.response.write(
            json.dumps(
                {
                    "connections": {s: store.connections(s) for s in store.servers},
                    "peak_connections": METER.peak_connections,
                    "peak_requests": METER.peak_requests,
                    "requests": METER.requests,
                }
            )
        )


def metered(app: Any) -> Any:
    """WSGI middleware counting the session requests in flight (not /stats)."""

    def wrapper(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/stats":
            return app(environ, start_response)  # type: ignore[no-any-return]
        METER.in_flight += 1
        METER.requests += 1
        METER.peak_requests = max(METER.peak_requests, METER.in_flight)
        try:
            # webapp2 answers with a list: the request is over once it returns.
            return list(app(environ, start_response))
        finally:
            METER.in_flight -= 1
            METER.sample()

    return wrapper


def sampler(interval: float) -> None:
    """Also sample between batches, for connections opened and lost mid-batch."""
    while True:
        METER.sample()
        gevent.sleep(interval)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--memcache-servers", required=True, help="host:port[,host:port...]")
    parser.add_argument("--timeout", type=float, default=0.5)
    parser.add_argument("--dead-retry", type=float, default=10.0)
    parser.add_argument("--max-connections", type=int, default=64)
    parser.add_argument("--cookie-name", default="sid")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    store = MeteredStore(
        args.memcache_servers.split(","),
        timeout=args.timeout,
        dead_retry=args.dead_retry,
        max_connections=args.max_connections,
    )
    METER.store = store
    settings = {"store": store, "cookie_name": args.cookie_name, "secret_key": SECRET}
    app = webapp2.WSGIApplication(
        [
            ("/incr", Incr),
            ("/get", Get),
            ("/set", Set),
            ("/slow-read", SlowRead),
            ("/stats", Stats),
        ],
        config={"webapp2_sessions": settings},
    )
    # log=None: no access log; errors still go to stderr.
    server = WSGIServer(("127.0.0.1", args.port), metered(app), log=None)
    server.start()
    gevent.spawn(sampler, 0.002)
    print(f"listening {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
