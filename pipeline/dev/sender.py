"""Sign and POST a webhook body the way Ittybit does; used by `pipeline send` and the emulator."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import requests

from pipeline.signing import SIGNATURE_HEADER, sign

USER_AGENT = "Ittybit-Webhooks (ittybit-pipeline emulator)"


def encode(payload: Any) -> bytes:
    """The bytes we send for a payload (non-ASCII left as UTF-8, as JSON allows)."""
    return json.dumps(payload, ensure_ascii=False).encode()


def post(
    url: str,
    body: bytes,
    secret: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> requests.Response:
    """POST `body` byte for byte with its `Ittybit-Signature`; `headers` may override any."""
    sent = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: sign(body, secret),
        **(headers or {}),
    }
    # Redirects are not followed: requests would turn the POST into a GET without the body.
    return requests.post(url, data=body, headers=sent, timeout=timeout, allow_redirects=False)
