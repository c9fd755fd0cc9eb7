//! Webhook bodies and signatures.
//!
//! Bodies are the bytes Python's `json.dumps(obj, sort_keys=True)` would produce (sorted keys,
//! `", "` / `": "` separators, ASCII escapes, Python float repr), so a receiver that parses and
//! re-serialises the body still verifies; we sign exactly the bytes we send. Three schemes:
//!
//! - **CueAPI v1**: `X-CueAPI-Signature: v1=<hex HMAC-SHA256(secret, "<ts>." + body)>` with
//!   `X-CueAPI-Timestamp: <ts>`; the whole `whsec_…` string is the key (what the official SDK
//!   checks).
//! - **Standard Webhooks**: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`
//!   over `"<id>.<ts>." + body`, keyed by base64-decoding the part of the secret after `whsec_`.
//! - **sha256** (the article's receiver): `X-CueAPI-Signature: sha256=<hex HMAC(secret, body)>`.
//!
//! `v1` and `sha256` share a key, and a `v1` message (`"<ts>." + body`) is itself a byte string a
//! `sha256` signature could cover: a genuine `v1` signature S would verify as `sha256=S` over the
//! bytes `"<ts>." + body`, with no timestamp to expire. So verification takes `sha256` only when
//! the receiver asks for it ([`Schemes::V1OrSha256`]), and even then never over a body shaped
//! like a `v1` message (digits, then a dot: something cueapi never sends under `sha256`, whose
//! bodies are JSON objects or empty). Standard Webhooks is keyed differently and cannot be
//! confused with either.

use std::cell::RefCell;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

mod canonical;

pub use canonical::{canonical_json, is_canonical, python_float_repr};

type HmacSha256 = Hmac<Sha256>;

/// Keyed HMAC states this thread made last, newest first: keying hashes a long key and both pads
/// (four SHA-256 blocks), a fifth of the work of checking a 1 KiB body, and a receiver or sender
/// uses the same few secrets over and over.
const KEYED_CACHE: usize = 4;

thread_local! {
    static KEYED: RefCell<Vec<(Vec<u8>, HmacSha256)>> = const { RefCell::new(Vec::new()) };
}

/// An HMAC-SHA256 keyed with `key`, from this thread's cache when it was keyed lately.
fn keyed(key: &[u8]) -> HmacSha256 {
    KEYED.with(|cell| {
        let mut cache = cell.borrow_mut();
        if let Some(i) = cache.iter().position(|(k, _)| k.as_slice() == key) {
            let hit = cache.remove(i);
            let mac = hit.1.clone();
            cache.insert(0, hit);
            return mac;
        }
        // HMAC accepts keys of any length; this cannot fail.
        let mac =
            <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("hmac key"));
        cache.truncate(KEYED_CACHE - 1);
        cache.insert(0, (key.to_vec(), mac.clone()));
        mac
    })
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = keyed(key);
    for p in parts {
        mac.update(p);
    }
    mac
}

/// The lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `v1=<hex>`: the CueAPI signature of `body` at `timestamp` (Unix seconds).
pub fn sign_v1(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mac = hmac(
        secret.as_bytes(),
        &[timestamp.to_string().as_bytes(), b".", body],
    );
    format!("v1={}", hex(&mac.finalize().into_bytes()))
}

