"""Sign out everywhere: sessions tied to an owner, on real memcached and databases."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import webapp2
import webtest
from conftest import PATIENT, SECRET, age_id

from webapp2_sessions import (
    MemcacheStore,
    SessionHandlerMixin,
    SessionMiddleware,
    get_current_session,
    revoke_sessions,
    transitions,
)
from webapp2_sessions import owners as owners_module
from webapp2_sessions.cli import main
from webapp2_sessions.owner_index import COMPACT_SLACK
from webapp2_sessions.sql import sessions_table


class Owners(SessionHandlerMixin, webapp2.RequestHandler):
    """``?login=<owner>`` (a new id, then the owner), ``?owner=``, ``?regen=1``,
    ``?others=1`` (destroy_other_sessions), ``?logout=1``, ``?set=&value=``
    (strings), ``?get=``; answers JSON."""

    def get(self) -> None:
        q = self.request.GET
        out: dict[str, Any] = {}
        if "login" in q:
            self.regenerate_session_id()
            self.set_session_owner(q["login"])
        if "owner" in q:
            self.set_session_owner(q["owner"])
        if "regen" in q:
            self.regenerate_session_id()
        if "others" in q:
            out["ended"] = self.destroy_other_sessions()
        if "logout" in q:
            self.destroy_session()
        for name, value in zip(q.getall("set"), q.getall("value"), strict=False):
            self.set_session_var(name, value)
        for name in q.getall("get"):
            out[name] = self.get_session_var(name)
        self.response.content_type = "application/json"
        self.response.write(json.dumps(out))


class Plain(SessionHandlerMixin, webapp2.RequestHandler):
    """A page that reads and writes as usual and never uses owners."""

    def get(self) -> None:
        q = self.request.GET
        for name in q.getall("get"):
            self.get_session_var(name)
        for name, value in zip(q.getall("set"), q.getall("value"), strict=False):
            self.set_session_var(name, value)


def make(servers: list[str], **settings: Any) -> webapp2.WSGIApplication:
    config = {
        "memcache_servers": servers,
        "cookie_name": "sid",
        "secret_key": SECRET,
        "sweep_percent": 0,
        **PATIENT,
        **settings,
    }
    return webapp2.WSGIApplication(
        [("/", Owners), ("/plain", Plain)], config={"webapp2_sessions": config}
    )


def log_in(app: webapp2.WSGIApplication, owner: str, secret: str = "") -> webtest.TestApp:
    """A new browser that logs in as ``owner`` and keeps ``secret`` in its session."""
    browser = webtest.TestApp(app)
    browser.get("/", {"set": "secret", "value": secret or f"{owner}'s"})
    browser.get("/", {"login": owner})
    return browser


def sid_of(browser: webtest.TestApp) -> str:
    return str(browser.cookies["sid"]).split(".")[0]


def cookie_sid(browser: webtest.TestApp) -> str | None:
    """The id the browser's cookie names now (None: the cookie was cleared)."""
    return sid_of(browser) if "sid" in browser.cookies else None


def secret(browser: webtest.TestApp) -> Any:
    return browser.get("/", {"get": "secret"}).json["secret"]


def digest(owner: str) -> str:
    return hashlib.sha256(owner.encode()).hexdigest()


def listed(server: Any, owner: str, prefix: str = "") -> list[str]:
    """The ids the owner's index lists on ``server``."""
    found = server.mg(f"{prefix}owner~{digest(owner)}")
    if found is None:
        return []
    return [line.decode() for line in found[0].split(b"\n")[1:] if line]


# --------------------------------------------------------------------------- memcached alone


def test_destroy_other_sessions_keeps_the_current_session_and_ends_the_others(memcached):
    app = make([memcached.address])
    phone, laptop, tablet = (log_in(app, "ann", f"ann {n}") for n in range(3))
    bob = log_in(app, "bob")
    gone = [sid_of(laptop), sid_of(tablet)]

    assert phone.get("/", {"others": "1"}).json == {"ended": 2}

    assert secret(phone) == "ann 0"
    for browser, sid in zip((laptop, tablet), gone, strict=True):
        assert secret(browser) is None
        assert cookie_sid(browser) != sid
        assert not any(key.startswith(sid) for key in memcached.keys())
    assert secret(bob) == "bob's"
    assert listed(memcached, "ann") == [sid_of(phone)]
    assert phone.get("/", {"others": "1"}).json == {"ended": 0}  # nobody left to end


