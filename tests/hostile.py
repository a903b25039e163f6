"""A victim, a canary and a view of the server, for tests that attack the library.

Every attack is checked on the server itself. Before it, another browser holds a
real session with a known variable and a raw ``canary`` key is written; after
it, both are intact, no flush or other unexpected command ran (the server's
counters moved exactly as for an ordinary request), and every live key has one
of the shapes the library writes.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_to_bytes

import webapp2
import webtest
from conftest import make_app
from memcached import MemcachedServer

from webapp2_sessions.cookies import CookieCodec
from webapp2_sessions.keys import KeyScheme, new_session_id

VICTIM_SECRET = "victim-only-4f1c9e"
OTHER_SECRET = "some-other-secret-0123456789"
#: A request that reads the victim's variable name, writes one and shows its id.
ATTACK = {"get": "secret", "set": "mine", "value": '"attacker"', "sid": "1"}
#: Server counters of every command a request can cause.
COUNTERS = (
    "cmd_get",
    "cmd_set",
    "cmd_touch",
    "cmd_flush",
    "get_hits",
    "get_misses",
    "get_expired",
    "get_flushed",
    "delete_hits",
    "delete_misses",
    "incr_hits",
    "incr_misses",
    "decr_hits",
    "decr_misses",
    "cas_hits",
    "cas_misses",
    "cas_badval",
    "touch_hits",
    "touch_misses",
    "auth_cmds",
)
SESSION_KEY = re.compile(rb"[0-9a-f]{32}(?:-.+)?", re.DOTALL)


# --------------------------------------------------------------------------- server views


def metadump(server: MemcachedServer) -> set[bytes]:
    """One pass of the LRU crawler over every key, as raw bytes.

    memcached ends each metadump entry with a bare LF (only ``END`` has CRLF),
    and answers ``BUSY`` while a crawl is running, so this reads it itself.
    """
    data = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"lru_crawler metadump all\r\n")
            data = b""
            while not data.endswith(b"END\r\n"):
                if data.endswith(b"\r\n") and not data.startswith(b"key="):
                    break  # BUSY or an error line
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        if data.endswith(b"END\r\n"):
            return {
                unquote_to_bytes(line.split()[0][4:])
                for line in data.split(b"\n")
                if line.startswith(b"key=")
            }
        time.sleep(0.02)
    raise AssertionError(f"metadump failed: {data[:80]!r}")


def live_keys(server: MemcachedServer) -> set[bytes]:
    """Every live key while nothing else runs.

    A crawl skips an item memcached is busy with (moving it between its LRUs),
    so this is the union of passes, ending after two in a row add nothing.
    """
    seen = metadump(server)
    quiet = 0
    for _ in range(20):
        again = metadump(server)
        quiet = quiet + 1 if again <= seen else 0
        seen |= again
        if quiet == 2:
            break
    return seen


def keys_of(server: MemcachedServer, sid: str) -> list[bytes]:
    return sorted(key for key in live_keys(server) if sid.encode() in key)


def assert_gone(server: MemcachedServer, sid: str, names: Iterable[str] = ()) -> None:
    """No key of ``sid`` is left: none in a crawl, and none of the known ones by name."""
    assert keys_of(server, sid) == []
    scheme = KeyScheme()
    known = [scheme.record(sid), scheme.internal(sid, "flashes")]
    known += [scheme.variable(sid, name) for name in names]
    for key in known:
        assert server.mg(key) is None, key


def counters(server: MemcachedServer) -> dict[str, int]:
    stats = server.stats()
    return {name: stats.get(name, 0) for name in COUNTERS}


def spent(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before[name] for name in COUNTERS}


NOTHING = dict.fromkeys(COUNTERS, 0)


def same_cost(actual: dict[str, int], expected: dict[str, int]) -> bool:
    """Equal counters, give or take one get: a request that loads a session
    re-reads its node's outage epoch (``<prefix>!epoch``) about once a second.
    """
    diff = {name: actual[name] - expected[name] for name in COUNTERS}
    gets = diff.pop("cmd_get")
    found = diff.pop("get_hits") + diff.pop("get_misses")
    return gets in (-1, 0, 1) and found == gets and not any(diff.values())


def assert_valid_key(key: bytes) -> None:
    assert 0 < len(key) <= 250, key
    assert all(0x21 <= byte <= 0x7E for byte in key), key


def assert_keys_sane(
    server: MemcachedServer, prefix: str = "", owners: set[str] | None = None
) -> None:
    """Every key is the canary or ``<prefix><id>[-<suffix>]`` of a known id.

    ``<prefix>!epoch`` is the library's per-node outage marker.
    """
    allowed = {b"canary", (prefix + "!epoch").encode()}
    for key in live_keys(server):
        assert_valid_key(key)
        if key in allowed:
            continue
        assert key.startswith(prefix.encode()), key
        rest = key[len(prefix) :]
        assert SESSION_KEY.fullmatch(rest), key
        if owners is not None:
            assert rest[:32].decode() in owners, key


# --------------------------------------------------------------------------- responses


def cookie_headers(response: webtest.TestResponse, name: str) -> list[str]:
    return [
        header
        for header in response.headers.getall("Set-Cookie")
        if header.partition("=")[0].strip() == name
    ]


def cookie_value(header: str) -> str:
    return header.partition("=")[2].split(";", 1)[0]


def attributes(header: str) -> dict[str, str]:
    out = {}
    for part in header.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        out[key.lower()] = value
    return out


def flip(signature: str) -> str:
    """The signature with its first character changed (not just padding bits)."""
    return ("B" if signature[:1] == "A" else "A") + signature[1:]


# --------------------------------------------------------------------------- the scene


class Scene:
    """A victim with a live session, a raw canary key, and a way to attack.

    ``send`` makes a request from a new browser (an empty cookie jar) with a
    raw ``Cookie`` header; ``attack`` also measures the server's counters
    against a harmless request of the same kind and checks the victim's data.
    """

    def __init__(
        self, server: MemcachedServer, routes: list[Any] | None = None, **settings: Any
    ) -> None:
        settings.setdefault("memcache_servers", [server.address])
        settings.setdefault("cookie_name", "sid")
        self.server = server
        self.name: str = settings["cookie_name"]
        self.prefix: str = settings.get("key_prefix", "")
        secrets = settings.get("secret_key") or ()
        self.codec = CookieCodec([secrets] if isinstance(secrets, str) else list(secrets))
        self.victim = make_app(settings, routes)
        self.victim.get("/", {"set": "secret", "value": json.dumps(VICTIM_SECRET)}, status=200)
        self.victim_cookie: str = self.victim.cookies[self.name]
        victim_sid = self.codec.decode(self.victim_cookie)
        assert victim_sid is not None
        self.victim_sid: str = victim_sid
        self.owners = {victim_sid}
        server.set("canary", b"intact")
        # The attacker's own, legitimate session; also warms the handler up.
        own = cookie_headers(self.send(None), self.name)
        self.own_cookie = cookie_value(own[-1])

    @property
    def app(self) -> webapp2.WSGIApplication:
        return self.victim.app

    def send(
        self,
        cookie: str | None,
        params: Any = None,
        *,
        path: str = "/",
        headers: dict[str, str] | None = None,
        environ: dict[str, str] | None = None,
        app: webapp2.WSGIApplication | None = None,
        codec: CookieCodec | None = None,
    ) -> webtest.TestResponse:
        browser = webtest.TestApp(app or self.app)
        all_headers = dict(headers or {})
        if cookie is not None:
            all_headers["Cookie"] = cookie
        response = browser.get(
            path,
            ATTACK if params is None else params,
            headers=all_headers,
            extra_environ=environ or {},
            status=200,
        )
        for header in cookie_headers(response, self.name):
            value = cookie_value(header)
            if value:
                sid = (codec or self.codec).decode(value)
                assert sid is not None, header  # never a hostile value echoed back
                self.owners.add(sid)
            else:
                assert attributes(header).get("max-age") == "0", header
        return response

    def track(self, browser: webtest.TestApp) -> str:
        """The id in ``browser``'s cookie jar, now known as a legitimate owner."""
        sid = self.codec.decode(browser.cookies[self.name])
        assert sid is not None
        self.owners.add(sid)
        return sid

    def fields(self) -> dict[str, str]:
        signature = self.victim_cookie.partition(".")[2]
        return {
            "unknown": new_session_id(),
            "UNKNOWN": new_session_id().upper(),
            "victim": self.victim_sid,
            "forged": f"{self.victim_sid}.{flip(signature)}",
            "truncated": self.victim_cookie[:-1],
            "truncated_more": self.victim_cookie[:40],
            "swapped": f"{self.victim_sid}.{self.own_cookie.partition('.')[2]}",
            "other_key": CookieCodec([OTHER_SECRET]).encode(self.victim_sid),
            "own": self.own_cookie,
            "signed_unknown": self.codec.encode(new_session_id()),
        }

    def attack(self, cookie: str, *, lookup: bool) -> webtest.TestResponse:
        """Send ``cookie``; it must cost what a harmless request costs.

        ``lookup``: the cookie names a well-formed id the server never issued,
        so one lookup is expected (compared with another such id); otherwise
        it must cost exactly what a request without any cookie costs.
        """
        harmless = f"{self.name}={self.codec.encode(new_session_id())}" if lookup else None
        before = counters(self.server)
        self.send(harmless)
        middle = counters(self.server)
        response = self.send(cookie)
        after = counters(self.server)
        assert same_cost(spent(middle, after), spent(before, middle)), (before, middle, after)
        assert response.json["secret"] is None
        assert response.json["sid"] != self.victim_sid
        assert VICTIM_SECRET not in response.text
        self.assert_intact()
        return response

    def assert_intact(self) -> None:
        canary = self.server.mg("canary")
        assert canary is not None and canary[0] == b"intact"
        assert self.server.mg(self.prefix + self.victim_sid) is not None
        stored = self.server.mg(f"{self.prefix}{self.victim_sid}-secret")
        assert stored is not None and json.loads(stored[0]) == VICTIM_SECRET
        stats = self.server.stats()
        assert stats["cmd_flush"] == 0 and stats["get_flushed"] == 0
        assert_keys_sane(self.server, self.prefix, self.owners)
        read = self.victim.get("/", {"get": "secret"}, status=200)
        assert read.json == {"secret": VICTIM_SECRET}
