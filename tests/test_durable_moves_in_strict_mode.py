"""Moving a session to a new id while the database fails, in strict mode: an
automatic rotation never raises and leaves no mark behind (later writes are
kept), and an explicit regeneration that raises still ends the old id in
both tiers."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import PATIENT
from test_durable import parts, rows, stored_with_a

from webapp2_sessions import Session, SessionUnavailableError

HOUR = 3600


def db_down(durable: Any) -> None:
    """The database fails every statement (as after a failure within dead_retry)."""
    durable.database._down = True
    durable.database._down_until = time.monotonic() + 1000


def db_up(durable: Any) -> None:
    durable.database._down_until = 0.0


def test_a_rotation_due_while_the_database_is_down_raises_nothing_and_loses_no_later_write(
    memcached, engine
):
    config, store, durable = parts(memcached, engine, rotate_after=HOUR, strict=True, **PATIENT)
    try:
        # Issued an hour ago: the next request rotates it.
        sid = stored_with_a(config, store, durable, clock=lambda: time.time() - HOUR)
        db_down(durable)

        reader = Session(config, store, sid, durable=durable)
        raised = None
        try:
            reader.get("a")  # a read-only request: reads are served by memcached
        except SessionUnavailableError as exc:
            raised = exc
        db_up(durable)  # the database answers again a moment later

        writer = Session(config, store, sid, durable=durable)
        assert writer.get("a") == 1
        writer["b"] = 2
        writer.save()

        saved = writer.available and set(rows(engine, writer.session_id)) == {"a", "b"}
        assert (type(raised).__name__, saved) == ("NoneType", True)
    finally:
        store.close()


def test_a_regeneration_that_fails_on_the_database_still_ends_the_old_id_after_a_flush(
    memcached, engine
):
    config, store, durable = parts(memcached, engine, strict=True, **PATIENT)
    try:
        old = stored_with_a(config, store, durable)
        db_down(durable)

        login = Session(config, store, old, durable=durable)
        assert login.get("a") == 1
        with pytest.raises(SessionUnavailableError):  # strict: the outage is reported
            login.regenerate_id()
        db_up(durable)

        # memcached says the old id is over: the same cookie is logged out ...
        assert Session(config, store, old, durable=durable).get("a") is None
        # ... until memcached forgets it; the database then brings it back.
        memcached.raw(b"flush_all\r\n")
        revived = Session(config, store, old, durable=durable)
        assert revived.get("a") is None and revived.session_id != old
    finally:
        store.close()
