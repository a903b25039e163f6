"""The session is a MutableMapping over the same per-variable keys."""

from __future__ import annotations

import pytest

from webapp2_sessions import Session, SessionConfig


def fresh(store) -> Session:
    return Session(SessionConfig.from_mapping({}), store, None)


def test_mapping_operations(store):
    s = fresh(store)
    s["a"] = 1
    s.setdefault("b", 2)
    s.setdefault("a", 99)
    assert s["a"] == 1 and s.get("b") == 2 and "a" in s and "zz" not in s
    assert s.pop("b") == 2
    assert s.pop("b", "gone") == "gone"
    with pytest.raises(KeyError):
        s["missing"]
    with pytest.raises(KeyError):
        del s["missing"]
    s.update({"c": 3, "d": 4})
    s.save()
    again = Session(s.config, store, s.session_id)
    assert sorted(again) == ["a", "c", "d"]
    assert len(again) == 3
    assert dict(again.items()) == {"a": 1, "c": 3, "d": 4}
    del again["c"]
    again.save()
    assert sorted(Session(s.config, store, s.session_id)) == ["a", "d"]


def test_write_then_read_returns_the_written_value(store):
    s = fresh(store)
    s["x"] = [1]
    assert s["x"] == [1]
    s.discard("x")
    assert "x" not in s


def test_new_session_is_new_until_saved(store):
    s = fresh(store)
    assert s.is_new
    s["a"] = 1
    s.save()
    assert not s.is_new
    assert not Session(s.config, store, s.session_id).is_new


def test_nothing_to_save_writes_nothing(store):
    s = fresh(store)
    s.get("a")
    s.save()
    assert s.is_new