def test_destroy_other_sessions_without_an_owner_ends_nothing_and_returns_0(memcached):
    app = make([memcached.address])
    ann = log_in(app, "ann")
    anonymous = webtest.TestApp(app)
    anonymous.get("/", {"set": "secret", "value": "mine"})

    assert anonymous.get("/", {"others": "1"}).json == {"ended": 0}
    assert webtest.TestApp(app).get("/", {"others": "1"}).json == {"ended": 0}  # new visitor
    assert secret(ann) == "ann's" and secret(anonymous) == "mine"


def test_revoke_sessions_returns_the_count_and_leaves_other_owners_untouched(memcached):
    app = make([memcached.address])
    anns = [log_in(app, "ann") for _ in range(3)]
    bobs = [log_in(app, "bob") for _ in range(2)]
    anonymous = webtest.TestApp(app)
    anonymous.get("/", {"set": "secret", "value": "nobody's"})

    assert revoke_sessions(app, "ann") == 3

    assert [secret(b) for b in anns] == [None, None, None]
    assert [secret(b) for b in bobs] == ["bob's", "bob's"]
    assert secret(anonymous) == "nobody's"
    assert listed(memcached, "ann") == []
    assert revoke_sessions(app, "ann") == 0


def test_a_revoked_cookie_replayed_elsewhere_opens_nothing(memcached):
    app = make([memcached.address])
    victim = log_in(app, "ann", "card 4242")
    stolen = victim.cookies["sid"]
    old = sid_of(victim)

    assert revoke_sessions(app, "ann") == 1

    thief = webtest.TestApp(app)
    thief.set_cookie("sid", stolen)
    assert secret(thief) is None
    assert cookie_sid(thief) != old
    assert not any(key.startswith(old) for key in memcached.keys())


def test_revoke_across_a_cluster_ends_the_owners_sessions_on_every_node(memcached_cluster):
    servers = [s.address for s in memcached_cluster]
    app = make(servers)
    anns = [log_in(app, "ann") for _ in range(9)]
    bobs = [log_in(app, "bob") for _ in range(6)]
    ring = MemcacheStore(servers)
    homes = {ring.node_for(sid_of(b)) for b in anns}
    assert len(homes) >= 2  # nine random ids: spread over more than one node

    # The index lives on the node its owner's hash routes to, and only there.
    home = ring.node_for(f"owner~{digest('ann')}")
    for server in memcached_cluster:
        if server.address == home:
            assert sorted(listed(server, "ann")) == sorted(sid_of(b) for b in anns)
        else:
            assert listed(server, "ann") == []
    ring.close()

    ids = [sid_of(b) for b in anns]
    assert revoke_sessions(app, "ann") == 9

    keys = [key for server in memcached_cluster for key in server.keys()]
    assert not any(key.startswith(sid) for key in keys for sid in ids)
    assert [secret(b) for b in anns] == [None] * 9
    assert [secret(b) for b in bobs] == ["bob's"] * 6


def test_stale_index_entries_do_not_break_revoke_or_the_count(memcached):
    app = make([memcached.address])
    kept, logged_out, expired, moved = (log_in(app, "ann") for _ in range(4))
    logged_out.get("/", {"logout": "1"})
    record = sid_of(expired)
    memcached.raw(f"mg {record} T1\r\n".encode())  # its idle window ends in a second
    deadline = time.monotonic() + 30
    while memcached.mg(record) is not None:
        assert time.monotonic() < deadline, "memcached did not expire the record"
        time.sleep(0.2)
    moved.get("/", {"owner": "carol"})  # tied to someone else since (no new id)
    assert len(listed(memcached, "ann")) == 4

    assert revoke_sessions(app, "ann") == 1

    assert secret(kept) is None
    assert secret(moved) == "ann's"  # carol's now: not ann's to end
    assert revoke_sessions(app, "carol") == 1


