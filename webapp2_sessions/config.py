"""Settings: read once from ``app.config['webapp2_sessions']`` and validated.

Every key is checked for name and type up front, so a typo fails the first
request loudly instead of silently falling back to a default.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigurationError
from .serializers import JSONSerializer, PickleSerializer, Serializer
from .stores import Store

#: The key of our section in webapp2's ``app.config``.
CONFIG_KEY = "webapp2_sessions"


_COOKIE_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 6265 token
_KEY_PREFIX_RE = re.compile(r"[\x21-\x7e]*")
_ATTRIBUTE_RE = re.compile(r"[\x21-\x3a\x3c-\x7e]+")  # printable, no ';' or space
#: Longest TTL or timeout accepted: memcached's absolute expiry times stop at 2038.
MAX_SECONDS = 5 * 365 * 24 * 3600
#: Longest ``rotate_grace``: an old id leads to the session this long at most.
MAX_ROTATE_GRACE = 300
_SAMESITE = ("Strict", "Lax", "None")


@dataclass(frozen=True)
class CookieArgs:
    """Attributes of the session cookie.

    ``secure='auto'`` marks the cookie Secure when the request came over HTTPS
    (as WebOb sees the scheme; put a proxy-fixing middleware in front if TLS
    ends at a proxy). ``max_age=None`` makes a browser-session cookie.
    """

    path: str = "/"
    domain: str | None = None
    secure: bool | str = "auto"
    httponly: bool = True
    samesite: str | None = "Lax"
    max_age: int | None = None


@dataclass(frozen=True)
class SessionConfig:
    """The validated settings. See README.rst for each key's meaning."""

    #: Not ``session``: that is webapp2_extras.sessions' default, and an app
    #: using both must keep both cookies.
    cookie_name: str = "webapp2_sid"
    cookie_args: CookieArgs = field(default_factory=CookieArgs)
    memcache_servers: tuple[str, ...] = ()
    store: Store | None = None
    ttl: int = 86400
    key_prefix: str = ""
    connect_timeout: float = 0.25
    timeout: float = 0.5
    retries: int = 1
    dead_retry: float = 10.0
    max_connections: int = 64
    strict: bool = False
    serializer: Serializer = field(default_factory=JSONSerializer)
    item_size_max: int = 1024 * 1024
    secret_key: tuple[str, ...] = ()
    idle_timeout: int | None = None
    absolute_timeout: int | None = None
    bind_user_agent: bool = False
    bind_ip: bool = False
    memory_max_items: int = 100_000
    learn_prefetch: bool = True
    #: The durable tier: a SQLAlchemy URL or Engine (``webapp2-sessions[sql]``).
    database: Any = None
    #: Percentage of writes that also purge a few expired sessions.
    sweep_percent: float = 1.0
    #: Most sessions one sweep purges.
    sweep_limit: int = 100
    #: Seconds after which a session's id is replaced on its next request
    #: (None: never). See ``rotation.py``.
    rotate_after: int | None = None
    #: Seconds the id it replaced keeps leading to the session.
    rotate_grace: int = 5
    #: Lifetime of the session record; a request that uses it renews it.
    #: Derived, not a setting: kept as a field because requests read it on
    #: every load and write, where a property would cost a call each time.
    record_ttl: int = field(init=False, repr=False, compare=False)
    #: The most data one item can hold: ``item_size_max`` less room for the
    #: key and the command's own bytes. Derived, as ``record_ttl`` is.
    item_room: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ttl = self.idle_timeout if self.idle_timeout is not None else self.ttl
        object.__setattr__(self, "record_ttl", ttl)
        object.__setattr__(self, "item_room", self.item_size_max - 300)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> SessionConfig:
        """Build a config from a user mapping, raising ConfigurationError.

        Unknown keys are rejected rather than ignored: a misspelt
        ``secert_key`` must not quietly leave sessions unsigned.
        """
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise ConfigurationError(CONFIG_KEY, "must be a dict of settings")
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        for key in values:
            if key == "client":
                raise ConfigurationError(
                    "client",
                    "no longer supported (since 0.2); give 'memcache_servers' instead",
                )
            if key not in known:
                raise ConfigurationError(
                    str(key), f"unknown setting; known settings are {sorted(known)}"
                )
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            kwargs[key] = _VALIDATORS[key](key, value)
        config = cls(**kwargs)
        config._check_consistency()
        return config

    def _check_consistency(self) -> None:
        name = self.cookie_name
        args = self.cookie_args
        if name.startswith(("__Host-", "__Secure-")) and args.secure is False:
            raise ConfigurationError(
                "cookie_args", f"a {name.split('-')[0]}- cookie must not set secure=False"
            )
        if name.startswith("__Host-") and (args.path != "/" or args.domain):
            raise ConfigurationError(
                "cookie_args", "a __Host- cookie needs path='/' and no domain"
            )
        if args.samesite == "None" and args.secure is not True:
            # Browsers drop a SameSite=None cookie without Secure, so 'auto'
            # would lose every session served over plain HTTP.
            raise ConfigurationError("cookie_args", "samesite='None' needs secure=True")
        if self.store is not None and self.memcache_servers:
            raise ConfigurationError(
                "store", "give either 'store' or 'memcache_servers', not both"
            )
        if self.idle_timeout is not None and self.idle_timeout > self.ttl:
            # The record would outlive its variables: a visitor active within
            # idle_timeout could find them expired under a live session.
            raise ConfigurationError(
                "idle_timeout",
                f"must not exceed ttl ({self.ttl}s), or variables would expire before "
                "their session; raise ttl too",
            )
        if self.rotate_after is not None and self.rotate_after <= self.rotate_grace:
            raise ConfigurationError(
                "rotate_after",
                f"must be longer than rotate_grace ({self.rotate_grace}s): an id would be "
                "replaced while the one before it still leads to the session",
            )
        # The hashed form of a variable name is 65 bytes; with the 32-byte id and
        # the separator it must still fit memcached's 250-byte key limit.
        if len(self.key_prefix) > 120:
            raise ConfigurationError("key_prefix", "must be at most 120 characters")


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(key, f"must be a str, not {type(value).__name__}")
    return value


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(key, f"must be True or False, not {value!r}")
    return value