/// `sha256=<hex>`: the article's scheme, HMAC of the raw body.
pub fn sign_sha256(secret: &str, body: &[u8]) -> String {
    let mac = hmac(secret.as_bytes(), &[body]);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// The Standard Webhooks key: the base64-decoded part of the secret after `whsec_`, or the raw
/// secret bytes when that part is not base64.
fn standard_key(secret: &str) -> Vec<u8> {
    let tail = secret.strip_prefix("whsec_").unwrap_or(secret);
    B64.decode(tail)
        .unwrap_or_else(|_| tail.as_bytes().to_vec())
}

/// `v1,<base64>`: the Standard Webhooks signature of message `id` at `timestamp`.
pub fn sign_standard(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mac = hmac(
        &standard_key(secret),
        &[
            id.as_bytes(),
            b".",
            timestamp.to_string().as_bytes(),
            b".",
            body,
        ],
    );
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// Which `X-CueAPI-Signature` schemes a receiver takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schemes {
    /// `v1=` only, the scheme with a timestamp (what the official SDK's `verify_webhook` takes).
    V1Only,
    /// `v1=` and the timeless `sha256=`, for receivers of cues that chose `sha256`.
    V1OrSha256,
}

/// Why a signature did not verify.
#[derive(Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// No signature in a scheme we know.
    Missing,
    /// A `sha256=` signature where the receiver takes `v1=` only.
    Scheme,
    /// The timestamp is missing, malformed or outside the tolerance.
    Timestamp,
    /// The signature does not match.
    Mismatch,
}

