"""Replaying a cookie signed with a secret that has since been retired.

It starts a fresh session; a cookie signed with a secret still listed is accepted, and
new cookies are signed with the first secret of the list.
"""

from __future__ import annotations

from conftest import make_app
from hostile import VICTIM_SECRET, Scene, cookie_headers, cookie_value, counters, same_cost, spent

from webapp2_sessions.cookies import CookieCodec

OLD_SECRET = "retired-secret-0123456789abcdef"
NEW_SECRET = "current-secret-0123456789abcdef"


def test_a_cookie_signed_with_a_retired_secret_starts_a_fresh_session(memcached):
    scene = Scene(memcached, secret_key=[OLD_SECRET])
    rotated = make_app(
        {"memcache_servers": [memcached.address], "cookie_name": "sid", "secret_key": [NEW_SECRET]}
    ).app
    codec = CookieCodec([NEW_SECRET])
    before = counters(memcached)
    scene.send(None, app=rotated, codec=codec)
    middle = counters(memcached)
    response = scene.send(f"sid={scene.victim_cookie}", app=rotated, codec=codec)
    assert same_cost(spent(middle, counters(memcached)), spent(before, middle))
    assert response.json["secret"] is None
    assert response.json["sid"] != scene.victim_sid
    (header,) = cookie_headers(response, "sid")
    assert CookieCodec([NEW_SECRET]).decode(cookie_value(header)) == response.json["sid"]
    scene.assert_intact()


def test_a_cookie_signed_with_a_secret_still_listed_is_accepted_and_new_ones_use_the_first(
    memcached,
):
    scene = Scene(memcached, secret_key=[OLD_SECRET])
    both = make_app(
        {
            "memcache_servers": [memcached.address],
            "cookie_name": "sid",
            "secret_key": [NEW_SECRET, OLD_SECRET],
        }
    ).app
    codec = CookieCodec([NEW_SECRET, OLD_SECRET])
    cookie = f"sid={scene.victim_cookie}"
    response = scene.send(cookie, {"get": "secret"}, app=both, codec=codec)
    assert response.json == {"secret": VICTIM_SECRET}
    fresh = scene.send(None, app=both, codec=codec)
    (header,) = cookie_headers(fresh, "sid")
    assert CookieCodec([NEW_SECRET]).decode(cookie_value(header)) == fresh.json["sid"]
    assert CookieCodec([OLD_SECRET]).decode(cookie_value(header)) is None
    scene.assert_intact()
