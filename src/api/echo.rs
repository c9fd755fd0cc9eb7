//! `/v1/echo/{token}`: a callback target for trying a cue out (the official CLI's `quickstart`
//! points a one-shot cue at it). `POST` (no key) keeps what arrived — the body (JSON parsed, any
//! other body as text), the request headers and when — for 5 minutes; `GET` (with any user's key)
//! answers `waiting` or `delivered` with it. The token is the capability: at least 16 characters
//! from `[A-Za-z0-9_-]`.
//!
//! Memory is bounded: at most [`MAX_TOKENS`] tokens and [`MAX_BYTES`] bytes are kept, the oldest
//! dropped first. Credentials in the stored headers (`Authorization`, `Cookie`, …) are redacted,
//! since any user of the server who has the token can read them.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use super::{iso, ok, ApiError, ApiResult, AppState, Auth, Id};
use crate::clock::Millis;

/// Largest body kept (the reference's limit).
pub(super) const MAX_ECHO_BODY: usize = 1_000_000;
/// How long a delivery is kept.
pub(super) const KEEP_MS: Millis = 300_000;
/// Tokens kept at most.
pub(super) const MAX_TOKENS: usize = 1_000;
/// Bytes kept at most (bodies, headers and tokens).
pub(super) const MAX_BYTES: usize = 64 << 20;
const MIN_TOKEN: usize = 16;
const MAX_TOKEN: usize = 128;
const REDACTED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

struct Entry {
    seq: u64,
    at: Millis,
    size: usize,
    payload: Value,
    headers: Value,
}

/// What arrived, by token.
#[derive(Default)]
pub(super) struct Echoes {
    inner: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    by_token: HashMap<String, Entry>,
    /// Tokens in the order they arrived.
    order: BTreeMap<u64, String>,
    seq: u64,
    bytes: usize,
}

impl Kept {
    fn remove(&mut self, token: &str) {
        if let Some(e) = self.by_token.remove(token) {
            self.order.remove(&e.seq);
            self.bytes -= e.size;
        }
    }

    fn expire(&mut self, now: Millis) {
        while let Some((_, token)) = self.order.first_key_value() {
            let token = token.clone();
            match self.by_token.get(&token) {
                Some(e) if e.at + KEEP_MS > now => break,
                _ => self.remove(&token),
            }
        }
    }
}

impl Echoes {
    fn put(&self, token: String, payload: Value, headers: Value, size: usize, now: Millis) {
        let mut k = self.inner.lock();
        k.expire(now);
        k.remove(&token);
        k.seq += 1;
        let seq = k.seq;
        k.order.insert(seq, token.clone());
        k.bytes += size;
        k.by_token.insert(
            token,
            Entry {
                seq,
                at: now,
                size,
                payload,
                headers,
            },
        );
        while k.by_token.len() > MAX_TOKENS || k.bytes > MAX_BYTES {
            let Some(oldest) = k.order.first_key_value().map(|(_, t)| t.clone()) else {
                break;
            };
            k.remove(&oldest);
        }
    }

    fn get(&self, token: &str, now: Millis) -> Option<(Value, Value, Millis)> {
        let mut k = self.inner.lock();
        k.expire(now);
        k.by_token
            .get(token)
            .filter(|e| e.at + KEEP_MS > now)
            .map(|e| (e.payload.clone(), e.headers.clone(), e.at))
    }

    /// Tokens kept now.
    pub(super) fn len(&self) -> usize {
        self.inner.lock().by_token.len()
    }
}

fn check_token(token: &str) -> ApiResult<()> {
    let fine = (MIN_TOKEN..=MAX_TOKEN).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if fine {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_token",
            format!(
                "An echo token is {MIN_TOKEN} to {MAX_TOKEN} characters from A-Z, a-z, 0-9, '-' and '_'"
            ),
        ))
    }
}

/// The body as it will be shown: JSON parsed, other text as it is (invalid UTF-8 replaced),
/// nothing as null.
fn payload_of(body: &[u8]) -> Value {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn headers_of(headers: &HeaderMap) -> (Value, usize) {
    let mut out = Map::new();
    let mut size = 0;
    for name in headers.keys() {
        let n = name.as_str();
        let value = if REDACTED.contains(&n) {
            "[redacted]".to_string()
        } else {
            headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        size += n.len() + value.len();
        out.insert(n.to_string(), Value::String(value));
    }
    (Value::Object(out), size)
}

pub(super) async fn store(
    State(st): State<AppState>,
    Id(token): Id,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    check_token(&token)?;
    if body.len() > MAX_ECHO_BODY {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("An echo body is at most {MAX_ECHO_BODY} bytes"),
        ));
    }
    let (headers, header_bytes) = headers_of(&headers);
    let size = token.len() + body.len() + header_bytes;
    let now = st.engine.clock().now();
    st.echoes.put(token, payload_of(&body), headers, size, now);
    ok(StatusCode::OK, json!({"stored": true}))
}

