from __future__ import annotations

import pytest

from service.core.signing import is_token_valid, kie_signature, verify_kie_signature
from service.errors import SignatureError

KEY = "test-webhook-hmac-key"
TID = "ee9c2715375b7837f8bb51d641ff5863"
TS = "1769670760"
SIG = "xG6/yOyrMyJtUdc1yjmHpKLHSHF3MpzOPa6uxSj3qb4="


@pytest.mark.parametrize(
    ("key", "task_id", "ts", "signature"),
    [
        (KEY, TID, TS, SIG),
        ("sim-secret", "2fac****9f72", "1767225600", "H8hmfx+ah82Pb4YRltu9uT32dIVQI6j2ShT7VMpPf6g="),
    ],
)
def test_signature_matches_the_documented_vectors(key: str, task_id: str, ts: str, signature: str) -> None:
    assert kie_signature(task_id, ts, key) == signature


def test_valid_signature_within_tolerance_is_accepted() -> None:
    verify_kie_signature(TID, TS, SIG, KEY, now=int(TS) + 299, tolerance_s=300)


@pytest.mark.parametrize(
    ("ts", "sig", "now", "reason"),
    [
        (None, SIG, int(TS), "X-Webhook-Timestamp"),
        (TS, None, int(TS), "X-Webhook-Signature"),
        (None, None, int(TS), "X-Webhook-Timestamp, X-Webhook-Signature"),
        ("17696707x0", SIG, int(TS), "digits only"),
        (TS, SIG, int(TS) + 301, "301s away"),
        (TS, SIG, int(TS) - 400, "400s away"),
        (TS, "xG6/yOyrMyJtUdc1yjmHpKLHSHF3MpzOPa6uxSj3qb5=", int(TS), "does not match"),
        (TS, "not base64 at all ✓", int(TS), "does not match"),
        ("1769670761", SIG, int(TS), "does not match"),
    ],
)
def test_bad_headers_raise_the_one_signature_error(
    ts: str | None, sig: str | None, now: int, reason: str
) -> None:
    with pytest.raises(SignatureError, match=reason):
        verify_kie_signature(TID, ts, sig, KEY, now=now, tolerance_s=300)


def test_signature_for_another_task_is_refused() -> None:
    with pytest.raises(SignatureError):
        verify_kie_signature("another", TS, SIG, KEY, now=int(TS), tolerance_s=300)


@pytest.mark.parametrize(("given", "valid"), [("s3cret", True), ("s3cre", False), ("", False), (None, False)])
def test_token_comparison(given: str | None, valid: bool) -> None:
    assert is_token_valid(given, "s3cret") is valid
