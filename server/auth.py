"""Optional API keys and a per-key concurrency limit.

Keys are compared in constant time and never logged; a request is identified in logs and
limits by a short hash of its key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from starlette.requests import Request

from server.config import AuthSettings, InspectorSettings
from server.errors import APIError


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _given_key(request: Request) -> bytes:
    """The key of ``Authorization: Bearer <key>``, or the password of HTTP Basic (how a browser
    opening the inspector page sends it, and then sends it again with the page's own requests)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return token.strip().encode()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(token.strip(), validate=True).partition(b":")[2]
        except (binascii.Error, ValueError):
            return b""
    return b""


class KeyGate:
    def __init__(self, settings: AuthSettings, inspector: InspectorSettings | None = None) -> None:
        self.settings = settings
        self.inspector = inspector or InspectorSettings()
        self._inspect_keys = [k.get_secret_value().encode() for k in self.inspector.api_keys]
        self._keys = [k.get_secret_value().encode() for k in settings.api_keys] + self._inspect_keys
        self._inspectors = {key_id(k.decode()) for k in self._inspect_keys}
        self._in_flight: dict[str, int] = {}

    def authenticate(self, request: Request, *, challenge: str = "Bearer") -> str:
        """The caller's key id ("anonymous" when auth is off), or a 401."""
        if not self._keys:
            return "anonymous"
        given = _given_key(request)
        # check every key so the time taken does not tell which one nearly matched
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(given, key)
        if not ok:
            raise APIError(
                401, "invalid or missing API key (Authorization: Bearer <key>)", code="invalid_api_key",
                headers={"WWW-Authenticate": challenge},
            )
        return key_id(given.decode())

    def require_inspector(self, who: str, *, param: str | None = None) -> None:
        """The inspector right: the inspector is on, and either no key is configured at all or the
        caller's key is one of ``inspector.api_keys``; else a 403."""
        if not self.inspector.enabled:
            raise APIError(403, "the inspector and its debug extension are off (inspector.enabled)",
                           type="permission_error", code="inspector_disabled", param=param)
        if self._keys and who not in self._inspectors:
            raise APIError(403, "this API key lacks the inspector right (inspector.api_keys)",
                           type="permission_error", code="permission_denied", param=param)

    def acquire(self, who: str) -> None:
        """Take one of the key's concurrent-request slots, or answer 429. Pair with :meth:`release`."""
        limit = self.settings.max_concurrency_per_key
        if limit and self._in_flight.get(who, 0) >= limit:
            raise APIError(
                429, f"too many concurrent requests for this key (limit {limit})", type="rate_limit_error",
                code="concurrency_limit", headers={"Retry-After": str(self.settings.retry_after_s)},
            )
        self._in_flight[who] = self._in_flight.get(who, 0) + 1

    def release(self, who: str) -> None:
        left = self._in_flight.get(who, 1) - 1
        if left > 0:
            self._in_flight[who] = left
        else:
            self._in_flight.pop(who, None)