def test_regeneration_keeps_the_owner_and_the_new_id_is_revoked(memcached):
    app = make([memcached.address])
    ann = log_in(app, "ann")
    before = sid_of(ann)

    ann.get("/", {"regen": "1"})
    after = sid_of(ann)

    assert after != before
    assert after in listed(memcached, "ann")
    assert revoke_sessions(app, "ann") == 1  # the old id, still listed, is harmless
    assert secret(ann) is None


def revoking_during_copies(
    monkeypatch: Any, app: webapp2.WSGIApplication, owner: str
) -> list[int]:
    """Make every regeneration run ``revoke_sessions(app, owner)`` once it has
    claimed the old id and before it copies it; the counts it returned."""
    counts: list[int] = []
    real_copy = transitions.copy

    def copy(session: Any, claimed: Any, new: str | None = None) -> None:
        counts.append(revoke_sessions(app, owner))
        real_copy(session, claimed, new)

    monkeypatch.setattr(transitions, "copy", copy)
    return counts


def test_a_session_regenerated_while_its_owner_is_revoked_is_ended_with_it(memcached, monkeypatch):
    app = make([memcached.address])
    ann = log_in(app, "ann")
    old = sid_of(ann)
    counts = revoking_during_copies(monkeypatch, app, "ann")

    ann.get("/", {"regen": "1"})

    assert counts == [1]
    assert cookie_sid(ann) is None  # the copy was undone: logged out
    assert not any(key.startswith(old) for key in memcached.keys())
    assert listed(memcached, "ann") == []
    monkeypatch.undo()
    assert secret(ann) is None
    assert revoke_sessions(app, "ann") == 0


def test_a_revoke_never_ends_a_regenerating_session_whose_record_names_another_owner(
    memcached, monkeypatch
):
    app = make([memcached.address])
    log_in(app, "ann")
    bob = log_in(app, "bob")
    planted = f"{sid_of(bob)}\n".encode()  # bob's id listed in ann's index
    command = b"ms owner~%s %d MA\r\n%s\r\n" % (digest("ann").encode(), len(planted), planted)
    assert memcached.raw(command).startswith(b"HD")
    counts = revoking_during_copies(monkeypatch, app, "ann")

    bob.get("/", {"regen": "1"})

    assert counts == [1]  # ann's own session only
    monkeypatch.undo()
    assert secret(bob) == "bob's"
    assert sid_of(bob) in listed(memcached, "bob")


def test_an_automatic_rotation_lists_the_new_id_and_revoke_ends_it(memcached):
    app = make([memcached.address], rotate_after=3600, rotate_grace=60)
    ann = log_in(app, "ann")
    before = sid_of(ann)
    age_id(memcached, before, 3601)

    assert secret(ann) == "ann's"  # this request rotates the id
    after = sid_of(ann)

    assert after != before
    assert after in listed(memcached, "ann")
    assert revoke_sessions(app, "ann") == 1
    assert secret(ann) is None


def test_destroy_other_sessions_during_a_rotations_grace_keeps_the_current_session(memcached):
    # The old id's pointer names no owner: ending it would follow it to the
    # new id, the very session that asked to keep itself.
    app = make([memcached.address], rotate_after=3600, rotate_grace=60)
    ann, laptop = log_in(app, "ann"), log_in(app, "ann", "laptop's")
    age_id(memcached, sid_of(ann), 3601)
    assert secret(ann) == "ann's"  # rotated; the old id now points to the new one

    assert ann.get("/", {"others": "1"}).json == {"ended": 1}

    assert secret(ann) == "ann's"
    assert secret(laptop) is None


def test_set_session_owner_on_a_new_visitor_stores_the_session(memcached):
    app = make([memcached.address])
    browser = webtest.TestApp(app)

    browser.get("/", {"owner": "ann"})

    sid = sid_of(browser)
    assert memcached.mg(sid) is not None
    assert listed(memcached, "ann") == [sid]
    assert revoke_sessions(app, "ann") == 1


