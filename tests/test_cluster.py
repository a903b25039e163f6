"""Sessions on a memcached cluster: placement, dead nodes, returning nodes."""

from __future__ import annotations

import logging
import time

import webapp2
import webtest
from conftest import PATIENT, SECRET, Handler, capture_errors

from webapp2_sessions import MemcacheStore, SessionUnavailableError
from webapp2_sessions.keys import new_session_id


def cluster_app(servers, **settings) -> webapp2.WSGIApplication:
    config = {
        "memcache_servers": [s.address for s in servers],
        "cookie_name": "sid",
        "secret_key": SECRET,
        # A stopped node refuses connections at once; only a paused one needs
        # a short timeout, and the tests that pause one set it.
        **PATIENT,
        **settings,
    }
    return webapp2.WSGIApplication([("/", Handler)], config={"webapp2_sessions": config})


def browsers(app, count: int) -> list[webtest.TestApp]:
    out = []
    for i in range(count):
        browser = webtest.TestApp(app)
        browser.get("/", {"set": ["a", "b"], "value": [str(i), f'"{i}"']})
        out.append(browser)
    return out


def sid(browser) -> str:
    return browser.cookies["sid"].split(".")[0]


def test_every_key_of_a_session_lives_on_the_node_its_id_hashes_to(memcached_cluster):
    app = cluster_app(memcached_cluster)
    store = MemcacheStore([s.address for s in memcached_cluster])
    by_address = {s.address: s for s in memcached_cluster}
    used = set()
    for browser in browsers(app, 30):
        home = store.node_for(sid(browser))
        used.add(home)
        for server in memcached_cluster:
            present = [server.mg(f"{sid(browser)}{k}") is not None for k in ("", "-a", "-b")]
            assert present == [server is by_address[home]] * 3
    assert len(used) == 3  # sessions spread over every node


