"""The example application, on the embedded store and on memcached.

Most tests drive it through webtest; the concurrency tests serve it with the
example's own threaded server on a free port and send real requests from 16
threads (webtest is not thread-safe).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import webtest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

from app import make_app, make_server
from conftest import PATIENT

COOKIE = "demo_session"
SECRET = "example-secret-0123456789abcdef"


@pytest.fixture(params=["embedded", "memcached"])
def settings(request: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"cookie_name": COOKIE, "secret_key": SECRET}
    if request.param == "memcached":
        settings["memcache_servers"] = [request.getfixturevalue("memcached").address]
        settings.update(PATIENT)
    return settings


@pytest.fixture
def site(settings: dict[str, Any]) -> webtest.TestApp:
    return webtest.TestApp(make_app(settings))


def visits(text: str) -> int:
    match = re.search(r"Visit number (\d+)", text)
    assert match, text[:500]
    return int(match.group(1))


def token_in(text: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', text)
    assert match, "no CSRF token on the page"
    return match.group(1)


def sid_of(site: webtest.TestApp) -> str:
    return site.cookies[COOKIE].split(".")[0]


def list_items(text: str, name: str) -> list[str]:
    card = text.split(f'id="{name}"', 1)[1].split('<form class="row"', 1)[0]
    return re.findall(r"<li><span>(.*?)</span>", card)


# ---------------------------------------------------------------- counter


def test_counter_counts_per_browser(site):
    assert visits(site.get("/").text) == 1
    assert visits(site.get("/").text) == 2
    site.reset()
    assert visits(site.get("/").text) == 1


def test_counter_is_stored_as_a_memcached_counter(memcached):
    settings = {"cookie_name": COOKIE, "memcache_servers": [memcached.address], **PATIENT}
    site = webtest.TestApp(make_app(settings))
    site.get("/")
    site.get("/")
    sid = site.cookies[COOKIE]  # unsigned: the bare id
    assert memcached.mg(f"{sid}-visits")[0] == b"2"  # decimal text: memcached's incr format


def test_reset_deletes_the_counter(site):
    page = site.get("/")
    site.get("/")
    page = site.post("/reset", {"csrf_token": token_in(page.text)}).follow()
    assert visits(page.text) == 1
    assert "Counter reset." in page.text


# ---------------------------------------------------------------- lists


def test_each_list_is_its_own_variable(site, settings, memcached):
    page = site.get("/lists")
    token = token_in(page.text)
    for item in ("milk", "eggs"):
        site.post("/lists/groceries", {"csrf_token": token, "item": item})
    site.post("/lists/chores", {"csrf_token": token, "item": "dishes"})
    page = site.get("/lists")
    assert list_items(page.text, "groceries") == ["milk", "eggs"]
    assert list_items(page.text, "chores") == ["dishes"]
    if "memcache_servers" in settings:
        sid = sid_of(site)
        assert json.loads(memcached.mg(f"{sid}-groceries")[0]) == ["milk", "eggs"]
        assert json.loads(memcached.mg(f"{sid}-chores")[0]) == ["dishes"]


def test_removing_an_item_keeps_the_others_and_clearing_empties_the_list(site):
    token = token_in(site.get("/lists").text)
    for item in ("a", "b", "c"):
        site.post("/lists/chores", {"csrf_token": token, "item": item})
    site.post("/lists/chores", {"csrf_token": token, "action": "remove", "item": "b"})
    assert list_items(site.get("/lists").text, "chores") == ["a", "c"]
    page = site.post("/lists/chores", {"csrf_token": token, "action": "clear"}).follow()
    assert list_items(page.text, "chores") == []
    assert "Chores cleared." in page.text


def test_an_unknown_list_is_not_found(site):
    token = token_in(site.get("/lists").text)
    site.post("/lists/secrets", {"csrf_token": token, "item": "x"}, status=404)


def test_items_are_escaped(site):
    token = token_in(site.get("/lists").text)
    site.post("/lists/groceries", {"csrf_token": token, "item": "<script>x</script>"})
    page = site.get("/lists")
    assert "<script>x</script>" not in page.text
    assert "&lt;script&gt;x&lt;/script&gt;" in page.text


# ---------------------------------------------------------------- CSRF

POSTS = [
    ("/reset", {}),
    ("/lists/groceries", {"item": "forged"}),
    ("/session/set", {"name": "forged", "value": "1"}),
    ("/session/delete", {"name": "visits"}),
    ("/login", {"user": "mallory"}),
    ("/logout", {}),
    ("/logout/others", {}),
]


@pytest.mark.parametrize(("path", "form"), POSTS, ids=[p for p, _ in POSTS])
def test_every_form_is_refused_without_the_csrf_token(site, path, form):
    site.get("/")
    site.get("/")
    before = site.cookies[COOKIE]
    page = site.post(path, form, status=403)
    assert "This form cannot be accepted" in page.text
    page = site.post(path, {**form, "csrf_token": "wrong"}, status=403)
    # Nothing was saved: same session, counter and lists untouched, nobody logged in.
    assert site.cookies[COOKIE] == before
    page = site.get("/lists")
    assert "forged" not in page.text and "mallory" not in page.text
    assert visits(site.get("/").text) == 3


def test_a_visitor_without_a_session_is_refused_and_gets_none(site):
    response = site.post("/login", {"user": "mallory", "csrf_token": "x"}, status=403)
    assert "Set-Cookie" not in response.headers


def test_the_csrf_token_is_accepted_from_the_form_and_from_the_header(site):
    token = token_in(site.get("/").text)
    site.post("/lists/chores", {"csrf_token": token, "item": "by form"}, status=302)
    site.post("/lists/chores", {"item": "by header"}, headers={"X-CSRF-Token": token}, status=302)
    assert list_items(site.get("/lists").text, "chores") == ["by form", "by header"]


def test_every_form_on_every_page_carries_the_token(site):
    token = token_in(site.get("/").text)
    site.post("/login", {"csrf_token": token, "user": "ada"})
    site.post("/lists/chores", {"csrf_token": token, "item": "x"})
    for path in ("/", "/lists", "/session", "/login"):
        text = site.get(path).text
        forms = re.findall(r'<form[^>]*method="post".*?</form>', text, re.S)
        assert forms, path
        for form in forms:
            assert f'name="csrf_token" value="{token}"' in form, (path, form)


# ---------------------------------------------------------------- login and logout


def test_login_rotates_the_id_and_keeps_the_variables(site):
    page = site.get("/")
    site.get("/")
    before = sid_of(site)
    page = site.post("/login", {"user": "ada", "csrf_token": token_in(page.text)}).follow()
    assert "Signed in as <b>ada</b>" in page.text
    assert "Welcome, ada!" in page.text
    assert sid_of(site) != before
    assert visits(page.text) == 3


def test_login_without_a_name_flashes_an_error(site):
    page = site.get("/login")
    page = site.post("/login", {"user": "  ", "csrf_token": token_in(page.text)}).follow()
    assert '<div class="flash error" role="status">Type a name to log in.</div>' in page.text
    assert "Signed in as" not in page.text


def test_logout_ends_the_session_and_its_old_cookie_reads_nothing(site):
    page = site.get("/")
    site.post("/login", {"user": "ada", "csrf_token": token_in(page.text)})
    site.get("/")
    old_cookie = site.cookies[COOKIE]
    page = site.post("/logout", {"csrf_token": token_in(page.text)}).follow()
    assert "Signed in as" not in page.text and "Logged out." in page.text
    assert visits(page.text) == 1  # a fresh session: the old counter is gone
    assert site.cookies[COOKIE] != old_cookie
    # The old cookie, replayed (say, stolen before the logout), reads nothing.
    site.reset()
    site.set_cookie(COOKIE, old_cookie)
    page = site.get("/")
    assert "Signed in as" not in page.text
    assert visits(page.text) == 1
    assert site.cookies[COOKIE] != old_cookie


def test_logout_deletes_every_key_on_memcached(memcached):
    settings = {"cookie_name": COOKIE, "memcache_servers": [memcached.address], **PATIENT}
    site = webtest.TestApp(make_app(settings))
    token = token_in(site.get("/").text)
    site.post("/login", {"user": "ada", "csrf_token": token})
    site.post("/lists/chores", {"csrf_token": token, "item": "x"})
    sid = site.cookies[COOKIE]
    assert len([k for k in memcached.keys() if k.startswith(sid)]) >= 4
    site.post("/logout", {"csrf_token": token})
    assert [k for k in memcached.keys() if k.startswith(sid)] == []


def test_flashes_are_shown_once_and_styled_by_level(site):
    page = site.get("/")
    page = site.post("/reset", {"csrf_token": token_in(page.text)}).follow()
    assert '<div class="flash info" role="status">Counter reset.</div>' in page.text
    assert "Counter reset." not in site.get("/").text


# ---------------------------------------------------------------- your session


def test_session_page_shows_each_variable_its_key_and_its_ttl(site, settings):
    token = token_in(site.get("/").text)
    site.post("/lists/groceries", {"csrf_token": token, "item": "tea"})
    site.post("/session/set", {"csrf_token": token, "name": "theme colour", "value": "dark"})
    page = site.get("/session").text
    sid = sid_of(site)
    rows = {
        name: row
        for name, row in re.findall(r'<tr><td class="mono">(.*?)</td>(.*?)</tr>', page, re.S)
    }
    assert sorted(rows) == ["_csrf_token", "groceries", "theme colour", "visits"]
    assert f"{sid}-<b>groceries</b>" in rows["groceries"]
    assert "&quot;tea&quot;" in rows["groceries"]
    # A name outside the safe alphabet is hashed: "~" and its SHA-256.
    assert re.search(rf"{sid}-<b>~[0-9a-f]{{64}}</b>", rows["theme colour"])
    assert "hashed name" in rows["theme colour"]
    record = re.search(r'<tr class="record">(.*?)</tr>', page, re.S)
    assert record and f"<b>{sid}</b>" in record.group(1)
    if "memcache_servers" in settings:
        # Asked from memcached: just renewed by the page's own read.
        ttls = [int(t) for t in re.findall(r'data-ttl="(\d+)"', page)]
        assert len(ttls) == 5 and all(86390 <= t <= 86400 for t in ttls), ttls
        assert "memcached at " in page
    else:
        assert page.count("24 h 0 min 0 s <span") == 5
        assert "the embedded store" in page


def test_session_page_sets_and_deletes_variables(site):
    token = token_in(site.get("/session").text)
    site.post("/session/set", {"csrf_token": token, "name": "colour", "value": "blue"})
    assert '<td class="mono">colour</td>' in site.get("/session").text
    page = site.post("/session/delete", {"csrf_token": token, "name": "colour"}).follow()
    assert '<td class="mono">colour</td>' not in page.text
    assert "Deleted colour." in page.text


# ---------------------------------------------------------------- operations


def test_health_check_creates_no_session(site):
    response = site.get("/health")
    assert response.text == "ok"
    assert "Set-Cookie" not in response.headers


def test_an_unreachable_store_shows_a_banner_and_pages_still_render():
    from memcached import free_port

    settings = {"memcache_servers": [f"127.0.0.1:{free_port()}"], "secret_key": SECRET}
    site = webtest.TestApp(make_app(settings))
    for path in ("/", "/lists", "/session", "/login"):
        page = site.get(path)
        assert "Sessions are unavailable." in page.text, path
    healthy = webtest.TestApp(make_app({"secret_key": SECRET}))
    assert "Sessions are unavailable." not in healthy.get("/").text


def test_a_store_that_goes_down_shows_the_banner_to_a_returning_visitor(memcached):
    site = webtest.TestApp(make_app({"memcache_servers": [memcached.address], **PATIENT}))
    assert "Sessions are unavailable." not in site.get("/").text
    memcached.stop()
    page = site.get("/lists")
    assert "Sessions are unavailable." in page.text
    assert "Nothing yet." in page.text  # reads give defaults; the page still renders


def test_a_missing_secret_is_logged_loudly_and_shown_in_a_banner(monkeypatch, caplog):
    monkeypatch.delenv("SESSION_SECRET", raising=False)
    monkeypatch.delenv("MEMCACHE_SERVERS", raising=False)
    with caplog.at_level(logging.WARNING, logger="example"):
        site = webtest.TestApp(make_app())
    assert "SESSION_SECRET is not set" in caplog.text
    assert "Development mode." in site.get("/").text


def test_a_secret_from_the_environment_signs_the_cookie_and_hides_the_banner(monkeypatch):
    monkeypatch.setenv("SESSION_SECRET", SECRET)
    monkeypatch.delenv("MEMCACHE_SERVERS", raising=False)
    page = webtest.TestApp(make_app()).get("/")
    assert "Development mode." not in page.text
    assert re.fullmatch(r"[0-9a-f]{32}\.[A-Za-z0-9_-]{43}", page.test_app.cookies[COOKIE])


def test_app_reads_memcache_servers_from_the_environment(monkeypatch, memcached):
    monkeypatch.setenv("MEMCACHE_SERVERS", f" {memcached.address} ,")
    site = webtest.TestApp(make_app())
    site.get("/")
    assert memcached.mg(f"{sid_of(site)}-visits")[0] == b"1"


# ---------------------------------------------------------------- a real threaded server


@contextlib.contextmanager
def serving(settings: dict[str, Any]) -> Iterator[tuple[str, int]]:
    """The example app on its own threaded server, on a free loopback port."""
    server = make_server(make_app(settings), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ("127.0.0.1", server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def fetch(
    address: tuple[str, int],
    path: str,
    cookie: str | None = None,
    form: dict[str, str] | None = None,
) -> tuple[int, str, str | None]:
    """One request, redirects not followed: (status, body, our Set-Cookie value or None)."""
    conn = http.client.HTTPConnection(*address, timeout=30)
    try:
        headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request("POST" if form is not None else "GET", path, body, headers)
        response = conn.getresponse()
        text = response.read().decode()
        set_cookie = None
        for header in response.headers.get_all("Set-Cookie") or []:
            if header.startswith(f"{COOKIE}="):
                set_cookie = header.split(";")[0].split("=", 1)[1]
        return response.status, text, set_cookie
    finally:
        conn.close()


def run_threads(count: int, work: Any) -> None:
    """``work(i)`` in ``count`` threads started together; re-raises the first failure."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(30)
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if errors:
        raise errors[0]