pub(super) async fn fetch(State(st): State<AppState>, _user: Auth, Id(token): Id) -> ApiResult {
    check_token(&token)?;
    let out = match st.echoes.get(&token, st.engine.clock().now()) {
        None => json!({"status": "waiting"}),
        Some((payload, headers, at)) => json!({
            "status": "delivered",
            "payload": payload,
            "headers": headers,
            "received_at": iso(at),
        }),
    };
    ok(StatusCode::OK, out)
}

// -- routes ------------------------------------------------------------------------------------

pub(super) fn routes() -> Vec<super::spec::Route> {
    use super::spec::{get, instant, obj, obj_some, post, tagged};
    let token = json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{16,128}$"});
    let token_text = "The capability: 16 to 128 characters from A-Z, a-z, 0-9, '-' and '_'";
    tagged(
        "echo",
        vec![
            post("/v1/echo/{token}", "storeEcho", "Keep a delivery for 5 minutes (a callback target)", store)
                .public()
                .describe("Takes any body (JSON is kept parsed, anything else as text) and the request headers, credentials redacted. Counted by client address.")
                .path_param("token", token_text, token.clone())
                .raw_body(json!({
                    "application/json": {"schema": {}},
                    "text/plain": {"schema": {"type": "string"}},
                }))
                .answers(200, "Kept", obj(json!({"stored": {"const": true}})))
                .errors(400, &["invalid_token"])
                .errors(413, &["payload_too_large"]),
            get("/v1/echo/{token}", "getEcho", "What arrived at an echo token, if anything", fetch)
                .path_param("token", token_text, token)
                .answers(
                    200,
                    "Waiting, or delivered with what arrived",
                    obj_some(json!({
                        "status": {"enum": ["waiting", "delivered"]},
                        "payload": {"description": "The body: JSON, text, or null when empty"},
                        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                        "received_at": instant(),
                    }), &["status"]),
                )
                .errors(400, &["invalid_token"]),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_go_first_when_full_and_everything_expires() {
        let e = Echoes::default();
        for i in 0..(MAX_TOKENS + 5) {
            e.put(
                format!("token-{i:012}"),
                Value::Null,
                Value::Null,
                10,
                1_000,
            );
        }
        assert_eq!(e.len(), MAX_TOKENS);
        assert!(e.get("token-000000000004", 1_000).is_none());
        assert!(e.get("token-000000000005", 1_000).is_some());
        // Bytes: one big entry pushes out as many as it needs.
        e.put(
            "big-000000000000".into(),
            Value::Null,
            Value::Null,
            MAX_BYTES - 100,
            1_000,
        );
        assert!(e.get("big-000000000000", 1_000).is_some());
        assert!(e.inner.lock().bytes <= MAX_BYTES);
        assert!(e.len() <= 11);
        // A token posted again counts once, at its new time.
        e.put("big-000000000000".into(), json!(1), Value::Null, 10, 2_000);
        assert_eq!(
            e.get("big-000000000000", 2_000).map(|x| x.0),
            Some(json!(1))
        );
        assert!(e.get("big-000000000000", 2_000 + KEEP_MS).is_none());
        assert_eq!(e.len(), 0);
    }

    #[test]
    fn bodies_are_json_or_text() {
        assert_eq!(payload_of(br#"{"a": [1]}"#), json!({"a": [1]}));
        assert_eq!(payload_of(b"plain text"), json!("plain text"));
        assert_eq!(payload_of(b"\xff\xfe"), json!("\u{fffd}\u{fffd}"));
        assert_eq!(payload_of(b"  \n"), Value::Null);
    }

    #[test]
    fn tokens() {
        assert!(check_token("qs-0123456789abcdef").is_ok());
        assert!(check_token("short").is_err());
        assert!(check_token("has a space in it!!").is_err());
        assert!(check_token(&"x".repeat(129)).is_err());
    }
}
