"""CSRF tokens: one per session, kept as the session variable ``_csrf_token``.

Kept in the session, the token moves with ``regenerate_session_id`` and ends
with ``destroy_session``. A form sends it back in the field ``csrf_token``, a
script in the header ``X-CSRF-Token``.
"""

from __future__ import annotations

import hmac
import secrets

#: The session variable holding the token.
VARIABLE = "_csrf_token"
#: The form field, and the header, that carry it back.
FIELD = "csrf_token"
HEADER = "X-CSRF-Token"


def new_token() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def matches(expected: object, sent: object) -> bool:
    """True when ``sent`` is the session's token ``expected`` (constant time)."""
    return (
        isinstance(expected, str)
        and bool(expected)
        and isinstance(sent, str)
        and hmac.compare_digest(expected.encode("utf-8"), sent.encode("utf-8", "replace"))
    )
