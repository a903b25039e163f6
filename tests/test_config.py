"""Settings are validated once, with errors that name the key."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from conftest import capture_errors, make_app

from webapp2_sessions import ConfigurationError, MemoryStore, SessionConfig
from webapp2_sessions.serializers import JSONSerializer, PickleSerializer


def test_defaults_are_documented_values():
    config = SessionConfig.from_mapping({})
    # Not webapp2_extras.sessions' default ("session"): both can run in one app.
    assert config.cookie_name == "webapp2_sid"
    assert config.ttl == 86400
    assert config.key_prefix == ""
    assert config.memcache_servers == ()
    assert config.cookie_args.path == "/"
    assert config.cookie_args.httponly is True
    assert config.cookie_args.samesite == "Lax"
    assert config.cookie_args.secure == "auto"
    assert config.cookie_args.max_age is None
    assert config.connect_timeout + config.timeout < 1.0
    assert isinstance(config.serializer, JSONSerializer)
    assert config.strict is False


def test_unknown_key_is_named_in_the_error():
    with pytest.raises(ConfigurationError) as info:
        SessionConfig.from_mapping({"secert_key": "x" * 32})
    assert info.value.key == "secert_key"
    assert "secert_key" in str(info.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ttl", "86400"),
        ("ttl", 0),
        ("ttl", True),
        ("cookie_name", 42),
        ("cookie_name", "bad name;"),
        ("memcache_servers", "127.0.0.1:11211"),
        ("memcache_servers", ["localhost"]),
        ("memcache_servers", ["host:99999"]),
        ("memcache_servers", ["mc..internal:11211"]),  # a name no resolver takes
        ("memcache_servers", ["a" * 64 + ".example:11211"]),
        ("memcache_servers", ["host:\u0663"]),  # a digit, but not an ASCII one
        ("key_prefix", "has space"),
        ("timeout", 0),
        ("connect_timeout", "1"),
        ("strict", "yes"),
        ("serializer", "yaml"),
        ("secret_key", "short"),
        ("secret_key", ["x" * 32, 5]),
        ("idle_timeout", -1),
        ("client", object()),  # removed in 0.2
        ("max_connections", 0),
        ("store", {}),
        ("item_size_max", 10),
        ("rotate_after", 0),
        ("rotate_after", "3600"),
        ("rotate_after", True),
        ("rotate_grace", 0),
        ("rotate_grace", 301),
        ("rotate_grace", 2.5),
    ],
)
def test_wrong_type_or_value_raises_configuration_error_naming_the_key(key, value):
    with pytest.raises(ConfigurationError) as info:
        SessionConfig.from_mapping({key: value})
    assert info.value.key == key
    assert key in str(info.value)


def test_rotation_is_off_by_default_and_must_outlast_its_grace():
    config = SessionConfig.from_mapping({})
    assert config.rotate_after is None and config.rotate_grace == 5
    with pytest.raises(ConfigurationError) as info:
        SessionConfig.from_mapping({"rotate_after": 5})
    assert info.value.key == "rotate_after"
    config = SessionConfig.from_mapping({"rotate_after": 900, "rotate_grace": 30})
    assert (config.rotate_after, config.rotate_grace) == (900, 30)


def test_cookie_args_errors_name_the_nested_key():
    with pytest.raises(ConfigurationError) as info:
        SessionConfig.from_mapping({"cookie_args": {"samesite": "sometimes"}})
    assert info.value.key == "cookie_args.samesite"
    with pytest.raises(ConfigurationError) as info:
        SessionConfig.from_mapping({"cookie_args": {"expires": 5}})
    assert info.value.key == "cookie_args.expires"


def test_host_prefixed_cookie_requires_root_path_and_no_domain():
    with pytest.raises(ConfigurationError):
        SessionConfig.from_mapping(
            {"cookie_name": "__Host-sid", "cookie_args": {"domain": "example.com"}}
        )
    with pytest.raises(ConfigurationError):
        SessionConfig.from_mapping({"cookie_name": "__Host-sid", "cookie_args": {"secure": False}})
    SessionConfig.from_mapping({"cookie_name": "__Host-sid"})


def test_serializer_names_map_to_serializers():
    assert isinstance(
        SessionConfig.from_mapping({"serializer": "pickle"}).serializer, PickleSerializer
    )


def test_secret_key_accepts_a_list_for_rotation():
    config = SessionConfig.from_mapping({"secret_key": ["n" * 32, "o" * 32]})
    assert config.secret_key == ("n" * 32, "o" * 32)


def test_store_and_servers_are_mutually_exclusive():
    with pytest.raises(ConfigurationError) as info:
        SessionConfig.from_mapping({"store": MemoryStore(), "memcache_servers": ["h:1"]})
    assert info.value.key == "store"


def test_bad_setting_fails_the_first_request_that_uses_the_session():
    app = make_app({"ttl": "a day"})
    seen = capture_errors(app.app, 500)
    app.get("/untouched")  # a handler that never uses the session is unaffected
    assert seen == []
    app.get("/", {"get": "a"}, status=500)
    assert isinstance(seen[0], ConfigurationError)
    assert seen[0].key == "ttl"


def test_handler_class_attributes_override_app_config():
    import webapp2
    from webtest import TestApp

    from webapp2_sessions import SessionHandlerMixin

    class Custom(SessionHandlerMixin, webapp2.RequestHandler):
        session_cookie_name = "custom"
        session_settings = MappingProxyType({"ttl": 60})

        def get(self):
            self.set_session_var("a", 1)
            self.response.write(str(self.session.config.ttl))

    app = TestApp(
        webapp2.WSGIApplication(
            [("/", Custom)], config={"webapp2_sessions": {"cookie_name": "base"}}
        )
    )
    response = app.get("/")
    assert response.text == "60"
    assert "custom" in app.cookies


def test_embedded_store_logs_a_single_process_warning(caplog):
    app = make_app({})
    with caplog.at_level("WARNING", logger="webapp2_sessions"):
        app.get("/", {"set": "a", "value": "1"})
        app.get("/", {"set": "a", "value": "2"})
    warnings = [r for r in caplog.records if "embedded store" in r.getMessage()]
    assert len(warnings) == 1
    assert "this process only" in warnings[0].getMessage()


def test_an_idle_timeout_longer_than_the_variables_ttl_is_refused():
    # The record would outlive its variables: a visitor back within the idle
    # window could find them expired under a live session.
    with pytest.raises(ConfigurationError) as caught:
        SessionConfig.from_mapping({"idle_timeout": 7200, "ttl": 3600})
    assert caught.value.key == "idle_timeout"
    config = SessionConfig.from_mapping({"idle_timeout": 3600, "ttl": 3600})
    assert config.record_ttl == config.ttl == 3600
