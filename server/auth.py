"""Optional API keys and a per-key concurrency limit.

Keys are compared in constant time and never logged; a request is identified in logs and
limits by a short hash of its key.
"""

from __future__ import annotations

import hashlib
import hmac
from starlette.requests import Request

from server.config import AuthSettings
from server.errors import APIError


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class KeyGate:
    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self._keys = [k.get_secret_value().encode() for k in settings.api_keys]
        self._in_flight: dict[str, int] = {}

    def authenticate(self, request: Request) -> str:
        """The caller's key id ("anonymous" when auth is off), or a 401."""
        if not self._keys:
            return "anonymous"
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        given = token.strip().encode() if scheme.lower() == "bearer" else b""
        # check every key so the time taken does not tell which one nearly matched
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(given, key)
        if not ok:
            raise APIError(
                401, "invalid or missing API key (Authorization: Bearer <key>)", code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return key_id(given.decode())

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
