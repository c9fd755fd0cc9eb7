//! `/v1/echo/{token}`: a callback target for trying a cue out (the official CLI's `quickstart`
//! points a one-shot cue at it). `POST` (no key) keeps what arrived — the body, the request
//! headers and when — for 5 minutes; `GET` (with any user's key) answers `waiting` or `delivered`
//! with it (a JSON body as JSON, any other as text). The token is the capability: at least 16
//! characters from `[A-Za-z0-9_-]`.
//!
//! Memory is bounded: at most [`MAX_TOKENS`] tokens and [`MAX_BYTES`] bytes are kept, the oldest
//! dropped first, and the bytes counted are the bytes kept. A body is kept as the raw bytes that
//! arrived (in an allocation of exactly their size), never as a parsed JSON tree: a tree of a
//! 1 MB array of zeros takes some 15 times its text, which would let the cap count a sixteenth of
//! what is held. It is checked to be JSON once, on arrival, and spliced into the `GET` answer as
//! it came. Credentials in the stored headers (`Authorization`, `Cookie`, …) are redacted, since
//! any user of the server who has the token can read them.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
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
/// What an entry costs besides its bytes (its map and order entries, the struct), counted so that
/// many tiny entries cannot hold much more than the cap either.
const ENTRY_OVERHEAD: usize = 256;
/// What each kept header costs besides its name and value.
const HEADER_OVERHEAD: usize = 64;
const REDACTED: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// A body as it arrived.
struct Body {
    bytes: Box<[u8]>,
    /// Whether the bytes are one JSON document (checked once, on arrival).
    json: bool,
}

impl Body {
    fn new(raw: &[u8]) -> Body {
        let blank = raw.iter().all(u8::is_ascii_whitespace);
        Body {
            // A copy of exactly this size: the received buffer may be a slice of a larger one.
            bytes: Box::from(raw),
            json: !blank && serde_json::from_slice::<serde::de::IgnoredAny>(raw).is_ok(),
        }
    }

    /// The payload as the `GET` answer shows it: the JSON as it came, other text as a JSON
    /// string (invalid UTF-8 replaced), nothing as null.
    fn payload_json(&self) -> Vec<u8> {
        if self.json {
            return self.bytes.to_vec();
        }
        if self.bytes.iter().all(u8::is_ascii_whitespace) {
            return b"null".to_vec();
        }
        serde_json::to_vec(&String::from_utf8_lossy(&self.bytes))
            .unwrap_or_else(|_| b"null".to_vec())
    }
}

struct Entry {
    seq: u64,
    at: Millis,
    size: usize,
    body: Body,
    headers: Vec<(String, String)>,
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
    fn put(&self, token: String, body: Body, headers: Vec<(String, String)>, now: Millis) {
        let size = ENTRY_OVERHEAD
            + token.len()
            + body.bytes.len()
            + headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + HEADER_OVERHEAD)
                .sum::<usize>();
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
                body,
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

    /// The `GET` answer for `token` (the JSON text of a `delivered` answer), if anything arrived.
    fn answer(&self, token: &str, now: Millis) -> Option<Vec<u8>> {
        let mut k = self.inner.lock();
        k.expire(now);
        let e = k.by_token.get(token).filter(|e| e.at + KEEP_MS > now)?;
        let headers: Map<String, Value> = e
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), Value::String(v.clone())))
            .collect();
        let rest = json!({"status": "delivered", "headers": headers, "received_at": iso(e.at)});
        let payload = e.body.payload_json();
        drop(k);
        // `{"payload": <the body as it came>, ...rest}`: the body is spliced in, never parsed.
        let rest = serde_json::to_vec(&rest).ok()?;
        let mut out = Vec::with_capacity(payload.len() + rest.len() + 16);
        out.extend_from_slice(b"{\"payload\": ");
        out.extend_from_slice(&payload);
        out.extend_from_slice(b", ");
        out.extend_from_slice(rest.get(1..)?);
        Some(out)
    }

    /// The bytes counted as kept now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.inner.lock().bytes
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

