"""An id move (``regenerate_id``, or a rotation) copies what the session holds
once it is claimed, not what the moving request read earlier.

A write that another request finished before the claim was told it was saved:
the copy under the new id must keep it. Each test runs with memcached alone
and with the database behind it.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import PATIENT
from test_durable import parts, rows, stored_with_a

from webapp2_sessions import Session, SessionConfig, rotation
from webapp2_sessions.runtime import build_store

HOUR = 3600


@pytest.fixture(params=["memcached alone", "with a database"])
def tiers(request: pytest.FixtureRequest, memcached: Any) -> Any:
    """(config, store, durable tier or None) for sessions built without an app."""

    def make(**settings: Any) -> tuple[SessionConfig, Any, Any]:
        if request.param == "memcached alone":
            config = SessionConfig.from_mapping(
                {"memcache_servers": [memcached.address], **PATIENT, **settings}
            )
            return config, build_store(config), None
        engine = request.getfixturevalue("sqlite_engine")
        return parts(memcached, engine, **PATIENT, **settings)

    return make


@pytest.fixture
def sqlite_engine(tmp_path: Any) -> Any:
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'sessions.db'}")
    yield engine
    engine.dispose()


def test_a_regeneration_keeps_a_write_saved_after_the_regenerating_request_read(tiers):
    config, store, durable = tiers()
    try:
        old = stored_with_a(config, store, durable)
        mover = Session(config, store, old, durable=durable)
        assert mover.get("a") == 1
        writer = Session(config, store, old, durable=durable)  # another tab
        writer["a"] = 2
        writer.save()
        assert writer.available and writer.cookie_action is None  # told it was saved
        mover.regenerate_id()
        new = mover.session_id
        assert new != old
        assert mover.get("a") == 2
        assert Session(config, store, new, durable=durable).get("a") == 2
        if durable is not None:
            assert rows(durable.database.engine, new) == {"a": b"2"}
    finally:
        store.close()


def test_a_rotation_keeps_a_write_saved_between_its_load_and_its_claim(tiers, monkeypatch):
    config, store, durable = tiers(rotate_after=HOUR)
    try:
        old = stored_with_a(config, store, durable)
        real_claim = rotation._claim
        writers: list[Session] = []

        def claim(*args: Any) -> Any:
            if not writers:  # a whole request of another tab, between load and claim
                writer = Session(config, store, old, durable=durable)
                writer["a"] = 2
                writer.save()
                writers.append(writer)
            return real_claim(*args)

        monkeypatch.setattr(rotation, "_claim", claim)
        mover = Session(config, store, old, durable=durable, clock=lambda: time.time() + HOUR)
        assert mover.get("a") == 2  # loaded as 1, rotated, then read again
        new = mover.session_id
        assert new != old
        assert writers[0].available and writers[0].cookie_action is None
        assert Session(config, store, new, durable=durable).get("a") == 2
        if durable is not None:
            assert rows(durable.database.engine, new) == {"a": b"2"}
    finally:
        store.close()
