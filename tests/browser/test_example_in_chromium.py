"""The example site in a real browser: headless Chromium against a real memcached.

What only a browser can show: how it stores and sends the cookie (HttpOnly,
SameSite), two tabs sharing one session, a cookie replayed from another
profile, and a form posted from another origin.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from typing import Any

try:
    from playwright.sync_api import expect
except ImportError as exc:  # fail, never skip
    raise ImportError(
        "Playwright for Python is not installed: run `make test-browser`, or "
        "`pip install -e '.[browser]'`"
    ) from exc

COOKIE = "demo_session"
ROUNDS = 5


def session_cookie(context: Any) -> dict[str, Any]:
    cookies = [c for c in context.cookies() if c["name"] == COOKIE]
    assert len(cookies) == 1, context.cookies()
    return cookies[0]


def session_id(context: Any) -> str:
    return str(session_cookie(context)["value"]).split(".")[0]


def log_in(page: Any, site: str, user: str) -> None:
    page.goto(site + "/login")
    page.get_by_label("Your name").fill(user)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".who")).to_contain_text(f"Signed in as {user}")


def test_the_counter_survives_reloads(page, site):
    page.goto(site + "/")
    expect(page.locator("h1")).to_have_text("Visit number 1")
    for n in (2, 3):
        page.reload()
        expect(page.locator("h1")).to_have_text(f"Visit number {n}")
    page.goto(site + "/lists")
    page.goto(site + "/")
    expect(page.locator("h1")).to_have_text("Visit number 4")


def test_two_tabs_writing_different_lists_at_once_both_keep_their_writes(new_context, site):
    context = new_context()
    first, second = context.new_page(), context.new_page()
    first.goto(site + "/")  # one session for both tabs
    for tab in (first, second):
        tab.goto(site + "/lists")
    for n in range(ROUNDS):
        first.get_by_label("Add to groceries").fill(f"bread {n}")
        second.get_by_label("Add to chores").fill(f"sweep {n}")
        # Both forms submitted before either response arrives.
        with first.expect_navigation(), second.expect_navigation():
            first.locator("#groceries form.row").evaluate("form => form.requestSubmit()")
            second.locator("#chores form.row").evaluate("form => form.requestSubmit()")
    for tab in (first, second):
        tab.goto(site + "/lists")
        expect(tab.locator("#groceries li span")).to_have_text(
            [f"bread {n}" for n in range(ROUNDS)]
        )
        expect(tab.locator("#chores li span")).to_have_text([f"sweep {n}" for n in range(ROUNDS)])


def test_login_changes_the_session_id_and_the_old_id_is_gone_from_memcached(page, site, memcached):
    page.goto(site + "/")
    before = session_id(page.context)
    assert any(key.startswith(before) for key in memcached.keys())
    log_in(page, site, "ada")
    after = session_id(page.context)
    assert after != before
    expect(page.locator(".flash.success")).to_contain_text(f"changed from {before[:8]}")
    expect(page.locator("h1")).to_have_text("Visit number 2")  # the variables moved along
    assert not any(key.startswith(before) for key in memcached.keys())


def test_logout_ends_the_session_and_the_old_cookie_replayed_elsewhere_reads_nothing(
    new_context, site, memcached
):
    victim = new_context().new_page()
    log_in(victim, site, "ada")
    victim.goto(site + "/lists")
    victim.get_by_label("Add to groceries").fill("secret recipe")
    victim.get_by_label("Add to groceries").press("Enter")
    expect(victim.locator("#groceries li span")).to_have_text(["secret recipe"])
    stolen = session_cookie(victim.context)
    old_id = session_id(victim.context)

    victim.get_by_role("button", name="Log out").click()
    expect(victim.locator(".flash.info")).to_contain_text("Logged out.")
    expect(victim.locator(".who")).not_to_contain_text("Signed in")
    assert session_id(victim.context) != old_id
    assert not any(key.startswith(old_id) for key in memcached.keys())

    # A second browser presents the cookie copied before the logout.
    thief = new_context()
    thief.add_cookies([stolen])
    page = thief.new_page()
    page.goto(site + "/lists")
    expect(page.locator(".who")).not_to_contain_text("Signed in")
    expect(page.locator("#groceries li")).to_have_text(["Nothing yet."])
    assert session_id(thief) != old_id
    page.goto(site + "/session")
    expect(page.locator("table.keys tbody td.mono:first-child")).to_have_text(["_csrf_token"])


def test_sign_out_other_devices_signs_the_other_browser_out_and_keeps_this_one(
    new_context, site, memcached
):
    laptop = new_context().new_page()
    phone = new_context().new_page()
    log_in(laptop, site, "grace")
    log_in(phone, site, "grace")
    phone_id = session_id(phone.context)

    laptop.goto(site + "/login")
    laptop.get_by_role("button", name="Sign out other devices").click()
    expect(laptop.locator(".flash.info")).to_contain_text("Signed out 1 other session(s).")
    expect(laptop.locator(".who")).to_contain_text("Signed in as grace")

    phone.reload()
    expect(phone.locator(".who")).not_to_contain_text("Signed in")
    assert not any(key.startswith(phone_id) for key in memcached.keys())
    laptop.goto(site + "/")
    expect(laptop.locator(".who")).to_contain_text("Signed in as grace")


def attack(page: Any, attacker_url: str, target: str, **fields: str) -> Any:
    """Open the attacker's page, which auto-submits a form to ``target``; the POST's response."""
    url = attacker_url + "/?" + urllib.parse.urlencode({"target": target, **fields})
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.goto(url)
    page.wait_for_load_state()
    return posted.value


def test_a_login_form_posted_from_another_port_is_refused_and_the_victim_stays_logged_out(
    page, site, attacker
):
    # Another port on the same host is another origin but the same site: the
    # browser sends the SameSite=Lax cookie, and only the CSRF check stops it.
    page.goto(site + "/")
    before = session_cookie(page.context)
    response = attack(page, attacker("127.0.0.1"), site + "/login", user="mallory")
    assert response.status == 403
    assert f"{COOKIE}=" in (response.request.all_headers().get("cookie") or "")
    expect(page.locator("h1")).to_have_text("This form cannot be accepted")
    assert session_cookie(page.context) == before
    page.goto(site + "/")
    expect(page.locator(".who")).not_to_contain_text("Signed in")
    expect(page.locator("h1")).to_have_text("Visit number 2")  # same session, untouched


def test_a_login_form_posted_from_another_site_is_refused_and_gets_no_cookie(page, site, attacker):
    # 127.0.0.2 is another site: SameSite=Lax keeps the cookie off the POST,
    # so the request has no session and no token.
    page.goto(site + "/")
    before = session_cookie(page.context)
    response = attack(page, attacker("127.0.0.2"), site + "/login", user="mallory")
    assert response.status == 403
    assert f"{COOKIE}=" not in (response.request.all_headers().get("cookie") or "")
    assert session_cookie(page.context) == before
    page.goto(site + "/")
    expect(page.locator(".who")).not_to_contain_text("Signed in")
    expect(page.locator("h1")).to_have_text("Visit number 2")


def test_a_logout_form_posted_from_another_origin_is_refused_and_the_victim_stays_logged_in(
    page, site, attacker
):
    log_in(page, site, "ada")
    before = session_cookie(page.context)
    response = attack(page, attacker("127.0.0.1"), site + "/logout")
    assert response.status == 403
    assert session_cookie(page.context) == before
    page.goto(site + "/")
    expect(page.locator(".who")).to_contain_text("Signed in as ada")


def test_the_browser_keeps_the_session_cookie_httponly_lax_and_for_this_browser_session(
    page, site
):
    page.goto(site + "/")
    cookie = session_cookie(page.context)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["path"] == "/"
    assert cookie["secure"] is False  # plain http: Secure is set on https only
    assert cookie["expires"] == -1  # no Max-Age or Expires: gone when the browser closes
    assert re.fullmatch(r"[0-9a-f]{32}\.[A-Za-z0-9_-]{43}", cookie["value"])
    assert page.evaluate("document.cookie") == ""  # out of reach of scripts


def test_remember_me_at_login_gives_a_cookie_the_browser_keeps_for_thirty_days(page, site):
    page.goto(site + "/login")
    page.get_by_label("Your name").fill("ada")
    page.get_by_label("Remember me").check()
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".who")).to_contain_text("Signed in as ada")
    cookie = session_cookie(page.context)
    assert cookie["expires"] > time.time() + 29 * 24 * 3600  # persistent, not -1
    page.goto(site + "/session")
    expect(page.locator("dl.facts")).to_contain_text("Remembered")
    expect(page.locator("dl.facts")).to_contain_text("a persistent cookie")


def test_an_id_older_than_rotate_after_is_replaced_on_the_next_visit_with_every_variable(
    page, rotating_site, memcached
):
    page.goto(rotating_site + "/")
    expect(page.locator("h1")).to_have_text("Visit number 1")
    first = session_id(page.context)
    time.sleep(3)  # the id is now older than ROTATE_AFTER=2 (a lower bound, not a timing)
    page.reload()
    expect(page.locator("h1")).to_have_text("Visit number 2")
    second = session_id(page.context)
    assert second != first
    page.goto(rotating_site + "/session")
    expect(page.locator("dl.facts")).to_contain_text("a new id after 2 s")
    expect(page.locator("h1")).to_have_text("Your session")
    assert memcached.mg(second) is not None
    time.sleep(3)  # past the grace of 1 s (and memcached's 1 s clock): the pointer is gone
    assert memcached.mg(first) is None


def test_the_session_page_shows_the_keys_memcached_holds_and_counts_their_ttl_down(
    page, site, memcached
):
    page.goto(site + "/lists")
    page.get_by_label("Add to chores").fill("dishes")
    page.get_by_label("Add to chores").press("Enter")
    expect(page.locator("#chores li span")).to_have_text(["dishes"])
    page.goto(site + "/session")
    keys = page.locator("td.key-cell").all_inner_texts()
    sid = session_id(page.context)
    assert [k.replace("hashed name", "").strip() for k in keys] == [
        sid,
        f"{sid}-_csrf_token",
        f"{sid}-chores",
    ]
    for key in keys:
        assert memcached.mg(key.strip()) is not None, key
    ttl = page.locator("[data-ttl]").first
    shown = ttl.inner_text()
    expect(ttl).not_to_have_text(shown)  # the script counts down every second
