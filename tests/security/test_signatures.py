"""Signatures under attack: forged, cross-scheme, replayed, stale, future and overflowing ones are
refused by every verifier we ship (``verify_webhook``, ``verify_webhook_headers``,
``verify_standard_webhook``, ``parse``), and the legitimate uses keep verifying."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import cueapi
import pytest
from cueapi import _cueapi
from cueapi.webhooks import (
    MemorySeen,
    WebhookVerificationError,
    parse,
    verify_standard_webhook,
    verify_webhook,
    verify_webhook_headers,
)

SECRET = "whsec_" + "5a" * 32
OTHER = "whsec_" + "a5" * 32
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def delivery_body(**extra: Any) -> bytes:
    doc = {
        "attempt": 1,
        "cue_id": "cue_1",
        "execution_id": "exec_1",
        "name": "sync",
        "payload": {"task": "sync"},
        "scheduled_for": "2026-06-01T12:00:00Z",
        **extra,
    }
    return json.dumps(doc, sort_keys=True).encode()


def reason(body: bytes | str, headers: dict[str, str], **options: Any) -> str:
    """Why ``parse`` refuses the request (it must refuse it)."""
    with pytest.raises(WebhookVerificationError) as info:
        parse(body, headers, SECRET, **options)
    return info.value.reason


# -- scheme confusion ----------------------------------------------------------------------------


def test_a_v1_signature_cannot_be_replayed_as_a_timeless_sha256_one() -> None:
    """The finding: S = HMAC(secret, "<ts>." + body) is the v1 signature; sent as ``sha256=S`` with
    the bytes ``"<ts>." + body`` it is an HMAC of exactly that body, and sha256 has no time."""
    body, ts = delivery_body(), int(time.time())
    v1 = _cueapi.sign_v1(SECRET, ts, body)
    forged_sig = "sha256=" + v1.removeprefix("v1=")
    forged_body = f"{ts}.".encode() + body
    # The HMAC really does match: only the verifier's rules stand in the way.
    assert hmac.new(SECRET.encode(), forged_body, hashlib.sha256).hexdigest() == v1[3:]

    for allow in (False, True):
        assert not verify_webhook(forged_body, forged_sig, SECRET, allow_sha256=allow)
        assert not verify_webhook(forged_body.decode(), forged_sig, SECRET, str(ts), allow_sha256=allow)
        assert not verify_webhook_headers(
            forged_body, {"X-CueAPI-Signature": forged_sig}, SECRET, allow_sha256=allow
        )
    # Through parse: refused for the scheme by default, for the signature when sha256 is allowed.
    assert reason(forged_body, {"X-CueAPI-Signature": forged_sig}) == "scheme_not_allowed"
    assert reason(forged_body, {"X-CueAPI-Signature": forged_sig}, allow_sha256=True) == "bad_signature"
    # Years later, still refused (sha256 would never have expired).
    assert not verify_webhook(forged_body, forged_sig, SECRET, allow_sha256=True)


def test_the_same_forgery_with_any_timestamp_shape_is_refused() -> None:
    body = delivery_body()
    for ts in (0, 7, -5, I64_MIN, I64_MAX, 1_700_000_000):
        v1 = _cueapi.sign_v1(SECRET, ts, body)
        message = f"{ts}.".encode() + body
        sig = "sha256=" + v1[3:]
        assert not verify_webhook(message, sig, SECRET, allow_sha256=True), ts
        assert _cueapi.check_signature(SECRET, message, sig, None, 0, 300, True) == "mismatch"
        assert _cueapi.check_signature(SECRET, message, sig, None, 0, 300, False) == "scheme"


def test_a_sha256_signature_is_not_a_v1_one_nor_standard_webhooks() -> None:
    body, ts = delivery_body(), int(time.time())
    sha = _cueapi.sign_sha256(SECRET, body)
    # sha256 covers the body alone: as v1 it would need the body to begin with "<ts>.".
    assert not verify_webhook(body, "v1=" + sha.removeprefix("sha256="), SECRET, str(ts))
    # Standard Webhooks is keyed by the decoded secret: a v1 hex re-encoded does not verify.
    import base64

    v1 = _cueapi.sign_v1(SECRET, ts, body)
    as_std = "v1," + base64.b64encode(bytes.fromhex(v1[3:])).decode()
    assert not verify_standard_webhook(body, "", ts, as_std, SECRET)
    headers = {"webhook-id": "", "webhook-timestamp": str(ts), "webhook-signature": as_std}
    assert reason(body, headers) == "bad_signature"


def test_the_legitimate_sha256_receiver_still_verifies() -> None:
    """A cue that chose sha256: the article's own check, ours when asked for, and parse through
    the Standard Webhooks headers every delivery carries — without allow_sha256."""
    body, ts = delivery_body(), int(time.time())
    sha = _cueapi.sign_sha256(SECRET, body)
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(f"sha256={expected}", sha)  # the article's verify_signature
    assert verify_webhook(body, sha, SECRET, allow_sha256=True)
    assert not verify_webhook(body, sha, SECRET)
    assert parse(body, {"X-CueAPI-Signature": sha}, SECRET, allow_sha256=True).scheme == "sha256"
    std = _cueapi.sign_standard(SECRET, "cue_1:1", ts, body)
    headers = {
        "X-CueAPI-Signature": sha,
        "webhook-id": "cue_1:1",
        "webhook-timestamp": str(ts),
        "webhook-signature": std,
    }
    assert parse(body, headers, SECRET).scheme == "standard"
    # GET deliveries carry no body; that verifies too.
    assert verify_webhook(b"", _cueapi.sign_sha256(SECRET, b""), SECRET, allow_sha256=True)


SDK_PYTHON = Path(__file__).resolve().parents[2] / ".venv-sdk" / "bin" / "python"
SDK_CHECK = """
import json, sys
from cueapi import verify_webhook  # the official cueapi-sdk, in its own virtualenv
cases = json.load(sys.stdin)
print(json.dumps([verify_webhook(body.encode(), sig, secret, ts) for body, sig, secret, ts in cases]))
"""


def test_our_verify_webhook_answers_as_the_official_sdk_on_cross_scheme_input() -> None:
    assert SDK_PYTHON.exists(), "run `make develop`: it installs cueapi-sdk into .venv-sdk"
    body, ts = delivery_body(), int(time.time())
    v1 = _cueapi.sign_v1(SECRET, ts, body)
    cases = [
        (body.decode(), v1, SECRET, str(ts)),  # genuine
        (f"{ts}.".encode().decode() + body.decode(), "sha256=" + v1[3:], SECRET, str(ts)),  # forged
        (body.decode(), _cueapi.sign_sha256(SECRET, body), SECRET, str(ts)),  # bare sha256
        (body.decode(), v1, OTHER, str(ts)),  # another secret
        (body.decode(), v1, SECRET, str(ts - 301)),  # stale
    ]
    out = subprocess.run(
        [str(SDK_PYTHON), "-c", SDK_CHECK],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    sdk = json.loads(out.stdout)
    ours = [verify_webhook(b, s, k, t) for b, s, k, t in cases]
    assert ours == sdk == [True, False, False, False, False]


# -- forged, replayed, stale, future -------------------------------------------------------------


def test_forged_signatures_are_refused_in_every_scheme() -> None:
    body, ts = delivery_body(), int(time.time())
    for sig in ("v1=" + "0" * 64, "v1=" + "G" * 64, "v1=", "sha256=" + "0" * 64, "v2=abc", "v1=" + "a" * 63):
        assert not verify_webhook(body, sig, SECRET, str(ts), allow_sha256=True), sig
    # Signed with another secret, or over another body.
    assert not verify_webhook(body, _cueapi.sign_v1(OTHER, ts, body), SECRET, str(ts))
    assert not verify_webhook(body, _cueapi.sign_v1(SECRET, ts, body + b" "), SECRET, str(ts))
    # The timestamp is signed: moving it breaks the signature.
    assert not verify_webhook(body, _cueapi.sign_v1(SECRET, ts, body), SECRET, str(ts + 1))
    std = _cueapi.sign_standard(SECRET, "m", ts, body)
    assert not verify_standard_webhook(body, "m2", ts, std, SECRET)
    assert not verify_standard_webhook(body, "m", ts + 1, std, SECRET)
    assert not verify_standard_webhook(body, "m", ts, "v1," + "A" * 44, SECRET)


def test_a_replayed_delivery_is_flagged_and_a_stale_one_refused() -> None:
    body, ts = delivery_body(), int(time.time())
    headers = {"X-CueAPI-Signature": _cueapi.sign_v1(SECRET, ts, body), "X-CueAPI-Timestamp": str(ts)}
    seen = MemorySeen()
    assert parse(body, headers, SECRET, seen=seen).replayed is False
    assert parse(body, headers, SECRET, seen=seen).replayed is True
    # The same request once its window has passed: refused.
    old = ts - 301
    stale = {"X-CueAPI-Signature": _cueapi.sign_v1(SECRET, old, body), "X-CueAPI-Timestamp": str(old)}
    assert reason(body, stale) == "stale"
    assert not verify_webhook(body, stale["X-CueAPI-Signature"], SECRET, str(old))
    ahead = ts + 301
    future = {"X-CueAPI-Signature": _cueapi.sign_v1(SECRET, ahead, body), "X-CueAPI-Timestamp": str(ahead)}
    assert reason(body, future) == "future"


# -- timestamps at the ends of 64 bits -----------------------------------------------------------


@pytest.mark.parametrize(
    "ts", [I64_MIN, I64_MIN + 1, I64_MIN + int(time.time()), I64_MAX, I64_MAX - 1, -int(time.time())]
)
def test_timestamps_at_the_ends_of_i64_do_not_wrap_into_the_window(ts: int) -> None:
    """``(now - ts).abs()`` wraps for ts near now - 2^63: a timestamp that far off must be refused
    by every verifier, in both schemes that carry time."""
    body = delivery_body()
    v1 = _cueapi.sign_v1(SECRET, ts, body)
    std = _cueapi.sign_standard(SECRET, "m", ts, body)
    now = int(time.time())
    assert not verify_webhook(body, v1, SECRET, str(ts))
    assert not verify_webhook(body, v1, SECRET, ts)
    # The widest tolerance admits exactly what is within it, never a wrapped difference.
    assert verify_webhook(body, v1, SECRET, str(ts), tolerance=I64_MAX) == (abs(now - ts) <= I64_MAX)
    assert _cueapi.check_signature(SECRET, body, v1, str(ts), now, 300, False) == "timestamp"
    assert _cueapi.check_standard(SECRET, body, "m", str(ts), std, now, 300) == "timestamp"
    assert not verify_standard_webhook(body, "m", ts, std, SECRET)
    assert not verify_webhook_headers(body, {"X-CueAPI-Signature": v1, "X-CueAPI-Timestamp": str(ts)}, SECRET)
    assert not verify_webhook_headers(
        body, {"webhook-id": "m", "webhook-timestamp": str(ts), "webhook-signature": std}, SECRET
    )
    for headers in (
        {"X-CueAPI-Signature": v1, "X-CueAPI-Timestamp": str(ts)},
        {"webhook-id": "m", "webhook-timestamp": str(ts), "webhook-signature": std},
    ):
        assert reason(body, headers) in {"stale", "future", "bad_timestamp"}
    # The native checks with "now" at the other end of the range: still no wrap.
    for now in (I64_MIN, I64_MAX):
        expect = None if abs(now - ts) <= 300 else "timestamp"
        assert _cueapi.check_signature(SECRET, body, v1, str(ts), now, 300, False) == expect
        assert _cueapi.check_standard(SECRET, body, "m", str(ts), std, now, 300) == expect


def test_timestamps_beyond_64_bits_are_refused() -> None:
    body = delivery_body()
    v1 = _cueapi.sign_v1(SECRET, 0, body)
    for stamp in (str(2**63), str(-(2**63) - 1), "9" * 40, str(2**64)):
        assert not verify_webhook(body, v1, SECRET, stamp)
        assert not verify_standard_webhook(
            body, "m", stamp, _cueapi.sign_standard(SECRET, "m", 0, body), SECRET
        )
        assert reason(body, {"X-CueAPI-Signature": v1, "X-CueAPI-Timestamp": stamp}) in {
            "future",
            "bad_timestamp",
        }


def test_verify_webhook_is_still_the_top_level_export() -> None:
    assert cueapi.verify_webhook is verify_webhook
