"""Turning a received request into a :class:`~cueapi.webhooks.Delivery`: the signature first, on the
raw bytes, then the body."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from .. import _cueapi
from ..exceptions import ValidationError, WebhookVerificationError
from .delivery import Delivery, Scheme
from .replay import SeenStore

__all__ = ["REASONS", "Headers", "check_options", "check_secrets", "parse"]

REASONS = frozenset(
    {
        "missing_signature",
        "bad_signature",
        "scheme_not_allowed",
        "bad_timestamp",
        "stale",
        "future",
        "bad_body",
    }
)
"""Every ``WebhookVerificationError.reason`` :func:`parse` gives."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Timestamps with more digits than this are far in the future (and beyond a 64-bit integer).
_MAX_DIGITS = 18
# The native checks take 64-bit seconds; any tolerance beyond this accepts every timestamp anyway.
_MAX_TOLERANCE = 2**62


class Headers(Protocol):
    """A request's headers: anything with ``items()`` giving (name, value) pairs — a dict, Flask's
    ``request.headers``, Starlette's ``request.headers``, httpx's ``Headers``."""

    def items(self) -> Iterable[tuple[Any, Any]]: ...


def _fail(reason: str, message: str) -> WebhookVerificationError:
    return WebhookVerificationError(message, reason=reason)


def check_secrets(secret: object) -> tuple[str, ...]:
    """The secrets to try, from one ``whsec_…`` string or a sequence of them (rotation). Raises
    :class:`~cueapi.exceptions.ValidationError` for none, an empty one, or one that is not text:
    an empty key would make every signature check meaningless."""
    if secret is None:
        raise ValidationError(
            "no webhook secret: pass the whsec_… secret the server signs with "
            "(GET /v1/auth/webhook-secret), or a list of them while rotating"
        )
    if isinstance(secret, str):
        secrets: tuple[object, ...] = (secret,)
    elif isinstance(secret, (bytes, bytearray, memoryview)):
        raise ValidationError("the webhook secret must be text (str), not bytes")
    elif isinstance(secret, Iterable) and not isinstance(secret, Mapping):
        secrets = tuple(secret)
    elif callable(secret):
        raise ValidationError("the webhook secret must be a str or a list of str (decorate with @webhook())")
    else:
        raise ValidationError(f"a webhook secret must be a str or a list of str, not {type(secret).__name__}")
    if not secrets:
        raise ValidationError("no webhook secret: the list of secrets is empty")
    out: list[str] = []
    for s in secrets:
        if not isinstance(s, str):
            raise ValidationError(f"each webhook secret must be a str, not {type(s).__name__}")
        if not s:
            raise ValidationError("a webhook secret is empty: any signature would verify with an empty key")
        if s != s.strip():
            raise ValidationError("a webhook secret has leading or trailing whitespace (a stray newline?)")
        try:
            s.encode()
        except UnicodeEncodeError:
            raise ValidationError("a webhook secret is not valid Unicode text") from None
        if s not in out:
            out.append(s)
    return tuple(out)