fn headers_of(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut out = Vec::new();
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
        out.push((n.to_string(), value));
    }
    out
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
    let now = st.engine.clock().now();
    st.echoes
        .put(token, Body::new(&body), headers_of(&headers), now);
    ok(StatusCode::OK, json!({"stored": true}))
}

pub(super) async fn fetch(State(st): State<AppState>, _user: Auth, Id(token): Id) -> ApiResult {
    check_token(&token)?;
    match st.echoes.answer(&token, st.engine.clock().now()) {
        None => ok(StatusCode::OK, json!({"status": "waiting"})),
        Some(body) => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()),
    }
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
            e.put(format!("token-{i:012}"), Body::new(b""), Vec::new(), 1_000);
        }
        assert_eq!(e.len(), MAX_TOKENS);
        assert!(e.answer("token-000000000004", 1_000).is_none());
        assert!(e.answer("token-000000000005", 1_000).is_some());
        // Bytes: one big entry pushes out as many as it needs.
        let big = vec![b' '; MAX_BYTES - 100_000];
        e.put(
            "big-000000000000".into(),
            Body::new(&big),
            Vec::new(),
            1_000,
        );
        assert!(e.answer("big-000000000000", 1_000).is_some());
        assert!(e.bytes() <= MAX_BYTES);
        assert!(e.len() <= 400);
        // A token posted again counts once, at its new time.
        e.put(
            "big-000000000000".into(),
            Body::new(b"1"),
            Vec::new(),
            2_000,
        );
        let got: Value =
            serde_json::from_slice(&e.answer("big-000000000000", 2_000).unwrap()).unwrap();
        assert_eq!(got["payload"], json!(1));
        assert!(e.answer("big-000000000000", 2_000 + KEEP_MS).is_none());
        assert_eq!(e.len(), 0);
    }

    fn shown(raw: &[u8]) -> Value {
        serde_json::from_slice(&Body::new(raw).payload_json()).unwrap()
    }

    #[test]
    fn bodies_are_json_or_text() {
        assert_eq!(shown(br#"{"a": [1]}"#), json!({"a": [1]}));
        assert_eq!(shown(b"plain text"), json!("plain text"));
        assert_eq!(shown(b"\xff\xfe"), json!("\u{fffd}\u{fffd}"));
        assert_eq!(shown(b"  \n"), Value::Null);
        assert_eq!(shown(b"[1, 2"), json!("[1, 2"));
        assert_eq!(shown(b" 12 "), json!(12));
    }

    #[test]
    fn what_is_kept_is_what_is_counted() {
        // A 1 MB array of zeros is kept as its 1 MB of text: the cap holds about 64 of them,
        // however large their parsed form would be.
        let zeros = format!("[{}0]", "0,".repeat(499_999));
        let e = Echoes::default();
        for i in 0..70 {
            e.put(
                format!("zeros-{i:011}"),
                Body::new(zeros.as_bytes()),
                Vec::new(),
                1_000,
            );
        }
        assert!(e.bytes() <= MAX_BYTES);
        let kept: usize = e
            .inner
            .lock()
            .by_token
            .values()
            .map(|x| x.body.bytes.len())
            .sum();
        assert!(
            kept <= MAX_BYTES && kept >= MAX_BYTES - 2 * zeros.len(),
            "{kept}"
        );
        let answer = e.answer("zeros-00000000069", 1_000).unwrap();
        let v: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(v["status"], "delivered");
        assert_eq!(v["payload"].as_array().map(Vec::len), Some(500_000));
    }

    #[test]
    fn tokens() {
        assert!(check_token("qs-0123456789abcdef").is_ok());
        assert!(check_token("short").is_err());
        assert!(check_token("has a space in it!!").is_err());
        assert!(check_token(&"x".repeat(129)).is_err());
    }
}