def test_adding_a_fourth_node_moves_about_a_quarter_of_sessions():
    three = MemcacheStore(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])
    four = MemcacheStore(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"])
    ids = [new_session_id() for _ in range(4000)]
    moved = [i for i in ids if three.node_for(i) != four.node_for(i)]
    assert 0.20 < len(moved) / len(ids) < 0.30
    assert all(four.node_for(i) == "127.0.0.1:4" for i in moved)


def test_a_dead_node_costs_only_its_own_sessions_and_is_logged_once(memcached_cluster, caplog):
    app = cluster_app(memcached_cluster, dead_retry=30)
    store = MemcacheStore([s.address for s in memcached_cluster])
    clients = browsers(app, 45)
    victim = memcached_cluster[1]
    victim.stop()
    with caplog.at_level(logging.WARNING, logger="webapp2_sessions"):
        for i, browser in enumerate(clients):
            on_dead_node = store.node_for(sid(browser)) == victim.address
            for _ in range(2):
                body = browser.get("/", {"get": ["a", "b"]}, status=200).json
                expected = {"a": None, "b": None} if on_dead_node else {"a": i, "b": str(i)}
                assert body == expected
    down = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(down) == 1 and victim.address in down[0].getMessage()


def test_a_visitor_of_a_dead_node_keeps_their_id_and_only_new_visitors_go_elsewhere(
    memcached_cluster,
):
    app = cluster_app(memcached_cluster, dead_retry=30)
    store = MemcacheStore([s.address for s in memcached_cluster])
    clients = browsers(app, 30)
    victim = memcached_cluster[0]
    stranded = [b for b in clients if store.node_for(sid(b)) == victim.address]
    assert stranded
    victim.stop()
    for browser in stranded:
        old = browser.cookies["sid"]
        response = browser.get("/", {"set": "c", "value": "1", "get": "a"}, status=200)
        assert response.json == {"a": None}  # unavailable: defaults
        # Neither expired nor replaced: the session is not moved to another node.
        assert "sid=" not in response.headers.get("Set-Cookie", "")
        assert browser.cookies["sid"] == old
    for newcomer in browsers(app, 10):
        assert store.node_for(sid(newcomer)) != victim.address
    store.close()


def test_a_restarted_node_takes_traffic_again_after_the_dead_interval(memcached_cluster):
    app = cluster_app(memcached_cluster, dead_retry=0.3)
    store = MemcacheStore([s.address for s in memcached_cluster])
    victim = memcached_cluster[2]
    victim.stop()
    browsers(app, 5)  # some of these meet the dead node and mark it down
    victim.start()
    time.sleep(0.4)
    clients = browsers(app, 40)
    on_victim = [b for b in clients if store.node_for(sid(b)) == victim.address]
    assert on_victim
    for browser in on_victim:
        assert victim.mg(f"{sid(browser)}-a") is not None


def test_a_logout_during_a_partition_holds_and_the_nodes_other_sessions_survive(
    memcached_cluster,
):
    """SIGSTOP keeps the node's memory, like a network partition would."""
    # The paused node costs one timeout; 2 s is still far above any reply
    # time once it answers again.
    app = cluster_app(memcached_cluster, timeout=2, dead_retry=0.5)
    store = MemcacheStore([s.address for s in memcached_cluster])
    victim = memcached_cluster[0]
    clients = browsers(app, 30)
    stranded = [b for b in clients if store.node_for(sid(b)) == victim.address]
    elsewhere = [b for b in clients if store.node_for(sid(b)) != victim.address]
    assert len(stranded) >= 2 and elsewhere
    logged_out, idle = stranded[0], stranded[1]
    kept = idle.get("/", {"get": ["a", "b"]}).json
    old_cookie = logged_out.cookies["sid"]
    old_sid = old_cookie.split(".")[0]
    victim.pause()
    try:
        logged_out.get("/", {"destroy": "1"}, status=200)  # logout during the outage
        assert "sid" not in logged_out.cookies
    finally:
        victim.resume()
    assert victim.mg(old_sid) is not None  # not deleted yet: the node was away
    time.sleep(0.6)  # the node's dead_retry runs out
    # The first request of this process, whatever node it is for, completes it.
    elsewhere[0].get("/", {"get": "a"}, status=200)
    assert victim.mg(old_sid) is None
    assert victim.mg(f"{old_sid}-a") is None
    thief = webtest.TestApp(app)
    thief.set_cookie("sid", old_cookie)
    assert thief.get("/", {"get": "a"}).json == {"a": None}
    # Everyone else on the node kept their session through the outage.
    assert idle.get("/", {"get": ["a", "b"]}).json == kept
    store.close()


def test_all_nodes_down_pages_still_render_with_defaults(memcached_cluster):
    app = cluster_app(memcached_cluster)
    clients = browsers(app, 6)
    for server in memcached_cluster:
        server.stop()
    for browser in clients:
        assert browser.get("/", {"get": "a"}, status=200).json == {"a": None}
        browser.get("/", {"set": "z", "value": "1"}, status=200)


def test_all_nodes_down_in_strict_mode_lets_the_app_answer_503(memcached_cluster):
    app = cluster_app(memcached_cluster, strict=True)
    seen = capture_errors(app, 503)
    clients = browsers(app, 3)
    for server in memcached_cluster:
        server.stop()
    for browser in clients:
        browser.get("/", {"get": "a"}, status=503)
    assert all(isinstance(e, SessionUnavailableError) for e in seen) and len(seen) == 3


def test_an_evicted_required_variable_ends_the_session(memcached):
    class Guarded(Handler):
        session_required = ("csrf",)

    config = {"memcache_servers": [memcached.address], "cookie_name": "sid", **PATIENT}
    app = webtest.TestApp(
        webapp2.WSGIApplication([("/", Guarded)], config={"webapp2_sessions": config})
    )
    app.get("/", {"set": ["csrf", "cart"], "value": ['"t"', "[1]"]})
    old = sid(app)
    memcached.raw(f"md {old}-csrf\r\n".encode())  # what an eviction looks like
    body = app.get("/", {"get": "cart", "sid": "1"}).json
    assert body["cart"] is None and body["sid"] != old
    assert memcached.mg(f"{old}-cart") is None


def test_an_evicted_variable_is_reported_as_lost(memcached):
    from webapp2_sessions import Session, SessionConfig

    config = SessionConfig.from_mapping({"memcache_servers": [memcached.address], **PATIENT})
    store = MemcacheStore([memcached.address], **PATIENT)
    session = Session(config, store, None)
    session["a"], session["b"] = 1, 2
    session.save()
    memcached.raw(f"md {session.session_id}-a\r\n".encode())
    again = Session(config, store, session.session_id)
    assert again.get("a") is None and again.get("b") == 2
    assert again.lost == {"a"}


def test_a_new_visitor_whose_id_meets_an_undetected_dead_node_is_stored_on_a_live_one(
    memcached_cluster,
):
    dead = memcached_cluster[0]
    dead.stop()
    for _ in range(30):
        # A fresh application has not yet seen the failure.
        browser = webtest.TestApp(cluster_app(memcached_cluster, dead_retry=10))
        response = browser.get("/", {"set": "cart", "value": "[1]"}, status=200)
        assert "sid=" in response.headers["Set-Cookie"]
        assert browser.get("/", {"get": "cart"}).json == {"cart": [1]}


def test_session_required_is_read_per_request_so_a_handler_may_vary_it(memcached):
    class PerPath(Handler):
        @property
        def session_required(self):  # only the admin area insists on 'csrf'
            return ("csrf",) if self.request.path.startswith("/admin") else ()

    config = {"memcache_servers": [memcached.address], "cookie_name": "sid", **PATIENT}
    app = webtest.TestApp(
        webapp2.WSGIApplication(
            [("/", PerPath), ("/admin", PerPath)], config={"webapp2_sessions": config}
        )
    )
    app.get("/", {"set": ["csrf", "cart"], "value": ['"t"', "[1]"]})
    old = sid(app)
    memcached.raw(f"md {old}-csrf\r\n".encode())  # what an eviction looks like
    assert app.get("/", {"get": "cart", "sid": "1"}).json == {"cart": [1], "sid": old}
    body = app.get("/admin", {"get": "cart", "sid": "1"}).json
    assert body["cart"] is None and body["sid"] != old
