"""Ittybit webhook signatures: lowercase hex HMAC-SHA256 of the raw body. No I/O here."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from pipeline.errors import InvalidSignature

SIGNATURE_HEADER = "Ittybit-Signature"


def sign(body: bytes, secret: str) -> str:
    """The signature Ittybit sends for `body` signed with `secret`."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secrets: Iterable[str]) -> None:
    """Raise InvalidSignature unless `header` signs `body` under one of `secrets`.

    Every secret is compared in constant time (rotation: old and new both valid).
    """
    if not header:
        raise InvalidSignature(f"the {SIGNATURE_HEADER} header is missing")
    given = header.strip().lower().encode("ascii", "replace")
    matched = False
    for secret in secrets:
        # No early exit: the time taken does not say which secret matched.
        matched |= hmac.compare_digest(given, sign(body, secret).encode())
    if not matched:
        raise InvalidSignature(
            f"the {SIGNATURE_HEADER} header does not match the body (HMAC-SHA256 hex of the "
            "raw bytes, keyed with the webhook secret)"
        )
