"""Session fixation: the victim's browser is made to carry an id the attacker knows,
one the server never issued or the attacker's own live session.

An id the server never issued is never adopted, not even when memcached could not be
asked at load time, and regeneration at login leaves the planted session dead.
"""

from __future__ import annotations

import time

import pytest
import webapp2
import webtest
from conftest import SECRET, make_app
from hostile import Scene, assert_gone, cookie_headers, cookie_value

from webapp2_sessions import SessionHandlerMixin
from webapp2_sessions.keys import new_session_id


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_an_id_the_server_never_issued_is_not_adopted(memcached, signed):
    scene = Scene(memcached, **({"secret_key": SECRET} if signed else {}))
    planted = new_session_id()
    cookie = f"sid={scene.codec.encode(planted)}"
    response = scene.attack(cookie, lookup=True)
    assert response.json["sid"] != planted
    (header,) = cookie_headers(response, "sid")
    assert scene.codec.decode(cookie_value(header)) not in (None, planted)
    for params in ({"set": "x", "value": "1"}, {"incr": "n"}, {"flash": "f"}, {"regen": "1"}):
        again = scene.send(cookie, params)
        for header in cookie_headers(again, "sid"):
            assert planted not in header
    assert_gone(memcached, planted, ["x", "n", "secret", "mine"])
    scene.assert_intact()


def test_an_attackers_real_session_planted_before_login_is_dead_after_regeneration(memcached):
    scene = Scene(memcached, secret_key=SECRET)
    planted_cookie = scene.own_cookie
    planted = scene.codec.decode(planted_cookie)
    assert planted is not None
    login = scene.send(
        f"sid={planted_cookie}", {"regen": "1", "set": "user", "value": '"victim"', "sid": "1"}
    )
    assert login.json["sid"] != planted
    (header,) = cookie_headers(login, "sid")
    assert scene.codec.decode(cookie_value(header)) == login.json["sid"]
    attacker = scene.send(f"sid={planted_cookie}", {"get": ["user", "mine"]})
    assert attacker.json == {"user": None, "mine": None}
    assert_gone(memcached, planted, ["mine", "user"])
    victim = scene.send(f"sid={cookie_value(header)}", {"get": "user"})
    assert victim.json == {"user": "victim"}
    scene.assert_intact()


@pytest.mark.parametrize(
    "action",
    [
        pytest.param("set"),
        pytest.param("incr"),
        pytest.param("update"),
    ],
)
def test_an_outage_while_loading_does_not_let_a_later_write_adopt_a_planted_id(memcached, action):
    planted = new_session_id()

    class LoadThenWrite(SessionHandlerMixin, webapp2.RequestHandler):
        def get(self) -> None:
            self.session.load()  # memcached is down: the id cannot be checked
            memcached.start()  # and back before the request ends
            time.sleep(0.05)  # longer than dead_retry
            if action == "set":
                self.set_session_var("n", 1)
            elif action == "incr":
                self.incr_session_var("n")
            else:
                self.update_session_var("n", lambda old: 1)

    app = make_app(
        {"memcache_servers": [memcached.address], "cookie_name": "sid", "dead_retry": 0.01},
        [("/", LoadThenWrite)],
    )
    memcached.stop()
    response = webtest.TestApp(app.app).get("/", headers={"Cookie": f"sid={planted}"}, status=200)
    # The write is not saved: the id could not be checked, so it is neither
    # adopted nor replaced (a real visitor's session would still be on the
    # node, and is served again once it answers).
    assert cookie_headers(response, "sid") == []
    assert_gone(memcached, planted, ["n"])
