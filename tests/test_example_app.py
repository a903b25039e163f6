"""The example application, on the embedded store and on memcached."""

from __future__ import annotations

import os
import re
import sys

import pytest
import webtest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

from app import make_app


@pytest.fixture(params=["embedded", "memcached"])
def site(request, memcached):
    settings = {"cookie_name": "demo_session", "secret_key": "s" * 32}
    if request.param == "memcached":
        settings["memcache_servers"] = [memcached.address]
    return webtest.TestApp(make_app(settings))


def visits(page) -> int:
    return int(re.search(r"Visit number (\d+)", page.text).group(1))


def test_counter_counts_per_browser(site):
    assert visits(site.get("/")) == 1
    assert visits(site.get("/")) == 2
    site.reset()
    assert visits(site.get("/")) == 1


def test_note_form_stores_a_value_and_flashes(site):
    page = site.post("/note", {"note": "buy <milk>"}).follow()
    assert "buy &lt;milk&gt;" in page.text
    assert "Note saved." in page.text
    assert "Note saved." not in site.get("/note").text


def test_login_rotates_the_id_and_logout_destroys_the_session(site):
    site.get("/")
    before = site.cookies["demo_session"]
    page = site.post("/login", {"user": "ada"}).follow()
    assert "signed in as <b>ada</b>" in page.text
    assert site.cookies["demo_session"] != before
    page = site.post("/logout").follow()
    assert "ada" not in page.text and "Logged out." in page.text
    assert visits(page) == 1  # a fresh session: the old counter is gone


def test_health_check_creates_no_session(site):
    response = site.get("/health")
    assert response.text == "ok"
    assert "Set-Cookie" not in response.headers


def test_app_reads_memcache_servers_from_the_environment(monkeypatch, memcached):
    monkeypatch.setenv("MEMCACHE_SERVERS", memcached.address)
    site = webtest.TestApp(make_app())
    site.get("/")
    sid = site.cookies["demo_session"].split(".")[0]
    assert memcached.mg(f"{sid}-visits")[0] == b"1"
