//! The webhook sender: builds the signed request of an attempt, sends it through the SSRF guard
//! with a total deadline, and classifies the response.
//!
//! Body: the Python-canonical JSON of `{attempt, cue_id, execution_id, name, payload,
//! scheduled_for}` (what the CueAPI reference sends), signed exactly as sent. Headers: the CueAPI
//! signature (`v1=` over `"<ts>." + body`, or a cue's chosen `sha256=` over the body) with
//! `X-CueAPI-Timestamp`, the Standard Webhooks trio keyed by the per-occurrence idempotency key, and
//! the execution headers. A cue's own headers go first and can never replace these.

pub mod ssrf;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde_json::{json, Value};

use crate::clock::Millis;
use crate::signing::{canonical_json, sign_sha256, sign_standard, sign_v1};
use crate::store::{Claimed, ReportedOutcome, Target};
pub use ssrf::Policy;

/// Longest callback URL accepted.
const MAX_URL: usize = crate::limits::URL_CHARS;
/// The part of a response body kept on the execution.
const KEPT_BODY_CHARS: usize = 2_000;
/// The part of a response body read at all (enough for an inline outcome with evidence).
const READ_BODY_BYTES: usize = crate::limits::INLINE_OUTCOME_BYTES;
/// `Retry-After` is honoured up to this long.
pub const MAX_RETRY_AFTER_MS: i64 = 3_600_000;

/// Checks a URL's form (scheme, credentials, host, length) and returns it normalised. Where it
/// points is the guard's business ([`Policy::resolve`]), at creation and again at each delivery.
pub fn check_url_syntax(raw: &str) -> Result<String, String> {
    if raw.len() > MAX_URL {
        return Err(format!("is longer than {MAX_URL} characters"));
    }
    let url = Url::parse(raw).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("must use http or https, not {:?}", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials (user:password@)".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must have a host".into());
    }
    Ok(url.to_string())
}

/// Whether a header name is one cueapi sets itself (and so a cue may not set).
fn reserved_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("x-cueapi-")
        || n.starts_with("webhook-")
        || matches!(
            n.as_str(),
            "content-type" | "content-length" | "host" | "transfer-encoding" | "connection"
        )
}

/// Checks a cue's custom callback headers: valid HTTP names and values, none of ours.
pub fn check_headers(headers: &BTreeMap<String, String>) -> Result<(), String> {
    if headers.len() > 50 {
        return Err("at most 50 headers".into());
    }
    for (k, v) in headers {
        HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("{k:?} is not a valid header name"))?;
        HeaderValue::from_str(v)
            .map_err(|_| format!("the value of {k:?} is not a valid header value"))?;
        if v.len() > 8_192 {
            return Err(format!("the value of {k:?} is longer than 8192 bytes"));
        }
        if reserved_header(k) {
            return Err(format!(
                "{k:?} is set by cueapi on every delivery (signature, content and execution headers cannot be replaced)"
            ));
        }
    }
    Ok(())
}

/// An instant as Python's `datetime.isoformat()` writes a UTC time (`+00:00`, microseconds only
/// when non-zero): the form of `scheduled_for` in the reference's webhook body.
pub fn python_isoformat(ms: Millis) -> String {
    let dt = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    if ms.rem_euclid(1000) == 0 {
        dt.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
    } else {
        dt.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
    }
}

/// The request of a claimed attempt.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a>(pub &'a Claimed);

