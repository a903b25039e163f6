"""Flash lists near ``item_size_max``: a list that cannot grow keeps what it
holds, and one carried to a new id keeps its unshown flashes when a new flash
would not fit beside them."""

from __future__ import annotations

from typing import Any

from webapp2_sessions import Session, SessionConfig

BIG = "x" * 400_000  # base64 -> ~533 KB a line


def with_a_big_flash_and_another(store: Any) -> tuple[SessionConfig, Session]:
    """A request of a session holding one big flash, adding a second: together
    they are over an item (1 MiB)."""
    config = SessionConfig.from_mapping({})
    first = Session(config, store, None)
    first.add_flash(BIG)
    first.save()
    s = Session(config, store, first.session_id)
    s.add_flash("second " + BIG)
    return config, s


def test_a_flash_that_would_overflow_the_list_keeps_the_stored_ones(store):
    config, s = with_a_big_flash_and_another(store)
    sid = s.session_id
    s.save()
    s = Session(config, store, sid)
    assert [v[:6] for v, _ in s.get_flashes()] == ["xxxxxx"]


def test_a_regeneration_keeps_unshown_flashes_when_a_new_one_would_overflow(store):
    config, s = with_a_big_flash_and_another(store)
    s.regenerate_id()
    s.save()
    s = Session(config, store, s.session_id)
    assert [v[:6] for v, _ in s.get_flashes()][:1] == ["xxxxxx"]