fn ct_eq_hex(mac: HmacSha256, hex_sig: &str) -> bool {
    let digits = hex_sig.as_bytes();
    let mut bytes = [0u8; 32];
    if digits.len() != 64 {
        return false;
    }
    for (out, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        match (hex_value(pair[0]), hex_value(pair[1])) {
            (Some(hi), Some(lo)) => *out = hi << 4 | lo,
            _ => return false,
        }
    }
    mac.verify_slice(&bytes).is_ok()
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// A timestamp header: Unix seconds in decimal, surrounding blanks allowed.
fn parse_timestamp(text: &str) -> Option<i64> {
    text.trim().parse().ok()
}

/// Whether `ts` is at most `tolerance_s` seconds from `now_s`, either way (a negative tolerance
/// admits nothing). `abs_diff` cannot overflow, whatever the timestamp.
fn within(ts: i64, now_s: i64, tolerance_s: i64) -> bool {
    u64::try_from(tolerance_s).is_ok_and(|t| ts.abs_diff(now_s) <= t)
}

/// [`verify_cueapi`] over the raw `body`, then, only if that fails for the signature alone and
/// the body is JSON in another form, over its canonical re-serialisation: what a receiver that
/// parsed and re-serialised the body (or was handed it re-encoded) still verifies with. A body
/// that fails and is canonical already costs no second HMAC.
pub fn verify_cueapi_any(
    secret: &str,
    body: &[u8],
    signature: &str,
    timestamp: Option<&str>,
    now_s: i64,
    tolerance_s: i64,
    schemes: Schemes,
) -> Result<(), VerifyError> {
    match verify_cueapi(
        secret,
        body,
        signature,
        timestamp,
        now_s,
        tolerance_s,
        schemes,
    ) {
        Err(VerifyError::Mismatch) => match recanonical(body) {
            Some(again) => verify_cueapi(
                secret,
                again.as_bytes(),
                signature,
                timestamp,
                now_s,
                tolerance_s,
                schemes,
            ),
            None => Err(VerifyError::Mismatch),
        },
        done => done,
    }
}

/// The canonical form of the JSON document `body` when it differs from `body`; `None` when
/// `body` is canonical already or not JSON.
fn recanonical(body: &[u8]) -> Option<String> {
    if is_canonical(body) == Some(true) {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    let again = canonical_json(&value);
    (again.as_bytes() != body).then_some(again)
}

/// Whether `body` has the shape of a `v1` message, `"<ts>." + body` (an optional minus, digits,
/// a dot): bytes a `v1` signature covers, which a `sha256` signature must never be taken for.
fn is_v1_message(body: &[u8]) -> bool {
    let digits = body.strip_prefix(b"-").unwrap_or(body);
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    n > 0 && digits.get(n) == Some(&b'.')
}

/// Verifies a CueAPI signature header (`v1=…` with its timestamp, or — when `schemes` takes it —
/// `sha256=…`) over the raw `body` in constant time; `v1` also checks the timestamp is within
/// `tolerance_s` of `now_s`. A `sha256` signature never verifies a body shaped like a `v1`
/// message (see the module docs).
pub fn verify_cueapi(
    secret: &str,
    body: &[u8],
    signature: &str,
    timestamp: Option<&str>,
    now_s: i64,
    tolerance_s: i64,
    schemes: Schemes,
) -> Result<(), VerifyError> {
    let sig = signature.trim();
    if let Some(hex_sig) = sig.strip_prefix("sha256=") {
        if schemes == Schemes::V1Only {
            return Err(VerifyError::Scheme);
        }
        if is_v1_message(body) {
            return Err(VerifyError::Mismatch);
        }
        return if ct_eq_hex(hmac(secret.as_bytes(), &[body]), hex_sig) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        };
    }
    let Some(hex_sig) = sig.strip_prefix("v1=") else {
        return Err(VerifyError::Missing);
    };
    let ts = timestamp
        .and_then(parse_timestamp)
        .ok_or(VerifyError::Timestamp)?;
    if !within(ts, now_s, tolerance_s) {
        return Err(VerifyError::Timestamp);
    }
    let mac = hmac(secret.as_bytes(), &[ts.to_string().as_bytes(), b".", body]);
    if ct_eq_hex(mac, hex_sig) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

/// Verifies Standard Webhooks headers: any of the space-separated `v1,<base64>` signatures.
pub fn verify_standard(
    secret: &str,
    body: &[u8],
    id: &str,
    timestamp: &str,
    signatures: &str,
    now_s: i64,
    tolerance_s: i64,
) -> Result<(), VerifyError> {
    let ts = parse_timestamp(timestamp).ok_or(VerifyError::Timestamp)?;
    if !within(ts, now_s, tolerance_s) {
        return Err(VerifyError::Timestamp);
    }
    let key = standard_key(secret);
    let mut any = false;
    for sig in signatures.split_whitespace() {
        let Some(b64) = sig.strip_prefix("v1,") else {
            continue;
        };
        any = true;
        let Ok(expected) = B64.decode(b64) else {
            continue;
        };
        let mac = hmac(
            &key,
            &[id.as_bytes(), b".", ts.to_string().as_bytes(), b".", body],
        );
        if mac.verify_slice(&expected).is_ok() {
            return Ok(());
        }
    }
    Err(if any {
        VerifyError::Mismatch
    } else {
        VerifyError::Missing
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tamper_fails() {
        let secret = "whsec_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let body = br#"{"a": 1}"#;
        let v1 = sign_v1(secret, 1_700_000_000, body);
        assert_eq!(
            verify_cueapi(
                secret,
                body,
                &v1,
                Some("1700000000"),
                1_700_000_100,
                300,
                Schemes::V1Only
            ),
            Ok(())
        );
        assert_eq!(
            verify_cueapi(
                secret,
                body,
                &v1,
                Some("1700000000"),
                1_700_000_400,
                300,
                Schemes::V1Only
            ),
            Err(VerifyError::Timestamp)
        );
        assert_eq!(
            verify_cueapi(
                secret,
                b"{\"a\": 2}",
                &v1,
                Some("1700000000"),
                1_700_000_000,
                300,
                Schemes::V1Only
            ),
            Err(VerifyError::Mismatch)
        );
        let sha = sign_sha256(secret, body);
        assert_eq!(
            verify_cueapi(secret, body, &sha, None, 0, 300, Schemes::V1OrSha256),
            Ok(())
        );
        assert_eq!(
            verify_cueapi(secret, body, &sha, None, 0, 300, Schemes::V1Only),
            Err(VerifyError::Scheme)
        );
        let std = sign_standard(secret, "msg_1", 1_700_000_000, body);
        assert_eq!(
            verify_standard(
                secret,
                body,
                "msg_1",
                "1700000000",
                &std,
                1_700_000_000,
                300
            ),
            Ok(())
        );
        assert_eq!(
            verify_standard(
                secret,
                body,
                "msg_2",
                "1700000000",
                &std,
                1_700_000_000,
                300
            ),
            Err(VerifyError::Mismatch)
        );
    }

    const SECRET: &str = "whsec_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_v1_signature_is_never_a_sha256_signature() {
        let body = br#"{"attempt": 1, "payload": {}}"#;
        let ts = 1_700_000_000;
        let v1 = sign_v1(SECRET, ts, body);
        let stolen = format!("sha256={}", &v1[3..]);
        let mut message = format!("{ts}.").into_bytes();
        message.extend_from_slice(body);
        // The forgery: the v1 message as a body, the v1 hex as a sha256 signature. Refused by
        // default (sha256 not asked for) and, when asked for, because of the body's shape.
        for schemes in [Schemes::V1Only, Schemes::V1OrSha256] {
            assert!(verify_cueapi(SECRET, &message, &stolen, None, ts, 300, schemes).is_err());
            assert!(verify_cueapi_any(SECRET, &message, &stolen, None, ts, 300, schemes).is_err());
        }
        // The HMAC itself does match: only the rules above stand in the way.
        assert_eq!(sign_sha256(SECRET, &message), stolen);
        // Negative timestamps and leading zeros make v1 messages too.
        for shaped in [&b"-5.{}"[..], b"0001.x", b"7."] {
            assert!(is_v1_message(shaped), "{shaped:?}");
            let sig = sign_sha256(SECRET, shaped);
            assert_eq!(
                verify_cueapi(SECRET, shaped, &sig, None, 0, 300, Schemes::V1OrSha256),
                Err(VerifyError::Mismatch)
            );
        }
        // What cueapi sends under sha256 (a JSON object, or nothing for GET) still verifies.
        for legit in [&body[..], b"", b"5", b"-.5", b" 5.{}"] {
            assert!(!is_v1_message(legit), "{legit:?}");
            let sig = sign_sha256(SECRET, legit);
            assert_eq!(
                verify_cueapi(SECRET, legit, &sig, None, 0, 300, Schemes::V1OrSha256),
                Ok(())
            );
        }
    }

    #[test]
    fn timestamps_at_the_ends_of_i64_are_refused_not_wrapped() {
        let body = b"{}";
        // now - ts wraps for a timestamp near now - 2^63 (and now + 2^63): the window must hold.
        let nows = [0, 1_700_000_000, -1, i64::MAX, i64::MIN];
        let stamps = [
            i64::MIN,
            i64::MIN + 1,
            i64::MAX,
            i64::MAX - 1,
            -1_700_000_000,
        ];
        for now in nows {
            for ts in stamps {
                let expect = ts.abs_diff(now) <= 300;
                let v1 = sign_v1(SECRET, ts, body);
                let got = verify_cueapi(
                    SECRET,
                    body,
                    &v1,
                    Some(&ts.to_string()),
                    now,
                    300,
                    Schemes::V1Only,
                );
                assert_eq!(got.is_ok(), expect, "v1 ts {ts} now {now}");
                if !expect {
                    assert_eq!(got, Err(VerifyError::Timestamp));
                }
                let std = sign_standard(SECRET, "m", ts, body);
                let got = verify_standard(SECRET, body, "m", &ts.to_string(), &std, now, 300);
                assert_eq!(got.is_ok(), expect, "standard ts {ts} now {now}");
            }
        }
        // Even the widest tolerance does not span the whole range; a negative one admits nothing.
        assert!(within(0, i64::MAX, i64::MAX));
        assert!(within(i64::MIN, -1, i64::MAX));
        assert!(!within(i64::MIN, i64::MAX, i64::MAX));
        assert!(!within(i64::MIN, 0, i64::MAX));
        assert!(!within(5, 5, -1));
        // Beyond i64: not a timestamp at all.
        let v1 = sign_v1(SECRET, 0, body);
        assert_eq!(
            verify_cueapi(
                SECRET,
                body,
                &v1,
                Some("9223372036854775808"),
                0,
                300,
                Schemes::V1Only
            ),
            Err(VerifyError::Timestamp)
        );
    }
}
