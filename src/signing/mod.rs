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

/// Why a signature did not verify.
#[derive(Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// No signature in a scheme we know.
    Missing,
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
) -> Result<(), VerifyError> {
    match verify_cueapi(secret, body, signature, timestamp, now_s, tolerance_s) {
        Err(VerifyError::Mismatch) => match recanonical(body) {
            Some(again) => verify_cueapi(
                secret,
                again.as_bytes(),
                signature,
                timestamp,
                now_s,
                tolerance_s,
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

/// Verifies a CueAPI signature header (`v1=…` with its timestamp, or `sha256=…`) over the raw
/// `body` in constant time; `v1` also checks the timestamp is within `tolerance_s` of `now_s`.
pub fn verify_cueapi(
    secret: &str,
    body: &[u8],
    signature: &str,
    timestamp: Option<&str>,
    now_s: i64,
    tolerance_s: i64,
) -> Result<(), VerifyError> {
    let sig = signature.trim();
    if let Some(hex_sig) = sig.strip_prefix("sha256=") {
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
            verify_cueapi(secret, body, &v1, Some("1700000000"), 1_700_000_100, 300),
            Ok(())
        );
        assert_eq!(
            verify_cueapi(secret, body, &v1, Some("1700000000"), 1_700_000_400, 300),
            Err(VerifyError::Timestamp)
        );
        assert_eq!(
            verify_cueapi(
                secret,
                b"{\"a\": 2}",
                &v1,
                Some("1700000000"),
                1_700_000_000,
                300
            ),
            Err(VerifyError::Mismatch)
        );
        let sha = sign_sha256(secret, body);
        assert_eq!(verify_cueapi(secret, body, &sha, None, 0, 300), Ok(()));
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
}
