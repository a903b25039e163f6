"""The admin command, ``python -m webapp2_sessions``, against real memcached and SQLite."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
import webapp2
import webtest
from conftest import PATIENT, SECRET, Handler

from webapp2_sessions.cli import main
from webapp2_sessions.keys import new_session_id
from webapp2_sessions.record import DEAD_LINE
from webapp2_sessions.sql import Database, StoredSession, sessions_table, variables_table

#: What every invocation passes: tests wait patiently on a busy machine.
TIMEOUT = ["--timeout", "10"]


#: Engines made for the apps of the running test, disposed when it ends.
_engines: list[sa.engine.Engine] = []


@pytest.fixture(autouse=True)
def _dispose_engines() -> Iterator[None]:
    """Python 3.13 warns of a SQLite connection collected unclosed."""
    yield
    while _engines:
        _engines.pop().dispose()


def browser(memcached: Any, **settings: Any) -> webtest.TestApp:
    """A visitor of a webapp2 app using SessionHandlerMixin on ``memcached``.

    A ``database`` URL becomes an engine disposed when the test ends.
    """
    if isinstance(settings.get("database"), str):
        _engines.append(sa.create_engine(settings["database"]))
        settings["database"] = _engines[-1]
    config = {
        "memcache_servers": [memcached.address],
        "cookie_name": "sid",
        "secret_key": SECRET,
        "sweep_percent": 0,
        **PATIENT,
        **settings,
    }
    app = webapp2.WSGIApplication([("/", Handler)], config={"webapp2_sessions": config})
    return webtest.TestApp(app)


def sid_of(visitor: webtest.TestApp) -> str:
    return str(visitor.cookies["sid"]).split(".")[0]


def run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """``main(argv)``: exit status, stdout and stderr."""
    code = main([*argv, *TIMEOUT] if argv[0] != "purge" else list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def on(memcached: Any, *more: str) -> list[str]:
    return ["--servers", memcached.address, *more]


# --------------------------------------------------------------------------- show


def test_show_prints_each_variable_on_a_line_with_creation_time_and_time_left(memcached, capsys):
    visitor = browser(memcached, idle_timeout=600)
    visitor.get("/", {"set": ["cart", "user"], "value": ["[1, 2]", '"ann"']})
    sid = sid_of(visitor)

    code, out, err = run(capsys, "show", sid, *on(memcached))

    assert code == 0, err
    lines = out.splitlines()
    assert "  cart = [1, 2]" in lines
    assert '  user = "ann"' in lines
    assert any(line.startswith("created:  ") and "UTC" in line for line in lines)
    assert any(line.startswith("idle:     ") for line in lines)
    assert "absolute: not known (give --absolute-timeout)" in lines
    assert any(line.startswith("ends in:  ") and "(idle timeout)" in line for line in lines)


def test_show_escapes_what_a_terminal_would_act_on_in_visitor_typed_values(memcached, capsys):
    visitor = browser(memcached)
    typed = "bob\u009b2J\u009b31mHACKED\u202e\u007f"  # 8-bit CSI, bidi override, DEL
    visitor.get("/", {"set": ["name", "city"], "value": [json.dumps(typed), '"Zürich"']})

    code, out, err = run(capsys, "show", sid_of(visitor), *on(memcached))

    assert code == 0, err
    assert '  name = "bob\\u009b2J\\u009b31mHACKED\\u202e\\u007f"' in out.splitlines()
    assert '  city = "Zürich"' in out.splitlines()  # readable text stays readable
    assert all(c.isprintable() for c in out.replace("\n", ""))


def test_show_json_gives_values_and_the_timeout_that_ends_first(memcached, capsys):
    visitor = browser(memcached, idle_timeout=600, absolute_timeout=300)
    visitor.get("/", {"set": ["cart", "n"], "value": ["[1, 2]", "7"]})
    sid = sid_of(visitor)

    code, out, err = run(
        capsys, "show", sid, *on(memcached, "--json", "--absolute-timeout", "300")
    )

    assert code == 0, err
    shown = json.loads(out)
    assert shown["session_id"] == sid and shown["stored_in"] == "memcached"
    assert shown["server"] == memcached.address
    assert shown["variables"] == {"cart": [1, 2], "n": 7}
    assert 0 < shown["idle_seconds_left"] <= 600
    assert 0 < shown["absolute_seconds_left"] <= 300
    assert shown["seconds_left"] == shown["absolute_seconds_left"]
    assert shown["ends_by"] == "absolute timeout"
    assert shown["missing"] == [] and shown["unreadable"] == {}


def test_show_json_stays_json_when_a_stored_value_is_not(memcached, capsys):
    from webapp2_sessions.keys import key_scheme
    from webapp2_sessions.serializers import FLAGS_JSON

    visitor = browser(memcached)
    visitor.get("/", {"set": ["x", "y"], "value": ["1", "2"]})
    sid = sid_of(visitor)
    (key,) = key_scheme("").variables(sid, ["x"])
    memcached.set(key, b"NaN", flags=FLAGS_JSON)  # planted: JSON has no NaN

    code, out, err = run(capsys, "show", sid, *on(memcached, "--json"))

    assert code == 0, err
    shown = json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} in the output"))
    assert shown["variables"] == {"y": 2}
    assert list(shown["unreadable"]) == ["x"]


def test_show_renews_nothing_and_reports_the_idle_time_memcached_has_left(memcached, capsys):
    visitor = browser(memcached, idle_timeout=600)
    visitor.get("/", {"set": "cart", "value": "1"})
    sid = sid_of(visitor)
    for key in (sid, f"{sid}-cart"):
        memcached.raw(f"mg {key} T100\r\n".encode())  # as if idle for 500 s

    code, out, err = run(capsys, "show", sid, *on(memcached, "--json"))

    assert code == 0, err
    assert 0 < json.loads(out)["idle_seconds_left"] <= 100
    for key in (sid, f"{sid}-cart"):
        item = memcached.mg(key)
        assert item is not None and 0 < item[1] <= 100


def test_show_costs_three_round_trips_and_destroy_three(memcached, proxy, capsys):
    visitor = browser(memcached)
    visitor.get("/", {"set": ["a", "b", "c"], "value": ["1", "2", "3"]})
    sid = sid_of(visitor)

    proxy.reset()
    assert run(capsys, "show", sid, "--servers", proxy.address)[0] == 0
    assert proxy.round_trips == 3  # the record; the variables; the record's TTL
    proxy.reset()
    assert run(capsys, "destroy", sid, "--servers", proxy.address)[0] == 0
    assert proxy.round_trips == 3  # the record; the logout's mark; its deletions


def test_show_does_not_unpickle_values(memcached, capsys):
    visitor = browser(memcached, serializer="pickle")
    visitor.get("/", {"set": "cart", "value": "[1]"})

    code, out, err = run(capsys, "show", sid_of(visitor), *on(memcached, "--json"))

    assert code == 0, err
    shown = json.loads(out)
    assert shown["variables"] == {}
    assert shown["unreadable"]["cart"].startswith("pickled, ")


def test_show_needs_the_applications_key_prefix(memcached, capsys):
    visitor = browser(memcached, key_prefix="shop:")
    visitor.get("/", {"set": "cart", "value": "1"})
    sid = sid_of(visitor)

    assert run(capsys, "show", sid, *on(memcached))[0] == 1
    code, out, err = run(capsys, "show", sid, *on(memcached, "--key-prefix", "shop:"))
    assert code == 0, err
    assert "  cart = 1" in out.splitlines()


def test_show_finds_each_session_on_its_own_node_of_a_cluster(memcached_cluster, capsys):
    servers = [server.address for server in memcached_cluster]
    app = webapp2.WSGIApplication(
        [("/", Handler)],
        config={
            "webapp2_sessions": {"memcache_servers": servers, "cookie_name": "sid", **PATIENT}
        },
    )
    for n in range(6):
        visitor = webtest.TestApp(app)
        visitor.get("/", {"set": "n", "value": str(n)})
        code, out, err = run(
            capsys, "show", sid_of(visitor), "--servers", ",".join(servers), "--json"
        )
        assert code == 0, err
        assert json.loads(out)["variables"] == {"n": n}


def test_show_of_an_unknown_id_exits_1_saying_so(memcached, capsys):
    sid = new_session_id()

    code, out, err = run(capsys, "show", sid, *on(memcached))

    assert code == 1 and out == ""
    assert err == f"error: no session {sid} on memcached {memcached.address} " + (
        "(never issued, ended or expired)\n"
    )


def test_show_of_a_logged_out_session_exits_1(memcached, capsys):
    visitor = browser(memcached)
    visitor.get("/", {"set": "cart", "value": "1"})
    sid = sid_of(visitor)
    visitor.get("/", {"destroy": "1"})

    code, _, err = run(capsys, "show", sid, *on(memcached))

    assert code == 1 and err.startswith(f"error: no session {sid}")


def test_show_of_a_session_whose_logout_is_under_way_exits_1(memcached, capsys):
    visitor = browser(memcached)
    visitor.get("/", {"set": "cart", "value": "1"})
    sid = sid_of(visitor)
    memcached.raw(b"append %s 0 0 %d\r\n%s\n\r\n" % (sid.encode(), len(DEAD_LINE) + 1, DEAD_LINE))

    code, _, err = run(capsys, "show", sid, *on(memcached))

    assert code == 1
    assert err == f"error: session {sid} has ended: a logout is under way\n"


def test_show_of_a_session_past_its_absolute_timeout_exits_1(memcached, capsys):
    visitor = browser(memcached)
    visitor.get("/", {"set": "cart", "value": "1"})
    sid = sid_of(visitor)
    record = memcached.mg(sid)
    assert record is not None
    created_long_ago = re.sub(rb'"c":[0-9.]+', b'"c":1000.000', record[0], count=1)
    memcached.set(sid, created_long_ago, record[2], ttl=600)

    code, _, err = run(capsys, "show", sid, *on(memcached, "--absolute-timeout", "3600"))

    assert code == 1
    assert err == f"error: session {sid} has ended: its absolute timeout has passed\n"


@pytest.mark.parametrize(
    "bad",
    [
        "abc",
        "not-a-session-id-but-32-chars-ok",
        "0" * 32,  # the right length, not the shape new_session_id() gives
        "SID\r\nflush_all",
        "{sid} x",
        "{sid}\r\nflush_all",
        "{SID}",
    ],
)
def test_show_refuses_a_malformed_id_before_any_key_is_built(memcached, capsys, bad):
    visitor = browser(memcached)
    visitor.get("/", {"set": "cart", "value": "1"})
    sid = sid_of(visitor)
    before = memcached.stats()

    code, out, err = run(capsys, "show", bad.format(sid=sid, SID=sid.upper()), *on(memcached))

    assert code == 2 and out == ""
    assert err.startswith("error: SESSION_ID: not a session id") and err.count("\n") == 1
    after = memcached.stats()
    assert after["cmd_get"] == before["cmd_get"] and after["curr_items"] == before["curr_items"]


def test_an_id_of_the_right_length_but_not_a_random_uuid_is_told_the_shape(memcached, capsys):
    code, _, err = run(capsys, "show", "0" * 32, *on(memcached))

    assert code == 2 and "13th digit 4, 17th one of 8, 9, a, b" in err


def test_a_signed_cookie_value_is_refused_with_a_hint(memcached, capsys):
    visitor = browser(memcached)
    visitor.get("/", {"set": "cart", "value": "1"})

    code, _, err = run(capsys, "show", str(visitor.cookies["sid"]), *on(memcached))

    assert code == 2 and "give the part before the '.'" in err


def test_show_reads_the_database_when_memcached_has_nothing(memcached, sqlite_url, capsys):
    visitor = browser(memcached, database=sqlite_url)
    visitor.get("/", {"set": ["cart", "user"], "value": ["[1, 2]", '"ann"']})
    sid = sid_of(visitor)
    memcached.raw(b"flush_all\r\n")

    assert run(capsys, "show", sid, *on(memcached))[0] == 1
    code, out, err = run(capsys, "show", sid, *on(memcached, "--database", sqlite_url, "--json"))

    assert code == 0, err
    shown = json.loads(out)
    assert shown["stored_in"] == "database"
    assert shown["variables"] == {"cart": [1, 2], "user": "ann"}
    assert 0 < shown["database_seconds_left"] <= 86400
    assert shown["idle_seconds_left"] is None
    assert memcached.mg(sid) is None  # only read: nothing put back


def test_show_reads_the_database_when_memcached_does_not_answer(memcached, sqlite_url, capsys):
    visitor = browser(memcached, database=sqlite_url)
    visitor.get("/", {"set": "cart", "value": "[1]"})
    sid = sid_of(visitor)
    memcached.stop()

    code, out, err = run(capsys, "show", sid, *on(memcached, "--database", sqlite_url, "--json"))

    assert code == 0, err
    assert json.loads(out)["variables"] == {"cart": [1]}


def test_show_of_an_id_neither_tier_knows_names_both(memcached, sqlite_url, capsys):
    browser(memcached, database=sqlite_url).get("/", {"set": "a", "value": "1"})
    sid = new_session_id()

    code, _, err = run(capsys, "show", sid, *on(memcached, "--database", sqlite_url))

    assert code == 1 and f"on memcached {memcached.address} or database sqlite://" in err


# --------------------------------------------------------------------------- destroy


def test_destroy_ends_the_session_so_its_cookie_opens_nothing(memcached, capsys):
    visitor = browser(memcached)
    visitor.get("/", {"set": ["cart", "user"], "value": ["[1]", '"ann"']})
    visitor.get("/", {"flash": "hello"})
    sid = sid_of(visitor)
    cookie = visitor.cookies["sid"]

    code, out, err = run(capsys, "destroy", sid, *on(memcached))

    assert code == 0, err
    assert out == f"session {sid} destroyed\n"
    assert [key for key in memcached.keys() if sid in key] == []
    replay = browser(memcached)
    replay.set_cookie("sid", cookie)
    answer = replay.get("/", {"get": ["cart", "user"], "flashes": "1"})
    assert answer.json == {"cart": None, "user": None, "flashes": []}
    assert "sid=;" in answer.headers["Set-Cookie"]  # the stale cookie is cleared


def test_destroy_json_says_what_was_destroyed(memcached, capsys):
    visitor = browser(memcached)
    visitor.get("/", {"set": "cart", "value": "1"})
    sid = sid_of(visitor)

    code, out, err = run(capsys, "destroy", sid, *on(memcached, "--json"))

    assert code == 0, err
    assert json.loads(out) == {
        "session_id": sid,
        "destroyed": True,
        "server": memcached.address,
        "database": None,
    }


def test_destroy_of_an_unknown_id_exits_1(memcached, capsys):
    sid = new_session_id()

    code, out, err = run(capsys, "destroy", sid, *on(memcached))

    assert code == 1 and out == ""
    assert err.startswith(f"error: no session {sid}")


def test_destroy_refuses_a_malformed_id(memcached, capsys):
    code, _, err = run(capsys, "destroy", "../../etc", *on(memcached))

    assert code == 2 and err.startswith("error: SESSION_ID: ")


def test_destroy_on_the_database_tier_deletes_the_rows_and_survives_a_flush(
    memcached, sqlite_url, capsys
):
    visitor = browser(memcached, database=sqlite_url)
    visitor.get("/", {"set": ["cart", "user"], "value": ["[1]", '"ann"']})
    sid = sid_of(visitor)
    cookie = visitor.cookies["sid"]

    code, _, err = run(capsys, "destroy", sid, *on(memcached, "--database", sqlite_url))

    assert code == 0, err
    engine = sa.create_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            for table, column in (
                (sessions_table, sessions_table.c.id),
                (variables_table, variables_table.c.session_id),
            ):
                assert conn.execute(sa.select(table).where(column == sid)).first() is None
    finally:
        engine.dispose()
    memcached.raw(b"flush_all\r\n")
    replay = browser(memcached, database=sqlite_url)
    replay.set_cookie("sid", cookie)
    assert replay.get("/", {"get": "cart"}).json == {"cart": None}


def test_destroy_finds_a_session_only_the_database_still_has(memcached, sqlite_url, capsys):
    visitor = browser(memcached, database=sqlite_url)
    visitor.get("/", {"set": "cart", "value": "[1]"})
    sid = sid_of(visitor)
    memcached.raw(b"flush_all\r\n")

    assert run(capsys, "destroy", sid, *on(memcached))[0] == 1
    code, _, err = run(capsys, "destroy", sid, *on(memcached, "--database", sqlite_url))

    assert code == 0, err
    assert run(capsys, "show", sid, *on(memcached, "--database", sqlite_url))[0] == 1


# --------------------------------------------------------------------------- stats


def test_stats_prints_memcacheds_figures_per_node_as_a_table(memcached, capsys):
    browser(memcached).get("/", {"set": "cart", "value": "1"})

    code, out, err = run(capsys, "stats", *on(memcached))

    assert code == 0, err
    head, row = out.splitlines()
    assert head.split() == [
        "server",
        "curr_items",
        "bytes",
        "get_hits",
        "get_misses",
        "evictions",
        "curr_connections",
    ]
    assert row.split()[0] == memcached.address
    assert int(row.split()[1]) == 2  # the record and the variable


def test_stats_json_gives_each_nodes_figures_and_the_databases_counts(
    memcached, sqlite_url, capsys
):
    visitor = browser(memcached, database=sqlite_url)
    visitor.get("/", {"set": ["a", "b"], "value": ["1", "2"]})
    browser(memcached, database=sqlite_url).get("/", {"set": "c", "value": "3"})
    database = Database(sqlite_url)
    with database.create(new_session_id(), StoredSession(1.0, 2.0, None, None)):
        pass  # long expired, not yet purged
    database.close()

    code, out, err = run(capsys, "stats", *on(memcached, "--database", sqlite_url, "--json"))

    assert code == 0, err
    shown = json.loads(out)
    (node,) = shown["servers"]
    assert node["server"] == memcached.address and node["error"] is None
    assert node["curr_items"] == 5 and node["evictions"] == 0
    assert set(node) >= {"bytes", "get_hits", "get_misses", "curr_connections"}
    assert shown["database"]["sessions"] == 2
    assert shown["database"]["variables"] == 3
    assert shown["database"]["expired"] == 1


def test_stats_text_ends_with_the_databases_counts(memcached, sqlite_url, capsys):
    browser(memcached, database=sqlite_url).get("/", {"set": "a", "value": "1"})

    code, out, err = run(capsys, "stats", *on(memcached, "--database", sqlite_url))

    assert code == 0, err
    assert out.splitlines()[-1].endswith(
        ": 1 session(s), 1 variable(s); 0 expired session(s) not yet purged"
    )


def test_stats_reports_an_unreachable_node_and_exits_1(memcached, capsys):
    from memcached import free_port

    dead = f"127.0.0.1:{free_port()}"

    code, out, err = run(capsys, "stats", "--servers", f"{memcached.address},{dead}", "--json")

    assert code == 1
    shown = json.loads(out)
    assert [n["server"] for n in shown["servers"]] == [memcached.address, dead]
    assert shown["servers"][0]["error"] is None
    assert "ConnectionRefusedError" in shown["servers"][1]["error"]
    assert err == f"error: {dead} did not answer\n"


def test_stats_costs_one_round_trip_per_node(memcached, proxy, capsys):
    proxy.reset()
    assert run(capsys, "stats", "--servers", proxy.address)[0] == 0
    assert proxy.round_trips == 1


# --------------------------------------------------------------------------- purge


def test_purge_deletes_expired_sessions_and_says_how_many(sqlite_url, capsys):
    database = Database(sqlite_url)
    with database.create(new_session_id(), StoredSession(1.0, 2.0, None, None)):
        pass
    database.close()

    code, out, err = run(capsys, "purge", "--database", sqlite_url, "--json")

    assert code == 0, err
    assert json.loads(out) == {"purged": 1}


# --------------------------------------------------------------------------- the command line


@pytest.mark.parametrize("command", [[], ["show"], ["destroy"], ["revoke"], ["stats"], ["purge"]])
def test_help_exits_0(command, capsys):
    assert main([*command, "--help"]) == 0
    assert "usage: python -m webapp2_sessions" in capsys.readouterr().out


def test_stats_help_says_sessions_cannot_be_counted_on_memcached_alone(capsys):
    main(["stats", "--help"])
    assert "Sessions cannot be counted on memcached alone" in " ".join(
        capsys.readouterr().out.split()
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["stats", "--servers", "nope"],
            "error: --servers: 'nope' is not of the form 'host:port'",
        ),
        (["stats", "--servers", "a:1,a:1"], "error: --servers: lists a server twice"),
        (["stats", "--servers", "127.0.0.1:99999"], "error: --servers: "),
        (["stats", "--key-prefix", "a b"], "error: --key-prefix: may hold printable ASCII"),
        (["stats", "--timeout", "0"], "error: --timeout: must be between 0 and 60"),
        (["stats", "--database", "not a url"], "error: --database: is not a SQLAlchemy URL"),
        (["stats", "--database", "nodriver+x://h/db"], "error: --database: "),
        (["stats", "--database", "sqlite:////nonexistent/x.db"], "error: --database: no SQLite"),
        (
            ["purge", "--database", "sqlite:///" + os.path.abspath(tempfile.gettempdir())],
            f"error: --database: {os.path.abspath(tempfile.gettempdir())} is a directory",
        ),
        (["purge", "--database", "not a url"], "error: --database: is not a SQLAlchemy URL"),
        (
            ["purge", "--database", "postgresql://u@127.0.0.1:abc/db"],
            "error: --database: is not a SQLAlchemy URL",
        ),
        (
            ["stats", "--servers", "mc..internal:11211"],
            "error: --servers: 'mc..internal:11211' does not name a valid host",
        ),
        (["show", new_session_id(), "--absolute-timeout", "0"], "error: --absolute-timeout: "),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(argv, message, capsys):
    code = main(argv)

    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1


def test_an_unreachable_server_is_one_error_line_and_exit_1(capsys):
    from memcached import free_port

    code, out, err = run(capsys, "show", new_session_id(), "--servers", f"127.0.0.1:{free_port()}")

    assert code == 1 and out == ""
    assert err.startswith("error: 127.0.0.1:") and err.count("\n") == 1


def test_the_module_runs_as_a_command(memcached):
    visitor = browser(memcached)
    visitor.get("/", {"set": "cart", "value": "[1, 2]"})
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}

    command = [sys.executable, "-m", "webapp2_sessions", "show", sid_of(visitor), "--json"]
    done = subprocess.run(
        [*command, *TIMEOUT, "--servers", memcached.address],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["variables"] == {"cart": [1, 2]}
