"""Operator tokens: what an operator shows a router to be let in.

A router holds a secret (`MEPHISTO_ROUTER_SECRET`). A token is
`mro1.<payload>.<signature>`: the payload (URL-safe base64 of JSON) carries the expiry
(`exp`, seconds since the epoch) and a random `nonce`; the signature is HMAC-SHA256 of
the payload under the secret. A router refuses a token that is malformed, signed under
another secret, or expired (`TokenRefused` says which). Tokens are minted by whoever
holds the secret: `mephisto router token`, or an architect that started the router.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time

from mephisto.errors import TokenRefused

__all__ = ["PREFIX", "mint_token", "new_secret", "verify_token"]

PREFIX = "mro1"
MIN_SECRET_CHARS = 16
DEFAULT_TTL = 7 * 24 * 3600


def new_secret() -> str:
    """A fresh router secret (43 URL-safe characters)."""
    return secrets.token_urlsafe(32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, payload: str) -> str:
    return _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())


def mint_token(secret: str, ttl_seconds: float = DEFAULT_TTL, *, now: float | None = None
               ) -> str:
    """A token the router holding `secret` accepts for `ttl_seconds`."""
    if len(secret) < MIN_SECRET_CHARS:
        raise ValueError(f"a router secret needs at least {MIN_SECRET_CHARS} characters")
    issued = time.time() if now is None else now
    claims = {"exp": int(issued + ttl_seconds), "nonce": secrets.token_urlsafe(9)}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{PREFIX}.{payload}.{_sign(secret, payload)}"


def verify_token(secret: str, token: str, *, now: float | None = None) -> dict[str, object]:
    """The token's claims, or `TokenRefused` (malformed, foreign, expired)."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise TokenRefused(f"malformed (expected {PREFIX}.<payload>.<signature>)")
    _prefix, payload, signature = parts
    if not hmac.compare_digest(signature.encode(), _sign(secret, payload).encode()):
        raise TokenRefused("not signed by this router's secret")
    try:
        claims = json.loads(_unb64(payload))
    except (ValueError, binascii.Error):
        raise TokenRefused("malformed payload") from None
    expiry = claims.get("exp") if isinstance(claims, dict) else None
    if not isinstance(expiry, int):
        raise TokenRefused("malformed payload (no expiry)")
    if (time.time() if now is None else now) >= expiry:
        raise TokenRefused("expired; mint a new one with `mephisto router token`")
    return claims
