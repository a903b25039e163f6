"""The exceptions this package raises.

Programmer errors (a bad setting, a value that cannot be stored) raise at once;
operational faults (memcached gone) are logged and only raised when the
application opts into ``strict`` mode.
"""

from __future__ import annotations


class SessionError(Exception):
    """Base class of every exception raised by webapp2_sessions."""


class ConfigurationError(SessionError, ValueError):
    """A setting in ``app.config['webapp2_sessions']`` is unknown or invalid.

    ``key`` names the offending setting so the message can point at it.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"webapp2_sessions setting {key!r}: {message}")
        self.key = key


class SessionUnavailableError(SessionError):
    """The session store could not be reached or refused the request.

    Raised to the application only in ``strict`` mode; otherwise the fault is
    logged and the request goes on with an empty session. ``server`` is the
    ``host:port`` that failed (``None`` for the embedded store).
    """

    def __init__(self, message: str, server: str | None = None) -> None:
        super().__init__(message if server is None else f"{server}: {message}")
        self.server = server


class UpdateConflictError(SessionError):
    """``update_session_var`` lost the compare-and-set race too many times."""

    def __init__(self, name: str, attempts: int) -> None:
        super().__init__(
            f"session variable {name!r} changed under every one of {attempts} "
            "compare-and-set attempts; giving up"
        )
        self.name = name
        self.attempts = attempts
