"""Signatures: fixed HMAC-SHA256 vectors (computed once with `openssl dgst -sha256 -hmac`)."""

from __future__ import annotations

import json

import pytest

from pipeline.errors import InvalidSignature
from pipeline.signing import sign, verify

from .support import SECRET, fixture_bytes

BODY = b'{"id":"task_1","status":"succeeded"}'
# printf '%s' "$BODY" | openssl dgst -sha256 -hmac <secret>
BODY_SIG = "c64869d3b2f9d3090e59b8baee1e64d724f77605ae1f12060c57ba47246619c9"
BODY_SIG_OLD = "0b50dc522c334dc15024cb75bfbf125d8363fa0d4218d2aa773f38d3ed701996"
BODY_SIG_NEW = "017714d2f0455b3b7accf2d82438ea1eb2f743a847011f2d3b26a70eef3c372a"
EMPTY_SIG = "3b58aa1d205ce7c035a14689e7b945543d4715f2533a721a1786c9bad5d03e18"
GUIDE_SIG = "396e70cc4a70941f17f3902c3666e7916d632c575e72faf7322ae8f74036ba98"


def test_sign_matches_the_openssl_vector() -> None:
    assert sign(BODY, SECRET) == BODY_SIG


def test_sign_of_a_recorded_payload_matches_its_vector() -> None:
    assert sign(fixture_bytes("shape_b_guide_succeeded.json"), SECRET) == GUIDE_SIG


def test_a_valid_signature_verifies() -> None:
    verify(BODY, BODY_SIG, [SECRET])
    verify(fixture_bytes("shape_b_guide_succeeded.json"), GUIDE_SIG, [SECRET])


def test_an_empty_body_is_signed_and_verified() -> None:
    assert sign(b"", SECRET) == EMPTY_SIG
    verify(b"", EMPTY_SIG, [SECRET])


def test_a_one_byte_change_in_the_body_fails() -> None:
    changed = BODY.replace(b"task_1", b"task_2")
    assert len(changed) == len(BODY)
    with pytest.raises(InvalidSignature):
        verify(changed, BODY_SIG, [SECRET])


@pytest.mark.parametrize(
    "reserialised",
    [
        json.dumps(json.loads(BODY)).encode(),  # other spacing
        b'{"status":"succeeded","id":"task_1"}',  # other key order
        BODY + b"\n",
    ],
    ids=["spacing", "key-order", "trailing-newline"],
)
def test_a_reserialised_body_fails(reserialised: bytes) -> None:
    if reserialised == BODY:
        pytest.fail("the variant must differ from the signed bytes")
    with pytest.raises(InvalidSignature):
        verify(reserialised, BODY_SIG, [SECRET])


def test_a_body_reserialised_with_unicode_escapes_fails() -> None:
    raw = '{"id":"task_1","status":"succeeded","metadata":{"title":"Café"}}'.encode()
    escaped = json.dumps(json.loads(raw), separators=(",", ":")).encode()
    assert b"\\u00e9" in escaped
    with pytest.raises(InvalidSignature):
        verify(escaped, sign(raw, SECRET), [SECRET])


@pytest.mark.parametrize("header", [None, ""], ids=["missing", "empty"])
def test_a_missing_or_empty_header_fails_saying_it_is_missing(header: str | None) -> None:
    with pytest.raises(InvalidSignature, match="missing"):
        verify(BODY, header, [SECRET])


@pytest.mark.parametrize(
    "header",
    [
        "z" * 64,  # right length, not hex
        BODY_SIG[:-1],  # truncated
        BODY_SIG[:32],
        BODY_SIG + "00",  # too long
        "sha256=" + BODY_SIG,  # a prefix Ittybit does not send
        "é" * 64,  # not ASCII
    ],
    ids=["not-hex", "truncated-by-one", "half", "too-long", "prefixed", "non-ascii"],
)
def test_a_malformed_header_fails(header: str) -> None:
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(BODY, header, [SECRET])


def test_upper_case_hex_is_accepted_because_verify_lower_cases() -> None:
    verify(BODY, BODY_SIG.upper(), [SECRET])


def test_surrounding_whitespace_in_the_header_is_ignored() -> None:
    verify(BODY, f"  {BODY_SIG}\t", [SECRET])


def test_rotation_accepts_old_and_new_secrets_and_refuses_a_third() -> None:
    secrets = ["whsec_old", "whsec_new"]
    verify(BODY, BODY_SIG_OLD, secrets)
    verify(BODY, BODY_SIG_NEW, secrets)
    with pytest.raises(InvalidSignature):
        verify(BODY, BODY_SIG, secrets)  # signed with a secret no longer configured


def test_no_configured_secret_accepts_nothing() -> None:
    with pytest.raises(InvalidSignature):
        verify(BODY, BODY_SIG, [])