@pytest.mark.parametrize(
    ("owner", "error"),
    [
        (None, TypeError),
        (42, TypeError),
        (b"ann", TypeError),
        (["ann"], TypeError),
        ("", ValueError),
    ],
)
def test_bad_owner_values_raise_naming_the_argument_and_store_nothing(memcached, owner, error):
    store = MemcacheStore([memcached.address], **PATIENT)

    def tie(environ: Any, start_response: Any) -> list[bytes]:
        get_current_session().set_owner(owner)
        start_response("200 OK", [])
        return [b""]

    middleware = SessionMiddleware(tie, {"store": store})
    with pytest.raises(error, match="owner"):
        webtest.TestApp(middleware).get("/")
    with pytest.raises(error, match="owner"):
        revoke_sessions(middleware, owner)
    assert memcached.stats()["curr_items"] == 0
    store.close()


def test_revoke_sessions_refuses_what_is_not_an_application():
    with pytest.raises(TypeError, match=r"app must be a webapp2\.WSGIApplication"):
        revoke_sessions(object(), "ann")


def test_revoke_sessions_accepts_a_session_middleware(memcached):
    def app(environ: Any, start_response: Any) -> list[bytes]:
        session = get_current_session()
        session["secret"] = "ann's"
        session.set_owner("ann")
        start_response("200 OK", [])
        return [b""]

    middleware = SessionMiddleware(
        app, {"memcache_servers": [memcached.address], "cookie_name": "sid", **PATIENT}
    )
    browser = webtest.TestApp(middleware)
    browser.get("/")
    sid = sid_of(browser)
    assert revoke_sessions(middleware, "ann") == 1
    assert memcached.mg(sid) is None
    middleware.close()


def test_keys_hold_the_owners_hash_never_the_owner_and_the_index_outlives_the_idle_window(
    memcached,
):
    owner = "ann@example.com\r\nflush_all"
    app = make([memcached.address], idle_timeout=600, key_prefix="app:")
    browser = log_in(app, owner)
    keys = memcached.keys()
    assert f"app:owner~{digest(owner)}" in keys
    assert not any("ann" in key for key in keys)
    index = memcached.mg(f"app:owner~{digest(owner)}")
    assert index is not None and 1000 < index[1] <= 1200  # twice idle_timeout
    assert sid_of(browser) in listed(memcached, owner, "app:")
    assert f'"o":"{digest(owner)}"'.encode() in memcached.mg(f"app:{sid_of(browser)}")[0]


def test_the_index_is_compacted_as_it_grows_and_keeps_every_live_session(memcached):
    app = make([memcached.address])
    live = [log_in(app, "ann") for _ in range(3)]
    for _ in range(40):
        log_in(app, "ann").get("/", {"logout": "1"})

    ids = listed(memcached, "ann")
    assert len(ids) <= 2 * 3 + COMPACT_SLACK + 1
    assert {sid_of(b) for b in live} <= set(ids)
    assert revoke_sessions(app, "ann") == 3


def test_the_index_never_outgrows_item_size_max(memcached):
    app = make([memcached.address], item_size_max=4096)
    browsers = [log_in(app, "ann") for _ in range(80)]  # 80 live ids: 2,640 bytes

    index = memcached.mg(f"owner~{digest('ann')}")
    assert index is not None and len(index[0]) <= 4096 // 2
    newest = sid_of(browsers[-1])
    assert newest in listed(memcached, "ann")
    assert revoke_sessions(app, "ann") >= 50


def test_an_evicted_index_lists_the_session_again_on_a_later_request(memcached):
    app = make([memcached.address])
    ann = log_in(app, "ann")
    memcached.raw(f"md owner~{digest('ann')}\r\n".encode())  # as if evicted
    assert revoke_sessions(app, "ann") == 0  # not findable by owner meanwhile

    owners_module._renewals.forget(sid_of(ann))  # half an idle window later, say
    ann.get("/", {"get": "secret"})

    assert listed(memcached, "ann") == [sid_of(ann)]
    assert revoke_sessions(app, "ann") == 1


# --------------------------------------------------------------------------- round trips


