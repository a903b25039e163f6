"""The session cookie: its signed value, reading it, and the response headers.

Pure functions over strings and WebOb's raw header list; nothing here knows
webapp2, so the middleware and the handler mixin share it.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import time
from collections.abc import Iterator, Mapping, Sequence
from email.utils import formatdate
from typing import Any

from .config import CookieArgs
from .keys import is_session_id

# Longest cookie value worth looking at: an id, a dot and a SHA-256 signature
# in unpadded URL-safe base64.
_MAX_COOKIE_LENGTH = 32 + 1 + 43
_SIGNER_SALT = b"webapp2_sessions.cookie"
#: Verified cookie values a codec remembers (about 200 bytes each).
VERIFIED_CACHE_SIZE = 8192


class CookieCodec:
    """Turns an id into the cookie value and back.

    With secret keys, the value is ``<id>.<signature>``: HMAC-SHA256 of the id
    under a key derived from the secret (HMAC of a fixed salt, so the secret
    itself never signs user-visible data), in unpadded URL-safe base64. The
    first key signs and every key verifies, so keys can be rotated. Without
    keys the value is the bare id. ``decode`` never raises: anything
    malformed, forged or signed with a retired key comes back as ``None``.

    The format is the one itsdangerous' ``Signer`` writes with
    ``key_derivation="hmac"`` and SHA-256; it is built on ``hashlib`` directly
    (``_Signer``) because that costs a fraction as much per new visitor and
    one dependency less.
    """

    def __init__(self, secret_keys: Sequence[str] = ()) -> None:
        self._keys = tuple(
            _Signer(hmac.digest(key.encode("utf-8"), _SIGNER_SALT, "sha256"))
            for key in secret_keys
        )
        # A returning visitor presents the same value on every request: each
        # value that verified is remembered (bounded; emptied when full), so
        # it is checked once per process. Values that failed are not kept.
        self._verified: dict[str, str] = {}

    @property
    def signed(self) -> bool:
        return bool(self._keys)

    def encode(self, session_id: str) -> str:
        if not self._keys:
            return session_id
        return session_id + "." + self._keys[0].sign(session_id)

    def decode(self, raw: str | None) -> str | None:
        """The id in cookie value ``raw``, or None if it is not a valid one."""
        if not raw:
            return None
        known = self._verified.get(raw)
        if known is not None:
            return known
        session_id = self._check(raw)
        if session_id is not None:
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified.clear()
            self._verified[raw] = session_id
        return session_id

    def _check(self, raw: str) -> str | None:
        if len(raw) > _MAX_COOKIE_LENGTH or not raw.isascii():
            return None
        if self._keys:
            raw, dot, signature = raw.partition(".")
            if not dot:
                return None
            # Every key is tried, so the time taken says nothing about which
            # (if any) matched; each comparison is constant-time.
            valid = False
            for key in self._keys:
                valid |= hmac.compare_digest(key.sign(raw), signature)
            if not valid:
                return None
        return raw if is_session_id(raw) else None


class _Signer:
    """HMAC-SHA256 under one key, its two padded-key hash states computed once.

    The same bytes as ``hmac.digest(key, message, "sha256")`` (RFC 2104), for
    a fraction of its cost: ``hmac`` looks the digest up in OpenSSL and
    hashes the padded key anew on every call (under the profiler, in a
    whole request, 29 us of a new visitor's against 15 for this).
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = key.ljust(_SHA256_BLOCK, b"\0")  # a derived key: 32 bytes, never longer
        self._inner = hashlib.sha256(block.translate(_IPAD))
        self._outer = hashlib.sha256(block.translate(_OPAD))

    def sign(self, session_id: str) -> str:
        """The signature of ``session_id``, in unpadded URL-safe base64."""
        inner = self._inner.copy()
        inner.update(session_id.encode("ascii"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return base64.urlsafe_b64encode(outer.digest()).rstrip(b"=").decode("ascii")


_SHA256_BLOCK = 64
_IPAD = bytes((x ^ 0x36) for x in range(256))
_OPAD = bytes((x ^ 0x5C) for x in range(256))


def set_cookie_header(
    name: str, value: str, args: CookieArgs, secure: bool, max_age: int | None
) -> tuple[str, str]:
    """Our Set-Cookie header.

    Written by hand: the name, path and domain were validated with the
    settings and the value is an id (and signature) in a cookie-safe alphabet,
    so nothing needs quoting, and WebOb's general cookie writer costs as much
    as a memcached round trip.
    """
    parts = [f"{name}={value}", f"Path={args.path}"]
    if args.domain:
        parts.append(f"Domain={args.domain}")
    if max_age is not None:
        expires = formatdate(time.time() + max_age if max_age else 0, usegmt=True)
        parts += [f"Max-Age={max_age}", f"expires={expires}"]
    if secure:
        parts.append("secure")
    if args.httponly:
        parts.append("HttpOnly")
    if args.samesite:
        parts.append(f"SameSite={args.samesite}")
    return ("Set-Cookie", "; ".join(parts))


def cookie_header(
    args: CookieArgs, name: str, value: str | None, https: bool, max_age: int | None
) -> tuple[str, str]:
    """Set-Cookie for cookie value ``value``, or one that clears it (None).

    ``secure='auto'`` follows ``https``; ``__Host-`` and ``__Secure-`` names
    are always Secure (WebOb's delete_cookie would drop it, which they need).
    """
    secure = https if args.secure == "auto" else bool(args.secure)
    if name.startswith(("__Host-", "__Secure-")):
        secure = True
    if value is None:
        return set_cookie_header(name, "", args, secure, 0)
    return set_cookie_header(name, value, args, secure, max_age)


def read_cookie(environ: Mapping[str, Any], name: str) -> str | None:
    """The raw value of cookie ``name`` (the last, as WebOb reads it); never raises.

    Only a cookie-pair of its own counts: pairs are separated by ``;`` alone,
    and a quoted value runs to its closing quote, so no text inside another
    cookie's value (``x=1,sid=...`` or ``x="a; sid=..."``, which a sibling
    subdomain or a page storing user text could set) is ever taken for ours.

    Read straight from the header rather than through ``request.cookies``:
    WebOb decodes every cookie of the header to find one (the cost of a few
    thousand instructions on every returning visitor's request) and raises on
    one it cannot decode (``x=\\377``), which would turn a stranger's junk
    cookie into a 500. The codec validates what this returns.
    """
    header: str | None = environ.get("HTTP_COOKIE")
    if not header or name not in header:
        return None
    found: str | None = None
    if '"' in header:
        for key, value in _quoted_pairs(header):
            if key == name:
                found = value
    else:  # the usual header: a loop, not a generator, on every returning visit
        for part in header.split(";"):
            key, sep, value = part.partition("=")
            if sep and key.strip() == name:
                found = value
    if found is None:
        return None
    found = found.strip()
    if len(found) > 1 and found[0] == found[-1] == '"':
        found = found[1:-1]
    return found


def _quoted_pairs(header: str) -> Iterator[tuple[str, str]]:
    """The cookie-pairs of a header with quotes: a ``;`` inside one is text."""
    pos, size = 0, len(header)
    while pos < size:
        end = header.find(";", pos)
        if end < 0:
            end = size
        equals = header.find("=", pos, end)
        if equals < 0:
            pos = end + 1
            continue
        start = equals + 1
        while start < end and header[start] in " \t":
            start += 1
        if start < end and header[start] == '"':
            close = header.find('"', start + 1)
            end = size if close < 0 else header.find(";", close)
            if end < 0:
                end = size
        yield header[pos:equals].strip(), header[equals + 1 : end]
        pos = end + 1


def mark_private(headerlist: list[tuple[str, str]]) -> None:
    """Add ``Vary: Cookie`` and keep shared caches from storing the response.

    One pass over WebOb's raw header list: its case-insensitive header view
    rescans the list on every get, set and delete.
    """
    vary_at = cache_at = -1
    more_caches = False
    for index, (name, _) in enumerate(headerlist):
        lowered = name.lower()
        if lowered == "vary":
            vary_at = index
        elif lowered == "cache-control":
            more_caches = cache_at >= 0
            cache_at = index
    if vary_at < 0:
        headerlist.append(("Vary", "Cookie"))
    else:
        varies = {
            v.strip().lower()
            for name, value in headerlist
            if name.lower() == "vary"
            for v in value.split(",")
        }
        if "cookie" not in varies and "*" not in varies:
            headerlist[vary_at] = ("Vary", headerlist[vary_at][1] + ", Cookie")
    if cache_at < 0:
        headerlist.append(("Cache-Control", "private"))
    elif more_caches:
        # Several Cache-Control headers are one list (RFC 9110): merged, so
        # that a "public" in any of them goes.
        values = [v for n, v in headerlist if n.lower() == "cache-control"]
        headerlist[:] = [(n, v) for n, v in headerlist if n.lower() != "cache-control"]
        headerlist.append(("Cache-Control", _private(", ".join(values))))
    else:
        headerlist[cache_at] = ("Cache-Control", _private(headerlist[cache_at][1]))


def put_cookie(headerlist: list[tuple[str, str]], cookie: tuple[str, str]) -> None:
    """Add our Set-Cookie, replacing one for the same name the handler wrote."""
    prefix = cookie[1][: cookie[1].index("=") + 1]
    for index in range(len(headerlist) - 1, -1, -1):
        name, value = headerlist[index]
        if name.lower() == "set-cookie" and value.lstrip().startswith(prefix):
            del headerlist[index]
    headerlist.append(cookie)


@functools.lru_cache(maxsize=256)
def _private(cache: str) -> str:
    """``cache`` (a Cache-Control value) made unfit for shared caches.

    Cached: an application sends the same few values (webapp2's own default
    is ``no-cache``) on every response.
    """
    directives = [d.strip() for d in cache.split(",") if d.strip()]
    lowered = [d.lower() for d in directives]
    if "no-store" in lowered or ("private" in lowered and "public" not in lowered):
        return cache
    kept = [d for d, low in zip(directives, lowered, strict=True) if low != "public"]
    return ", ".join([*kept, "private"])