impl Request<'_> {
    /// The canonical body bytes.
    pub fn body(&self) -> Vec<u8> {
        let payload: Value = serde_json::from_str(&self.0.payload).unwrap_or_else(|_| json!({}));
        let body = json!({
            "attempt": self.0.attempt,
            "cue_id": self.0.cue_id,
            "execution_id": self.0.execution_id,
            "name": self.0.cue_name,
            "payload": payload,
            "scheduled_for": python_isoformat(self.0.scheduled_for),
        });
        canonical_json(&body).into_bytes()
    }

    /// Every header of the request, the cue's own first so that ours win.
    pub fn headers(&self, target: &Target, body: &[u8], now: Millis) -> Result<HeaderMap, String> {
        let ts = now.div_euclid(1000);
        let mut h = HeaderMap::new();
        for (k, v) in &target.headers {
            if reserved_header(k) {
                continue;
            }
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
            h.insert(name, HeaderValue::from_str(v).map_err(|e| e.to_string())?);
        }
        let signature = if target.scheme == "sha256" {
            sign_sha256(&target.secret, body)
        } else {
            sign_v1(&target.secret, ts, body)
        };
        let ours = [
            ("content-type", "application/json".to_string()),
            (
                "user-agent",
                format!("cueapi/{}", env!("CARGO_PKG_VERSION")),
            ),
            ("x-cueapi-signature", signature),
            ("x-cueapi-timestamp", ts.to_string()),
            ("x-cueapi-execution-id", self.0.execution_id.clone()),
            ("x-cueapi-cue-id", self.0.cue_id.clone()),
            (
                "x-cueapi-scheduled-for",
                python_isoformat(self.0.scheduled_for),
            ),
            ("x-cueapi-attempt", self.0.attempt.to_string()),
            ("x-cueapi-idempotency-key", self.0.idempotency_key.clone()),
            ("webhook-id", self.0.idempotency_key.clone()),
            ("webhook-timestamp", ts.to_string()),
            (
                "webhook-signature",
                sign_standard(&target.secret, &self.0.idempotency_key, ts, body),
            ),
        ];
        for (k, v) in ours {
            let value = HeaderValue::from_str(&v).map_err(|e| format!("header {k}: {e}"))?;
            h.insert(HeaderName::from_static(k), value);
        }
        Ok(h)
    }
}

/// How an attempt went.
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    /// A 2xx answer.
    pub delivered: bool,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    /// The start of the response body.
    pub response_body: Option<String>,
    /// The receiver's `Retry-After`, in milliseconds from now, bounded.
    pub retry_after_ms: Option<i64>,
    /// `410 Gone`: the receiver asks never to be called again for this; no retry.
    pub gone: bool,
    /// No (complete) answer within the deadline.
    pub timed_out: bool,
    /// The SSRF guard refused the target's address.
    pub refused: bool,
    /// The outcome a 2xx JSON body reported inline (`{"success": bool, …}`).
    pub inline: Option<ReportedOutcome>,
    /// When the request went out, for an attempt claimed before its delivery slots were free
    /// (it starts then, not at its claim).
    pub sent_at: Option<Millis>,
}

/// Reads an inline outcome from a 2xx response body, if it is a JSON object with a boolean
/// `success`. Evidence fields ride along; anything unusable leaves no inline outcome.
pub fn inline_outcome(body: &[u8]) -> Option<ReportedOutcome> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let m = v.as_object()?;
    let success = m.get("success")?.as_bool()?;
    let text = |k: &str| -> Option<String> {
        match m.get(k)? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    };
    let o = ReportedOutcome {
        success,
        result: text("result"),
        error: text("error"),
        metadata: m.get("metadata").filter(|v| v.is_object()).cloned(),
        external_id: text("external_id"),
        result_url: text("result_url"),
        result_ref: text("result_ref"),
        result_type: text("result_type"),
        summary: text("summary"),
        artifacts: m.get("artifacts").filter(|v| v.is_array()).cloned(),
        ..Default::default()
    };
    crate::store::check_outcome(&o).ok().map(|()| o)
}

/// Parses `Retry-After` (seconds, or an HTTP date) into milliseconds from `now`, bounded.
pub fn retry_after_ms(value: &str, now: Millis) -> Option<i64> {
    let v = value.trim();
    let ms = if let Ok(secs) = v.parse::<u64>() {
        (secs.min(u64::MAX / 2000) as i64).saturating_mul(1000)
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
        (at.timestamp_millis() - now).max(0)
    };
    Some(ms.clamp(0, MAX_RETRY_AFTER_MS))
}