def test_counter_is_exact_with_16_threads_in_one_session(settings):
    with serving(settings) as address:
        status, text, cookie = fetch(address, "/")
        assert status == 200 and cookie and visits(text) == 1
        seen: list[int] = []

        def reload_ten_times(_: int) -> None:
            for _ in range(10):
                status, text, _ = fetch(address, "/", cookie)
                assert status == 200
                seen.append(visits(text))

        run_threads(16, reload_ten_times)
        # Every increment happened once: each request saw its own number.
        assert sorted(seen) == list(range(2, 162))
        assert visits(fetch(address, "/", cookie)[1]) == 162


def test_two_lists_changed_at_once_keep_every_item(settings):
    with serving(settings) as address:
        status, text, cookie = fetch(address, "/lists")
        assert status == 200 and cookie
        token = token_in(text)

        def add_items(i: int) -> None:
            name = ("groceries", "chores")[i % 2]
            for k in range(6):
                form = {"csrf_token": token, "item": f"{i}-{k}"}
                status, text, _ = fetch(address, f"/lists/{name}", cookie, form)
                assert status == 302, text[:300]

        run_threads(4, add_items)
        text = fetch(address, "/lists", cookie)[1]
        assert sorted(list_items(text, "groceries")) == sorted(
            f"{i}-{k}" for i in (0, 2) for k in range(6)
        )
        assert sorted(list_items(text, "chores")) == sorted(
            f"{i}-{k}" for i in (1, 3) for k in range(6)
        )