def check_options(tolerance: object, seen: object, allow_sha256: object = False) -> int:
    """Checks ``parse``'s options; returns the tolerance."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValidationError(f"tolerance must be a whole number of seconds >= 0, not {tolerance!r}")
    if not isinstance(allow_sha256, bool):
        raise ValidationError(f"allow_sha256 must be True or False, not {allow_sha256!r}")
    if seen is not None and not (isinstance(seen, SeenStore) and callable(seen.seen)):
        raise ValidationError(f"seen must have a seen(key) -> bool method (a SeenStore), not {seen!r}")
    return tolerance


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return str.__str__(value)  # a plain str, whatever subclass came in
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _headers(headers: object) -> dict[str, str]:
    """Lower-cased names to values, the first of each name kept (as Flask's and Starlette's
    ``headers.get`` do). Whatever cannot be read as a header is left out."""
    out: dict[str, str] = {}
    try:
        for pair in headers.items():  # type: ignore[attr-defined]
            name, value = pair
            key, text = _text(name), _text(value)
            if key is not None and text is not None:
                out.setdefault(key.lower(), text)
    except Exception:  # no items(), or a hostile mapping: what was read before it failed is all
        pass
    return out


def _body(body: object) -> bytes:
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        try:
            return body.encode()
        except UnicodeEncodeError:
            raise _fail("bad_body", "the body is not valid Unicode text") from None
    raise _fail("bad_body", f"the body must be bytes or str, not {type(body).__name__}")


def _timestamp(text: str | None, header: str, tolerance: int, now: int) -> int:
    if text is None or not text.strip():
        raise _fail("bad_timestamp", f"the {header} header is missing")
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()):
        raise _fail("bad_timestamp", f"the {header} header is not a whole number of Unix seconds")
    digits = digits.lstrip("0") or "0"
    ts = int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS
    if ts < now - tolerance:
        raise _fail(
            "stale",
            f"the signature is {now - ts} s old and at most {tolerance} s is accepted "
            "(a delayed or replayed request, or a clock running late)",
        )
    if ts > now + tolerance:
        raise _fail(
            "future",
            f"the signature is dated {ts - now} s ahead of this machine's clock and at most "
            f"{tolerance} s is accepted (check both clocks)",
        )
    return ts


def _canonical(raw: bytes) -> bytes | None:
    """The canonical re-serialisation of a JSON body when it differs from the bytes received."""
    try:
        again = _cueapi.canonical_json(raw.decode()).encode()
    except Exception:  # not UTF-8, not JSON, or JSON the signer could not have written
        return None
    return None if again == raw else again


def _mismatch(secrets: tuple[str, ...]) -> WebhookVerificationError:
    which = "the secret given" if len(secrets) == 1 else f"any of the {len(secrets)} secrets given"
    return _fail("bad_signature", f"the signature does not match the body with {which}")


def _verify_standard(
    h: dict[str, str], raw: bytes, secrets: tuple[str, ...], tolerance: int, now: int
) -> tuple[int, bytes]:
    signatures = h["webhook-signature"]
    msg_id = h.get("webhook-id", "")
    if not (signatures.isascii() and msg_id.isascii()):
        raise _fail("bad_signature", "the webhook-signature or webhook-id header is not ASCII")
    ts = _timestamp(h.get("webhook-timestamp"), "webhook-timestamp", tolerance, now)
    stamp, window = str(ts), min(tolerance, _MAX_TOLERANCE)

    def verifies(body: bytes) -> bool:
        for secret in secrets:
            why = _cueapi.check_standard(secret, body, msg_id, stamp, signatures, now, window)
            if why is None:
                return True
            if why == "missing":
                raise _fail("bad_signature", "the webhook-signature header holds no v1,<base64> signature")
            if why == "timestamp":  # cannot happen: checked above with the same clock
                raise _fail("bad_timestamp", "the webhook-timestamp header was refused")
        return False

    # The raw bytes; then, for a receiver that re-serialised the body, its canonical form.
    if verifies(raw):
        return ts, raw
    again = _canonical(raw)
    if again is not None and verifies(again):
        return ts, again
    raise _mismatch(secrets)


def _verify_cueapi(
    h: dict[str, str], raw: bytes, secrets: tuple[str, ...], tolerance: int, now: int, allow_sha256: bool
) -> tuple[Scheme, int | None, bytes]:
    signature = h["x-cueapi-signature"].strip()
    if not signature.isascii():
        raise _fail("bad_signature", "the X-CueAPI-Signature header is not ASCII")
    scheme: Scheme
    if signature.startswith("v1="):
        scheme = "v1"
        ts: int | None = _timestamp(h.get("x-cueapi-timestamp"), "X-CueAPI-Timestamp", tolerance, now)
    elif signature.startswith("sha256="):
        if not allow_sha256:
            raise _fail(
                "scheme_not_allowed",
                "a sha256= signature signs no time, so a captured one never expires: it is taken "
                "only with allow_sha256=True (every cueapi delivery also carries Standard Webhooks "
                "headers, which are checked first; a proxy may have dropped them)",
            )
        scheme, ts = "sha256", None  # signs no time: an X-CueAPI-Timestamp beside it is not covered
    else:
        raise _fail("bad_signature", "the X-CueAPI-Signature header is neither v1=<hex> nor sha256=<hex>")
    stamp, window = (None if ts is None else str(ts)), min(tolerance, _MAX_TOLERANCE)
    for secret in secrets:
        # The native check tries the raw bytes, then their canonical form: which one verified
        # decides the bytes the delivery is read from.
        why = _cueapi.check_signature(secret, raw, signature, stamp, now, window, allow_sha256)
        if why is None:
            again = _canonical(raw)
            if (
                again
                and _cueapi.check_signature(secret, again, signature, stamp, now, window, allow_sha256)
                is None
            ):
                return scheme, ts, again
            return scheme, ts, raw
        if why == "timestamp":  # cannot happen: checked above with the same clock
            raise _fail("bad_timestamp", "the X-CueAPI-Timestamp header was refused")
    raise _mismatch(secrets)


def _field(doc: dict[str, Any], name: str, kind: type) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) or (kind is str and not value):
        what = {str: "text", int: "a whole number", dict: "an object"}[kind]
        raise _fail("bad_body", f"the body is not a delivery: {name!r} is missing or not {what}")
    return value


def _delivery_fields(signed: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(signed)
    except (ValueError, RecursionError):
        raise _fail("bad_body", "the body is not JSON") from None
    if not isinstance(doc, dict):
        raise _fail("bad_body", "the body is not a delivery: not a JSON object")
    attempt = _field(doc, "attempt", int)
    if attempt < 1:
        raise _fail("bad_body", "the body is not a delivery: 'attempt' is below 1")
    when = _field(doc, "scheduled_for", str)
    try:
        local = datetime.fromisoformat(when[:-1] + "+00:00" if when.endswith("Z") else when)
        scheduled_for = None if local.utcoffset() is None else local.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        scheduled_for = None
    if scheduled_for is None:
        raise _fail("bad_body", "the body is not a delivery: 'scheduled_for' is not a time with an offset")
    return {
        "execution_id": _field(doc, "execution_id", str),
        "cue_id": _field(doc, "cue_id", str),
        "name": _field(doc, "name", str),
        "scheduled_for": scheduled_for,
        "attempt": attempt,
        "payload": _field(doc, "payload", dict),
    }


def parse(
    body: bytes | bytearray | memoryview | str,
    headers: Headers | Mapping[str, Any],
    secret: str | Iterable[str],
    *,
    tolerance: int = 300,
    seen: SeenStore | None = None,
    allow_sha256: bool = False,
) -> Delivery:
    """Verifies a webhook delivery and returns it as a :class:`~cueapi.webhooks.Delivery`.

    ``body`` is the request body exactly as received (bytes; a str is taken as UTF-8);
    ``headers`` the request's headers (names in any case: a dict, Flask's or Starlette's
    ``request.headers``, anything with ``items()``); ``secret`` the ``whsec_…`` secret, or a
    list of secrets while rotating (any of them verifies).

    Which signature is checked: the Standard Webhooks headers (``webhook-id``,
    ``webhook-timestamp``, ``webhook-signature``) when present (cueapi sends them on every
    delivery, and they also sign the idempotency key); otherwise ``X-CueAPI-Signature``: ``v1=``
    with ``X-CueAPI-Timestamp``, or, only with ``allow_sha256=True``, ``sha256=``. That scheme
    signs no time, so a captured signature would verify forever: a receiver takes it only when
    it asked for it (the deliveries of a cue that chose ``sha256`` verify without it anyway,
    through their Standard Webhooks headers), and never over a body shaped like a ``v1``
    message, so a ``v1`` signature cannot be passed off as one. The check runs on the raw bytes first and on
    their canonical JSON form only when those fail (a receiver that re-serialised the body), in
    constant time, before the body is parsed; the delivery is read from the bytes that were
    signed. A timestamp more than ``tolerance`` seconds away from this machine's clock is refused.

    Raises :class:`~cueapi.exceptions.WebhookVerificationError` — and nothing else, whatever the
    request holds — with ``reason``:

    - ``missing_signature``: neither ``webhook-signature`` nor ``X-CueAPI-Signature``;
    - ``bad_signature``: a signature in an unknown form, or one that no secret verifies;
    - ``scheme_not_allowed``: a ``sha256=`` signature, without ``allow_sha256=True``;
    - ``bad_timestamp``: the timestamp header is missing or not whole Unix seconds;
    - ``stale``: the timestamp is more than ``tolerance`` seconds old;
    - ``future``: it is more than ``tolerance`` seconds ahead;
    - ``bad_body``: the body verified but is not a delivery (not JSON, a field missing or of the
      wrong type), or is not bytes or text at all.

    Raises :class:`~cueapi.exceptions.ValidationError` (a ``ValueError``) for a programming
    error: no secret, an empty one, one that is not a str, a negative ``tolerance`` or a ``seen``
    that is not a :class:`~cueapi.webhooks.SeenStore`.

    Replays: with ``seen``, every delivery that verifies is marked in it (after verification,
    never before) under :attr:`Delivery.replay_key`, this attempt of this execution, and a
    delivery whose key was marked before comes back with ``replayed=True`` (not an error: answer
    it as you answered the first, typically 2xx without doing the work twice). A retry is a new
    attempt and is not flagged: the server retries only when it got no 2xx for the attempt
    before, so the work may not have been done. To do work once per occurrence across retries,
    keep ``idempotency_key`` with the work's result. Errors of the store itself propagate.
    """
    secrets = check_secrets(secret)
    tolerance = check_options(tolerance, seen, allow_sha256)
    h = _headers(headers)
    if not h.get("webhook-signature", "").strip() and not h.get("x-cueapi-signature", "").strip():
        raise _fail("missing_signature", "no signature header (webhook-signature or X-CueAPI-Signature)")
    raw = _body(body)
    now = int(time.time())
    scheme: Scheme
    ts: int | None
    if h.get("webhook-signature", "").strip():
        scheme = "standard"
        ts, signed = _verify_standard(h, raw, secrets, tolerance, now)
    else:
        scheme, ts, signed = _verify_cueapi(h, raw, secrets, tolerance, now, allow_sha256)
    fields = _delivery_fields(signed)
    if scheme == "standard":
        key = h.get("webhook-id", "")
    else:
        key = h.get("x-cueapi-idempotency-key") or h.get("webhook-id") or ""
    if not key:
        ms = (fields["scheduled_for"] - _EPOCH) // timedelta(milliseconds=1)
        key = f"{fields['cue_id']}:{ms}"
    delivery = Delivery(**fields, idempotency_key=key, scheme=scheme, timestamp=ts, raw_body=raw, headers=h)
    if seen is not None and seen.seen(delivery.replay_key):
        return dataclasses.replace(delivery, replayed=True)
    return delivery