def test_a_request_that_never_uses_owners_costs_what_it_did(proxy, memcached):
    """The round trips and memcached's own op counts of tests/test_round_trips.py."""
    app = webtest.TestApp(make([proxy.address]))
    app.get("/plain", {"set": ["a", "b", "c"], "value": ["1", "2", "3"]})
    app.get("/plain", {"get": ["a", "b", "c"]})  # the handler learns what it reads
    # A returning visitor reading three: the record and three values, each
    # read and renewed (memcached counts a touching read as a touch), in one
    # batch. Writing one: the same load but for the value written, then the
    # value and the record read back. Writing all three: the record alone.
    cases = [
        ({"get": ["a", "b", "c"]}, 1, {"cmd_touch": 4}),
        ({"set": "a", "value": "4"}, 2, {"cmd_touch": 3, "cmd_get": 1, "cmd_set": 1}),
        (
            {"set": ["a", "b", "c"], "value": ["1", "2", "3"]},
            2,
            {"cmd_touch": 1, "cmd_get": 1, "cmd_set": 3},
        ),
    ]
    for query, trips, ops in cases:
        before = memcached.stats()
        proxy.reset()
        app.get("/plain", query)
        after = memcached.stats()
        assert proxy.round_trips == trips
        counted = ("cmd_get", "cmd_set", "cmd_touch", "cmd_flush")
        assert {k: after[k] - before[k] for k in counted if after[k] != before[k]} == ops
    before = memcached.stats()
    proxy.reset()
    webtest.TestApp(make([proxy.address])).get("/plain", {"set": ["a", "b"], "value": ["1", "2"]})
    assert proxy.round_trips == 1
    assert memcached.stats()["cmd_set"] - before["cmd_set"] == 3  # two variables, the record
    assert not any(key.startswith("owner~") for key in memcached.keys())


def test_an_owned_session_costs_no_extra_round_trip_once_its_index_is_renewed(proxy):
    app = webtest.TestApp(make([proxy.address]))
    app.get("/plain", {"set": "a", "value": "1"})
    app.get("/", {"owner": "ann"})
    app.get("/plain", {"get": "a"})
    proxy.reset()
    app.get("/plain", {"get": "a"})
    assert proxy.round_trips == 1


def test_round_trips_of_each_owner_api(proxy, memcached):
    app = make([proxy.address])
    browser = webtest.TestApp(app)
    browser.get("/", {"set": "secret", "value": "x"})
    browser.get("/", {"get": "secret"})
    proxy.reset()
    browser.get("/", {"owner": "ann"})
    assert proxy.round_trips == 1 + 2  # the load; the record's owner line, the index
    other = log_in(app, "ann")
    other.get("/", {"get": "secret"})
    proxy.reset()
    browser.get("/", {"others": "1"})
    # The load; the session's own record read again (has it moved?), the index,
    # the records (one node), a logout (two), the index rewritten.
    assert proxy.round_trips == 1 + 1 + 1 + 1 + 2 + 1
    log_in(app, "ann")
    proxy.reset()
    assert revoke_sessions(app, "ann") == 2
    assert proxy.round_trips == 1 + 1 + 2 * 2 + 1


# --------------------------------------------------------------------------- the database tier


def owners_in(engine: sa.engine.Engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(sessions_table.c.id, sessions_table.c.owner))
        return {row.id: row.owner for row in rows}


def test_the_database_tier_keeps_the_owner_in_the_session_row_and_revokes_by_it(memcached, engine):
    app = make([memcached.address], database=engine)
    anns = [log_in(app, "ann") for _ in range(3)]
    bob = log_in(app, "bob")
    rows = owners_in(engine)
    assert {rows[sid_of(b)] for b in anns} == {digest("ann")}
    assert rows[sid_of(bob)] == digest("bob")
    assert not any(key.startswith("owner~") for key in memcached.keys())  # no index needed

    assert anns[0].get("/", {"others": "1"}).json == {"ended": 2}
    assert secret(anns[0]) == "ann's"
    stolen = anns[1].cookies["sid"]
    assert revoke_sessions(app, "ann") == 1

    memcached.raw(b"flush_all\r\n")
    thief = webtest.TestApp(app)
    thief.set_cookie("sid", stolen)
    assert secret(thief) is None
    assert [secret(b) for b in anns] == [None, None, None]
    assert secret(bob) == "bob's"  # read back from the database
    assert set(owners_in(engine).values()) >= {digest("bob")}
    assert digest("ann") not in owners_in(engine).values()