fn describe(status: u16) -> String {
    match status {
        404 => "the webhook endpoint was not found (404)".into(),
        408 => "the webhook endpoint timed out (408)".into(),
        410 => "the webhook endpoint is gone (410); not retried".into(),
        429 => "the webhook endpoint is rate limiting (429)".into(),
        s if (400..500).contains(&s) => format!("the webhook endpoint rejected the request ({s})"),
        s if s >= 500 => format!("the webhook endpoint failed with a server error ({s})"),
        s => format!("the webhook endpoint answered {s}, not 2xx"),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        src = s.source();
    }
    parts.join(": ")
}

/// Sends webhook attempts.
pub struct Deliverer {
    client: reqwest::Client,
    policy: Arc<Policy>,
}

fn install_crypto_provider() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // An error means a provider is installed already, which is all we need.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Deliverer {
    /// A sender whose connections go only where `policy` allows.
    pub fn new(policy: Arc<Policy>) -> Result<Deliverer, String> {
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(ssrf::GuardedResolver(Arc::clone(&policy))))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| error_chain(&e))?;
        Ok(Deliverer { client, policy })
    }

    /// The guard this sender uses.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Sends one attempt. Never fails: every way an attempt can go wrong is an [`Attempt`].
    pub async fn send(&self, req: Request<'_>, target: &Target, now: Millis) -> Attempt {
        let body = req.body();
        let headers = match req.headers(target, &body, now) {
            Ok(h) => h,
            Err(e) => {
                return Attempt {
                    error: Some(format!("could not build the request headers: {e}")),
                    ..Default::default()
                }
            }
        };
        self.send_to(
            &target.url,
            &target.method,
            headers,
            body,
            target.timeout_ms,
            now,
        )
        .await
    }

    /// Sends `body` with `headers` to `url` (checked against the guard) within `timeout_ms`,
    /// without following redirects, and reads how it went.
    pub async fn send_to(
        &self,
        url: &str,
        method: &str,
        headers: HeaderMap,
        body: Vec<u8>,
        timeout_ms: i64,
        now: Millis,
    ) -> Attempt {
        let failed = |error: String| Attempt {
            error: Some(error),
            ..Default::default()
        };
        let refused = |error: String| Attempt {
            refused: true,
            ..failed(error)
        };
        let url = match Url::parse(url) {
            Ok(u) => u,
            Err(e) => return failed(format!("the callback URL is not valid: {e}")),
        };
        // The resolver guards names; an address literal never reaches it, so check it here.
        if let Some(host) = url.host_str() {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            if let Some(why) = self.policy.refuses_name(bare) {
                return refused(format!(
                    "refused: {host} is {why}, which cueapi does not call"
                ));
            }
            if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
                if let Some(why) = self.policy.refuses(ip) {
                    return refused(format!(
                        "refused: {ip} is a {why} address, which cueapi does not call"
                    ));
                }
            }
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::POST);
        let mut builder = self.client.request(method.clone(), url).headers(headers);
        if method != Method::GET {
            builder = builder.body(body);
        }
        let deadline = Duration::from_millis(timeout_ms.max(1) as u64);
        let started = tokio::time::Instant::now();
        let sent = tokio::time::timeout(deadline, builder.send()).await;
        let mut resp = match sent {
            Err(_) => {
                return Attempt {
                    timed_out: true,
                    ..failed(format!(
                        "the webhook endpoint timed out after {} s",
                        deadline.as_secs_f64()
                    ))
                }
            }
            Ok(Err(e)) => {
                let chain = error_chain(&e);
                if chain.contains("which cueapi does not call") {
                    return refused(format!(
                        "refused: {}",
                        chain
                            .rsplit(": ")
                            .find(|p| p.contains("cueapi does not call"))
                            .unwrap_or(&chain)
                    ));
                }
                return failed(if e.is_connect() {
                    format!("could not connect to the webhook endpoint: {chain}")
                } else {
                    format!("the request failed: {chain}")
                });
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after_ms(v, now));
        // Read the start of the body within what is left of the deadline.
        let mut buf: Vec<u8> = Vec::new();
        let left = deadline.saturating_sub(started.elapsed());
        let read = tokio::time::timeout(left, async {
            while buf.len() < READ_BODY_BYTES {
                match resp.chunk().await {
                    Ok(Some(c)) => buf.extend_from_slice(&c),
                    Ok(None) => break,
                    Err(e) => return Err(error_chain(&e)),
                }
            }
            Ok(())
        })
        .await;
        let delivered = (200..300).contains(&status);
        let mut out = Attempt {
            delivered,
            http_status: Some(status),
            retry_after_ms: retry_after,
            gone: status == 410,
            ..Default::default()
        };
        let text = String::from_utf8_lossy(&buf);
        if !text.is_empty() {
            out.response_body = Some(text.chars().take(KEPT_BODY_CHARS).collect());
        }
        match read {
            Err(_) if delivered => {
                out.delivered = false;
                out.timed_out = true;
                out.error = Some(format!(
                    "the webhook endpoint answered {status} but did not finish its body within {} s",
                    deadline.as_secs_f64()
                ));
            }
            Ok(Err(e)) if delivered => {
                out.delivered = false;
                out.error = Some(format!("reading the response failed: {e}"));
            }
            _ => {}
        }
        if out.delivered {
            out.inline = inline_outcome(&buf);
        } else if out.error.is_none() {
            out.error = Some(describe(status));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isoformat_matches_python() {
        assert_eq!(
            python_isoformat(1_774_713_600_000),
            "2026-03-28T16:00:00+00:00"
        );
        assert_eq!(
            python_isoformat(1_774_713_600_123),
            "2026-03-28T16:00:00.123000+00:00"
        );
    }

    #[test]
    fn url_syntax() {
        assert!(check_url_syntax("https://example.com/hook").is_ok());
        assert!(check_url_syntax("ftp://example.com/").is_err());
        assert!(check_url_syntax("https://user:pw@example.com/").is_err());
        assert!(check_url_syntax("https://user@example.com/").is_err());
        assert!(check_url_syntax("not a url").is_err());
        assert_eq!(
            check_url_syntax("https://example.com").as_deref(),
            Ok("https://example.com/")
        );
    }

    #[test]
    fn reserved_headers_are_refused() {
        let mut h = BTreeMap::new();
        h.insert("X-Agent-Secret".to_string(), "s".to_string());
        assert!(check_headers(&h).is_ok());
        for bad in [
            "X-CueAPI-Signature",
            "webhook-signature",
            "Content-Type",
            "Host",
        ] {
            let mut h = BTreeMap::new();
            h.insert(bad.to_string(), "x".to_string());
            assert!(check_headers(&h).is_err(), "{bad}");
        }
        let mut h = BTreeMap::new();
        h.insert("Bad Name".to_string(), "x".to_string());
        assert!(check_headers(&h).is_err());
    }

    #[test]
    fn inline_outcomes() {
        let o =
            inline_outcome(br#"{"success": true, "result": "ok", "external_id": "E1"}"#).unwrap();
        assert!(o.success);
        assert_eq!(o.external_id.as_deref(), Some("E1"));
        assert!(inline_outcome(br#"{"status": "received"}"#).is_none());
        assert!(inline_outcome(br#"{"success": "yes"}"#).is_none());
        assert!(inline_outcome(b"ok").is_none());
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(retry_after_ms("120", 0), Some(120_000));
        assert_eq!(retry_after_ms("999999999", 0), Some(MAX_RETRY_AFTER_MS));
        assert_eq!(
            retry_after_ms("Thu, 01 Jan 1970 00:01:00 GMT", 0),
            Some(60_000)
        );
        assert_eq!(retry_after_ms("soon", 0), None);
    }
}
