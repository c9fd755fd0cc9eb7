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

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Serialises `v` exactly as Python's `json.dumps(v, sort_keys=True)` does.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::with_capacity(128);
    write_value(&mut out, v);
    out
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (None, Some(u), _) => out.push_str(&u.to_string()),
            (_, _, Some(f)) => out.push_str(&python_float_repr(f)),
            _ => out.push_str("null"),
        },
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(out, k);
                out.push_str(": ");
                write_value(out, &map[k]);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if !(' '..='~').contains(&c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: the shortest digits that round-trip, in fixed notation when the
/// decimal exponent is in -4..16, else scientific with a signed two-digit exponent.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits ("-1.2345e-7", "1e16", "0e0"), but when
    // two shortest candidates are equally near it may round up where Python rounds half to even
    // (2**49 + 0.25: "...312.3" against Python's "...312.2"). Re-rounding the exact value to that
    // many digits (Rust's fixed-precision formatting is exact and half-even) agrees with Python.
    let shortest = format!("{f:e}");
    let digits = shortest
        .split('e')
        .next()
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_digit)
        .count();
    let exact = format!("{:.*e}", digits.saturating_sub(1), f);
    let sci = if exact.parse::<f64>().ok() == Some(f) {
        exact
    } else {
        shortest
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::from(sign);
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let point = exp as usize + 1;
            if digits.len() <= point {
                out.push_str(&digits);
                out.push_str(&"0".repeat(point - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        } else {
            out.push_str("0.");
            out.push_str(&"0".repeat((-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push_str(&format!(
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        ));
    }
    out
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("hmac key"));
    for p in parts {
        mac.update(p);
    }
    mac
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
    let bytes: Option<Vec<u8>> = (0..hex_sig.len())
        .step_by(2)
        .map(|i| {
            hex_sig
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    match bytes {
        Some(b) if hex_sig.len() == 64 => mac.verify_slice(&b).is_ok(),
        _ => false,
    }
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
    let ts: i64 = timestamp
        .and_then(|t| t.trim().parse().ok())
        .ok_or(VerifyError::Timestamp)?;
    if (now_s - ts).abs() > tolerance_s {
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
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::Timestamp)?;
    if (now_s - ts).abs() > tolerance_s {
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
    use serde_json::json;

    #[test]
    fn canonical_form_matches_python() {
        let v = json!({"b": [1, 2.5, null, true], "a": "é\u{1F600}\n\"\u{7f}", "c": {"z": 1e-5, "y": 1e16, "x": 0.1}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a": "\u00e9\ud83d\ude00\n\"\u007f", "b": [1, 2.5, null, true], "c": {"x": 0.1, "y": 1e+16, "z": 1e-05}}"#
        );
    }

    #[test]
    fn float_repr_like_python() {
        for (f, s) in [
            (1.0, "1.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (100.0, "100.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e-7, "1.5e-07"),
            (0.0001, "0.0001"),
            (123456.789, "123456.789"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (2f64.powi(49) + 0.25, "562949953421312.2"),
        ] {
            assert_eq!(python_float_repr(f), s, "{f}");
        }
    }

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