def test_the_owner_survives_regeneration_after_a_flush_on_the_database_tier(memcached, engine):
    app = make([memcached.address], database=engine)
    ann = log_in(app, "ann")
    memcached.raw(b"flush_all\r\n")  # the record is rebuilt from the row, owner and all
    ann.get("/", {"regen": "1"})
    assert owners_in(engine)[sid_of(ann)] == digest("ann")
    assert revoke_sessions(app, "ann") == 1
    assert secret(ann) is None


def test_an_owner_set_while_memcached_is_stalled_survives_the_next_regeneration(memcached, engine):
    # The stall costs one 2 s timeout; the requests after the resume have as long.
    app = make([memcached.address], database=engine, timeout=2, dead_retry=0.5)
    ann = webtest.TestApp(app)
    ann.get("/", {"set": "secret", "value": "ann's"})
    with memcached.paused():
        ann.get("/", {"owner": "ann"})  # the row takes it; memcached never hears of it
    assert owners_in(engine)[sid_of(ann)] == digest("ann")
    time.sleep(0.6)  # the node's dead_retry is over

    ann.get("/", {"regen": "1"})  # copies the record memcached serves

    assert owners_in(engine)[sid_of(ann)] == digest("ann")
    assert revoke_sessions(app, "ann") == 1
    assert secret(ann) is None


def test_a_sessions_table_without_the_owner_column_gets_it_on_first_use(memcached, engine):
    with engine.begin() as conn:  # the table as versions before owners made it
        conn.execute(
            sa.text(
                "CREATE TABLE webapp2_sessions (id VARCHAR(32) PRIMARY KEY, "
                "created FLOAT NOT NULL, expires FLOAT NOT NULL, "
                "user_agent VARCHAR(32), remote_addr VARCHAR(32))"
            )
        )
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO webapp2_sessions VALUES ('0' , 1.0, 1e12, NULL, NULL)"))

    app = make([memcached.address], database=engine)
    ann = log_in(app, "ann")

    columns = {c["name"] for c in sa.inspect(engine).get_columns("webapp2_sessions")}
    indexed = [i["column_names"] for i in sa.inspect(engine).get_indexes("webapp2_sessions")]
    assert "owner" in columns and ["owner"] in indexed
    assert owners_in(engine) == {"0": None, sid_of(ann): digest("ann")}
    assert revoke_sessions(app, "ann") == 1


# --------------------------------------------------------------------------- the admin command


def run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--timeout", "10"])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_revoke_command_ends_every_session_of_the_owner_and_says_how_many(memcached, capsys):
    app = make([memcached.address])
    anns = [log_in(app, "ann") for _ in range(2)]
    bob = log_in(app, "bob")

    code, out, err = run(capsys, "revoke", "--owner", "ann", "--servers", memcached.address)

    assert (code, out, err) == (0, "2 session(s) ended\n", "")
    assert [secret(b) for b in anns] == [None, None]
    assert secret(bob) == "bob's"
    again = ["revoke", "--owner", "ann", "--servers", memcached.address, "--json"]
    code, out, _ = run(capsys, *again)
    assert code == 0 and json.loads(out) == {"owner_sha256": digest("ann"), "ended": 0}


def test_the_revoke_command_on_the_database_tier_survives_a_flush(memcached, sqlite_url, capsys):
    engine = sa.create_engine(sqlite_url)
    try:
        app = make([memcached.address], database=engine)
        ann = log_in(app, "ann")
        stolen = ann.cookies["sid"]

        argv = ["revoke", "--owner", "ann", "--servers", memcached.address]
        code, out, err = run(capsys, *argv, "--database", sqlite_url)

        assert code == 0 and out == "1 session(s) ended\n", err
        memcached.raw(b"flush_all\r\n")
        thief = webtest.TestApp(app)
        thief.set_cookie("sid", stolen)
        assert secret(thief) is None
    finally:
        engine.dispose()


def test_the_revoke_command_refuses_an_empty_owner(memcached, capsys):
    code, out, err = run(capsys, "revoke", "--owner", "", "--servers", memcached.address)
    assert code == 2 and out == ""
    assert err == "error: --owner: must not be empty\n"


