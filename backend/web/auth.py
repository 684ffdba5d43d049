"""HTTP Basic auth shared by every route, compared in constant time against the UTF-8 and the latin-1
bytes of the configured user and password (curl and browsers send UTF-8; LS's `requests` client sends
latin-1)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

MAX_HEADER = 4096


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _accepted(value: str) -> tuple[bytes, ...]:
    """Digests of the byte forms a client may send for `value`: UTF-8, and latin-1 when `value` has one
    (`requests.auth.HTTPBasicAuth`, which LS uses, encodes str credentials as latin-1)."""
    forms = [value.encode("utf-8")]
    try:
        forms.append(value.encode("latin-1"))
    except UnicodeEncodeError:
        pass  # no latin-1 form: requests cannot send it either, UTF-8 only
    return tuple(_digest(form) for form in dict.fromkeys(forms))


def _matches(value: bytes, accepted: tuple[bytes, ...]) -> bool:
    """Whether `value` is one of the `accepted` forms, compared with every one of them (no early exit)."""
    digest = _digest(value)
    found = False
    for form in accepted:
        found |= hmac.compare_digest(digest, form)
    return found


class BasicAuth:
    """Checks an `Authorization: Basic …` header against the configured user and password."""

    def __init__(self, user: str, password: str):
        self._user = _accepted(user)
        self._password = _accepted(password)

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
        user_ok = _matches(user, self._user)
        password_ok = _matches(password, self._password)
        return user_ok & password_ok


def basic_header(user: str, password: str) -> str:
    """The header value an admin puts on the LS webhook (and clients send): UTF-8, as curl builds it."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
