"""HTTP Basic auth shared by every route, compared in constant time over UTF-8 bytes."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

MAX_HEADER = 4096


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class BasicAuth:
    """Checks an `Authorization: Basic …` header against the configured user and password."""

    def __init__(self, user: str, password: str):
        self._user = _digest(user.encode("utf-8"))
        self._password = _digest(password.encode("utf-8"))

    def check(self, header: str | None) -> bool:
        if not header or len(header) > MAX_HEADER:
            return False
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip().encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        if not sep:
            return False
        user_ok = hmac.compare_digest(_digest(user), self._user)
        password_ok = hmac.compare_digest(_digest(password), self._password)
        return user_ok & password_ok


def basic_header(user: str, password: str) -> str:
    """The header value an admin puts on the LS webhook (and clients send)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")