def _int(key: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(key, f"must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ConfigurationError(key, f"must be at least {minimum}, got {value}")
    return value


def _seconds(key: str, value: Any) -> int:
    seconds = _int(key, value, minimum=1)
    if seconds > MAX_SECONDS:
        raise ConfigurationError(key, f"must be at most {MAX_SECONDS} seconds (5 years)")
    return seconds


def _optional_seconds(key: str, value: Any) -> int | None:
    return None if value is None else _seconds(key, value)


def _timeout(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(key, f"must be a number of seconds, not {value!r}")
    if not 0 < value <= 60:
        raise ConfigurationError(key, f"must be between 0 and 60 seconds, got {value}")
    return float(value)


def _cookie_name(key: str, value: Any) -> str:
    name = _str(key, value)
    if not _COOKIE_NAME_RE.fullmatch(name):
        raise ConfigurationError(key, f"{name!r} is not a valid cookie name")
    return name


def _key_prefix(key: str, value: Any) -> str:
    prefix = _str(key, value)
    if not _KEY_PREFIX_RE.fullmatch(prefix):
        raise ConfigurationError(
            key, "may hold printable ASCII only (no spaces or control characters)"
        )
    return prefix


def _servers(key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigurationError(key, "must be a list of 'host:port' strings")
    servers: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise ConfigurationError(key, f"entry {item!r} is not a 'host:port' string")
        parse_server(key, item)
        servers.append(item)
    if len(set(servers)) != len(servers):
        raise ConfigurationError(key, "lists a server twice")
    return tuple(servers)


def parse_server(key: str, spec: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) into its parts."""
    host, sep, port = spec.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ConfigurationError(key, f"{spec!r} is not of the form 'host:port'")
    try:
        # What the resolver would refuse on every request (an empty label, one
        # over 63 characters) is refused here, once.
        host.encode("idna")
    except UnicodeError:
        raise ConfigurationError(key, f"{spec!r} does not name a valid host") from None
    return host, int(port)


def _store(key: str, value: Any) -> Store | None:
    if value is None:
        return None
    if not isinstance(value, Store):
        raise ConfigurationError(key, "must be a webapp2_sessions.stores.Store instance")
    return value


def _ttl(key: str, value: Any) -> int:
    # memcached would read a longer expiry as an absolute timestamp; the store
    # converts such values, so any positive TTL is accepted here.
    return _seconds(key, value)


def _serializer(key: str, value: Any) -> Serializer:
    if value == "json":
        return JSONSerializer()
    if value == "pickle":
        return PickleSerializer()
    if isinstance(value, Serializer):
        return value
    raise ConfigurationError(key, "must be 'json', 'pickle' or a Serializer instance")


def _secret_key(key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    keys = [value] if isinstance(value, (str, bytes)) else value
    if not isinstance(keys, Sequence) or not keys:
        raise ConfigurationError(key, "must be a str or a non-empty list of str")
    for item in keys:
        if not isinstance(item, str):
            raise ConfigurationError(key, "every secret key must be a str")
        if len(item) < 16:
            raise ConfigurationError(key, "a secret key must be at least 16 characters")
    return tuple(keys)


def _cookie_args(key: str, value: Any) -> CookieArgs:
    if not isinstance(value, Mapping):
        raise ConfigurationError(key, "must be a dict")
    allowed = {f.name for f in dataclasses.fields(CookieArgs)}
    out: dict[str, Any] = {}
    for name, item in value.items():
        where = f"{key}.{name}"
        if name not in allowed:
            raise ConfigurationError(where, f"unknown; allowed are {sorted(allowed)}")
        if name == "path":
            item = _str(where, item)
            if not item.startswith("/") or not _ATTRIBUTE_RE.fullmatch(item):
                raise ConfigurationError(
                    where, "must start with '/' and hold no ';', space or control character"
                )
        elif name == "domain" and item is not None:
            item = _str(where, item)
            if not _ATTRIBUTE_RE.fullmatch(item):
                raise ConfigurationError(where, "is not a valid domain")
        elif (name == "secure" and item != "auto") or name == "httponly":
            item = _bool(where, item)
        elif name == "samesite" and item is not None:
            item = _str(where, item).capitalize()
            if item not in _SAMESITE:
                raise ConfigurationError(where, f"must be one of {_SAMESITE} or None")
        elif name == "max_age" and item is not None:
            item = _seconds(where, item)
        out[name] = item
    return CookieArgs(**out)


def _database(key: str, value: Any) -> Any:
    if value is None:
        return None
    try:
        import sqlalchemy
    except ImportError:
        raise ConfigurationError(
            key, "needs SQLAlchemy: pip install 'webapp2-sessions[sql]'"
        ) from None
    if isinstance(value, sqlalchemy.engine.Engine):
        return value
    if not isinstance(value, str):
        raise ConfigurationError(key, "must be a SQLAlchemy URL (str) or Engine")
    try:
        url = sqlalchemy.engine.make_url(value)
    except (sqlalchemy.exc.ArgumentError, ValueError):  # ValueError: a port not a number
        raise ConfigurationError(
            key, "is not a SQLAlchemy URL (for example 'sqlite:///var/sessions.db')"
        ) from None
    try:
        url.get_dialect().import_dbapi()
    except (sqlalchemy.exc.NoSuchModuleError, ImportError) as exc:
        raise ConfigurationError(
            key, f"names a database driver that is not installed ({type(exc).__name__})"
        ) from None
    return value


def _rotate_grace(key: str, value: Any) -> int:
    grace = _int(key, value, minimum=1)
    if grace > MAX_ROTATE_GRACE:
        raise ConfigurationError(key, f"must be at most {MAX_ROTATE_GRACE} seconds, got {grace}")
    return grace


def _percent(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
        raise ConfigurationError(key, f"must be a number from 0 to 100, not {value!r}")
    return float(value)


_VALIDATORS: dict[str, Any] = {
    "cookie_name": _cookie_name,
    "cookie_args": _cookie_args,
    "memcache_servers": _servers,
    "store": _store,
    "ttl": _ttl,
    "key_prefix": _key_prefix,
    "connect_timeout": _timeout,
    "timeout": _timeout,
    "retries": lambda k, v: _int(k, v, 0),
    "dead_retry": _timeout,
    "max_connections": lambda k, v: _int(k, v, 1),
    "strict": _bool,
    "serializer": _serializer,
    "item_size_max": lambda k, v: _int(k, v, 1024),
    "secret_key": _secret_key,
    "idle_timeout": _optional_seconds,
    "absolute_timeout": _optional_seconds,
    "bind_user_agent": _bool,
    "bind_ip": _bool,
    "memory_max_items": lambda k, v: _int(k, v, 1),
    "learn_prefetch": _bool,
    "database": _database,
    "sweep_percent": _percent,
    "sweep_limit": lambda k, v: _int(k, v, 1),
    "rotate_after": _optional_seconds,
    "rotate_grace": _rotate_grace,
}