def test_the_database_tier_revokes_a_session_regenerated_after_its_old_id_was_listed(
    memcached, engine, monkeypatch
):
    from webapp2_sessions.sql import Database

    app = make([memcached.address], database=engine)
    ann = log_in(app, "ann")
    old = sid_of(ann)
    real_owned = Database.owned
    regenerated: list[str] = []

    def owned(self: Database, owner_hash: str) -> Any:
        found = real_owned(self, owner_hash)
        if not regenerated:  # ann logs in again right after the revoke listed her old id
            ann.get("/", {"regen": "1"})
            regenerated.append(sid_of(ann))
        return found

    monkeypatch.setattr(Database, "owned", owned)
    revoke_sessions(app, "ann")
    monkeypatch.undo()
    assert regenerated[0] != old
    assert secret(ann) is None  # the new id was ended too
    assert digest("ann") not in owners_in(engine).values()


#: ``rotate_after`` of the sessions the ``rotating`` fixture builds.
HOUR = 3600


@pytest.fixture(params=[False, True], ids=["memcached alone", "database"])
def rotating(request: pytest.FixtureRequest, memcached: Any, tmp_path: Any) -> Iterator[Any]:
    """(config, store, durable tier or None) for sessions built without an app,
    their ids rotated after ``HOUR``; the database a SQLite file. Closed after."""
    from test_durable import parts

    from webapp2_sessions import SessionConfig
    from webapp2_sessions.runtime import build_store

    engine = None
    if request.param:
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'sessions.db'}")
        config, store, durable = parts(memcached, engine, rotate_after=HOUR, **PATIENT)
    else:
        config = SessionConfig.from_mapping(
            {"memcache_servers": [memcached.address], "rotate_after": HOUR, **PATIENT}
        )
        store, durable = build_store(config), None
    try:
        yield config, store, durable
    finally:
        store.close()
        if engine is not None:
            engine.dispose()


def test_destroy_others_from_a_request_that_loaded_the_id_before_a_rotation_keeps_the_visitor(
    rotating,
):
    from webapp2_sessions import Session

    config, store, durable = rotating
    mine = Session(config, store, None, durable=durable)
    mine["a"] = 1
    mine.set_owner("alice")
    mine.save()
    other = Session(config, store, None, durable=durable)  # another device
    other["a"] = 9
    other.set_owner("alice")
    other.save()
    old = mine.session_id

    slow = Session(config, store, old, durable=durable)
    assert slow.get("a") == 1  # loaded before another request of the visitor rotated it
    rotator = Session(config, store, old, durable=durable, clock=lambda: time.time() + HOUR)
    assert rotator.get("a") == 1
    new = rotator.session_id
    assert new != old

    assert slow.destroy_others() == 1  # "log out my other devices"
    assert Session(config, store, new, durable=durable).get("a") == 1  # still mine
    assert Session(config, store, other.session_id, durable=durable).get("a") is None


def test_set_owner_racing_a_rotation_is_reported_not_saved_or_revocable(rotating, monkeypatch):
    from webapp2_sessions import Session, rotation
    from webapp2_sessions.owners import owner_hash
    from webapp2_sessions.revocation import revoke

    config, store, durable = rotating
    first = Session(config, store, None, durable=durable)
    first["a"] = 1
    first.save()
    old = first.session_id
    login = Session(config, store, old, durable=durable)
    assert login.get("a") == 1  # loaded before another request rotated the id
    real_copy = rotation.copy

    def copy(*args: Any) -> None:
        real_copy(*args)
        login.set_owner("alice")  # after the rotation's claim, before its pointer

    monkeypatch.setattr(rotation, "copy", copy)
    rotator = Session(config, store, old, durable=durable, clock=lambda: time.time() + HOUR)
    assert rotator.get("a") == 1
    new = rotator.session_id
    assert new != old
    monkeypatch.undo()

    # The rotation claimed the record first and copied it without the
    # owner line: the login is told its owner was not set ...
    assert not login.available
    # ... and, not being the owner's, the moved session outlives a revocation.
    assert revoke(config, store, durable, owner_hash("alice")) == 0
    assert Session(config, store, new, durable=durable).get("a") == 1
