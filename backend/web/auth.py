"""HTTP Basic auth, compared in constant time against the UTF-8 and the latin-1 bytes of the
configured user and password (curl and browsers send UTF-8; LS's `requests` client sends latin-1),
and who may call which route (`Roles`).

Label Studio needs only `LS_ROUTES` (`/openapi.json` among them: it is readable by both roles). With ADMIN_USER and
ADMIN_PASS set, every other route (the admin API, `/queue`, the status page, rq-dashboard, and
`/metrics` unless METRICS_PUBLIC) takes the admin's credentials, and LS's are refused there with 403;
LS's routes take LS's credentials (BASIC_AUTH_USER/PASS, when set) or the admin's. Without ADMIN_*,
the one BASIC_AUTH credential guards every route, as before."""

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


LS_ROUTES = frozenset({"/", "/health", "/setup", "/predict", "/webhook", "/versions", "/train", "/openapi.json"})


class Roles:
    """Which credentials each route takes: `decide(path, header)` is None (go on), 401 or 403."""

    def __init__(self, label_studio: BasicAuth | None, admin: BasicAuth | None, metrics_public: bool = False):
        self.label_studio, self.admin, self.metrics_public = label_studio, admin, metrics_public

    def decide(self, path: str, header: str | None) -> int | None:
        if path == "/metrics" and self.metrics_public:
            return None
        if self.admin is None:  # one credential for every route (or none)
            return None if self.label_studio is None or self.label_studio.check(header) else 401
        is_admin = self.admin.check(header)
        if path in LS_ROUTES:
            return None if self.label_studio is None or is_admin or self.label_studio.check(header) else 401
        if is_admin:
            return None
        return 403 if self.label_studio is not None and self.label_studio.check(header) else 401
