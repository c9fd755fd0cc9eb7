"""Canonical bodies and signatures: byte-identical to Python's json.dumps(sort_keys=True), and
verifiable by our verifier and by the Standard Webhooks library."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import cueapi
import pytest
import standardwebhooks
from cueapi import _cueapi
from cueapi.webhooks import verify_standard_webhook, verify_webhook, verify_webhook_headers
from hypothesis import given, settings
from hypothesis import strategies as st

SECRET = "whsec_" + "0123456789abcdef" * 4

# JSON values as Python's json module round-trips them: 64-bit ints, finite floats, any text
# without lone surrogates (which are not UTF-8), nested lists and objects.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"]), max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=600, deadline=None)
@given(json_values)
def test_canonical_json_is_pythons_json_dumps(value: Any) -> None:
    assert _cueapi.canonical_json(json.dumps(value)) == json.dumps(value, sort_keys=True)


@pytest.mark.parametrize(
    "value",
    [
        1e16,
        1e-05,
        0.1,
        -0.0,
        1.0,
        123456789.123,
        2.0**49 + 0.25,
        2**63 - 1,
        "é😀\n\u0007/",
        {"b": 1, "a": [None, True]},
    ],
)
def test_canonical_json_examples(value: Any) -> None:
    assert _cueapi.canonical_json(json.dumps(value)) == json.dumps(value, sort_keys=True)


def body(**extra: Any) -> bytes:
    payload = {"task": "sync", "note": "naïve ☃ 😀", "ratio": 0.1, "big": 1e16, "nested": {"z": [1, 2.5]}}
    doc = {"execution_id": "exec_1", "cue_id": "cue_1", "payload": payload, **extra}
    return _cueapi.canonical_json(json.dumps(doc)).encode()


def test_v1_signature_verifies_raw_and_reserialised() -> None:
    raw, ts = body(), int(time.time())
    sig = _cueapi.sign_v1(SECRET, ts, raw)
    assert sig.startswith("v1=") and len(sig) == 67
    assert verify_webhook(raw, sig, SECRET, str(ts))
    assert verify_webhook(json.loads(raw), sig, SECRET, ts)  # a receiver that parsed the body
    assert verify_webhook(json.dumps(json.loads(raw), ensure_ascii=False), sig, SECRET, ts)
    assert not verify_webhook(raw.replace(b"sync", b"sink"), sig, SECRET, ts)
    assert not verify_webhook(raw, sig, SECRET + "0", ts)
    assert not verify_webhook(raw, sig, SECRET, ts - 301)
    assert not verify_webhook(raw, sig, SECRET, None)
    assert not verify_webhook(raw, "v1=zz", SECRET, ts)
    assert not verify_webhook(raw, "v1=é", SECRET, ts)
    assert not verify_webhook(raw, None, SECRET, ts)


def test_sha256_scheme_of_the_article() -> None:
    import hashlib
    import hmac

    raw = body()
    sig = _cueapi.sign_sha256(SECRET, raw)
    # The article's own hand-written receiver check:
    expected = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(f"sha256={expected}", sig)
    # Ours takes the timeless scheme only when asked (as the official SDK, it refuses it by default).
    assert verify_webhook(raw, sig, SECRET, allow_sha256=True)
    assert verify_webhook(json.loads(raw), sig, SECRET, allow_sha256=True)
    assert not verify_webhook(raw, sig, SECRET)
    assert verify_webhook_headers(raw, {"X-CueAPI-Signature": sig}, SECRET, allow_sha256=True)
    assert not verify_webhook_headers(raw, {"X-CueAPI-Signature": sig}, SECRET)


def test_standard_webhooks_library_verifies_our_signature() -> None:
    raw, ts = body(), int(time.time())
    sig = _cueapi.sign_standard(SECRET, "cue_1:1700000000000", ts, raw)
    headers = {"webhook-id": "cue_1:1700000000000", "webhook-timestamp": str(ts), "webhook-signature": sig}
    assert standardwebhooks.Webhook(SECRET).verify(raw, headers) == json.loads(raw)
    assert verify_standard_webhook(raw, headers["webhook-id"], ts, sig, SECRET)
    assert verify_webhook_headers(raw, {k.upper(): v for k, v in headers.items()}, SECRET)
    assert not verify_standard_webhook(raw, "another-id", ts, sig, SECRET)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(raw + b" ", headers)


def test_headers_pick_the_cueapi_scheme() -> None:
    raw, ts = body(), int(time.time())
    headers = {"X-CueAPI-Signature": _cueapi.sign_v1(SECRET, ts, raw), "X-CueAPI-Timestamp": str(ts)}
    assert verify_webhook_headers(raw, headers, SECRET)
    assert not verify_webhook_headers(raw, {}, SECRET)


def test_verify_webhook_is_exported_at_top_level() -> None:
    assert cueapi.verify_webhook is verify_webhook


SDK_PYTHON = Path(__file__).resolve().parent.parent / ".venv-sdk" / "bin" / "python"

SDK_CHECK = """
import json, sys
from cueapi import verify_webhook  # the official cueapi-sdk, in its own virtualenv
cases = json.load(sys.stdin)
print(json.dumps([verify_webhook(body.encode(), sig, secret, ts) for body, sig, secret, ts in cases]))
"""


def test_the_official_sdk_verifies_our_v1_signatures() -> None:
    assert SDK_PYTHON.exists(), "run `make develop`: it installs cueapi-sdk into .venv-sdk"
    ts = int(time.time())
    bodies = [body(), body(attempt=2, extra={"π": 3.14159, "list": [1e-7, "tab\\t"]}), b'{"empty": {}}']
    cases = [(b.decode(), _cueapi.sign_v1(SECRET, ts, b), SECRET, str(ts)) for b in bodies]
    cases.append((bodies[0].decode(), _cueapi.sign_v1(SECRET, ts, bodies[1]), SECRET, str(ts)))
    out = subprocess.run(
        [str(SDK_PYTHON), "-c", SDK_CHECK],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [True, True, True, False]
