"""The webhook signature: HMAC-SHA256 of the exact request body with the shared secret.

The header is ``X-Segmenter-Signature: sha256=<hex digest>``. A receiver recomputes the digest
over the raw bytes it received and compares in constant time (:func:`verify`).
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Segmenter-Signature"


def sign(secret: bytes, body: bytes) -> str:
    """The header value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    """True when ``header`` is the signature of ``body`` under ``secret``."""
    if not header:
        return False
    return hmac.compare_digest(sign(secret, body), header.strip())
