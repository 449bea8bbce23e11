"""Visitor tokens: short-lived, HMAC-signed, one customer each (see docs/api.md#visitors).

A token is a JSON Web Token (RFC 7519) signed with HS256 and ``SEGMENTER_VISITOR_SECRET``:

    base64url({"alg": "HS256", "typ": "JWT"}) . base64url(claims) . base64url(signature)

with the claims ``sub`` (the customer id), ``aud`` (always ``segmenter:visitor``, so that no
other token signed with the same key is taken for one), ``iat`` and ``exp`` (epoch seconds).
A site backend can therefore mint tokens itself with any JWT library instead of calling
``POST /v1/visitor/tokens``. Only HS256 is accepted (never ``none``); the signature is compared
in constant time. No I/O here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

import orjson

AUDIENCE = "segmenter:visitor"
HEADER = {"alg": "HS256", "typ": "JWT"}
MAX_TOKEN_CHARS = 4096
MAX_CUSTOMER_ID_CHARS = 512


class TokenError(ValueError):
    """A token that must be refused (the message says why; it becomes a 401)."""


@dataclass(frozen=True, slots=True)
class VisitorToken:
    """What a valid token grants: reading ``customer_id``'s segments until ``expires_at``."""

    customer_id: str
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TokenError("malformed token: not base64url") from exc


def _sign(secret: bytes, signing_input: str) -> bytes:
    return hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()


def issue(secret: bytes, customer_id: str, issued_at: int, ttl_s: int) -> str:
    """A token for ``customer_id``, valid from ``issued_at`` for ``ttl_s`` seconds."""
    if not customer_id or len(customer_id) > MAX_CUSTOMER_ID_CHARS:
        raise ValueError(f"a customer id is 1 to {MAX_CUSTOMER_ID_CHARS} characters")
    claims = {"sub": customer_id, "aud": AUDIENCE, "iat": issued_at, "exp": issued_at + ttl_s}
    signing_input = f"{_b64(orjson.dumps(HEADER))}.{_b64(orjson.dumps(claims))}"
    return f"{signing_input}.{_b64(_sign(secret, signing_input))}"


def verify(secret: bytes, token: str, now: float) -> VisitorToken:
    """The grant of ``token`` at time ``now``, or a :class:`TokenError` saying why not."""
    if not token:
        raise TokenError("missing token: pass ?token=<visitor token>")
    if len(token) > MAX_TOKEN_CHARS:
        raise TokenError("malformed token: too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed token: expected three dot-separated parts")
    try:
        header = orjson.loads(_unb64(parts[0]))
    except orjson.JSONDecodeError as exc:
        raise TokenError("malformed token: the header is not JSON") from exc
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise TokenError("unsupported token: only HS256 tokens are accepted")
    expected = _sign(secret, f"{parts[0]}.{parts[1]}")
    if not hmac.compare_digest(expected, _unb64(parts[2])):
        raise TokenError("invalid token: the signature does not match")
    try:
        claims = orjson.loads(_unb64(parts[1]))
    except orjson.JSONDecodeError as exc:
        raise TokenError("malformed token: the claims are not JSON") from exc
    if not isinstance(claims, dict) or claims.get("aud") != AUDIENCE:
        raise TokenError(f"invalid token: not a visitor token (aud must be {AUDIENCE!r})")
    subject, expires = claims.get("sub"), claims.get("exp")
    if not isinstance(subject, str) or not subject or not isinstance(expires, int):
        raise TokenError("invalid token: 'sub' (string) and 'exp' (integer) are required")
    if now >= expires:
        raise TokenError("token expired: ask the site for a new one")
    return VisitorToken(subject, expires)
