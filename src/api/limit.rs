//! Rate limiting: N requests a minute per API key for requests with a valid key, per client
//! address for everything else (no key, or a key that matches no user: a stream of made-up keys
//! cannot buy fresh allowances). `POST /v1/echo/{token}` always counts against the address.
//!
//! A worker's reports with a valid key are never refused nor counted ([`is_report`]): outcomes,
//! execution heartbeats and worker heartbeats. The official worker drops a refused outcome and
//! never sends it again, so refusing one loses a record of work done (and a refused heartbeat can
//! cost a claim); their volume is bounded by the claims and fires the limit does count.
//!
//! The algorithm is GCRA (a token bucket kept as one instant per bucket, the "theoretical arrival
//! time"): O(1) per request, a burst of up to N at once, then one request every 60/N s. Refused
//! requests do not count. Time is the engine's clock, so tests move it by hand.
//!
//! Memory stays bounded: a bucket whose instant has passed is full, the same as no bucket, so
//! such buckets are dropped whenever the map has doubled since the last sweep; should more than
//! [`MAX_BUCKETS`] still be busy, the half nearest to full is dropped (they start afresh).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use super::{bearer, ApiError, AppState, Authenticated};
use crate::clock::Millis;

/// Paths never limited: health and monitoring must answer when clients are being throttled.
pub(super) const EXEMPT: &[&str] = &[
    "/health",
    "/status",
    "/v1/info",
    "/metrics",
    "/openapi.json",
];

/// Whether a request (or a route, by its path template) is a worker's report: an outcome
/// (`POST /v1/executions/{id}/outcome`), an execution heartbeat (`POST
/// /v1/executions/{id}/heartbeat`) or a worker heartbeat (`POST /v1/worker/heartbeat`). With a
/// valid key these are never refused nor counted.
pub(super) fn is_report(method: &Method, path: &str) -> bool {
    if method != Method::POST {
        return false;
    }
    let parts: Vec<&str> = path.split('/').collect();
    matches!(
        parts.as_slice(),
        ["", "v1", "worker", "heartbeat"] | ["", "v1", "executions", _, "outcome" | "heartbeat"]
    ) && parts.get(3).is_some_and(|id| !id.is_empty())
}

/// The default limit of `cueapi serve`, per key (or address) and minute.
pub const DEFAULT_PER_MINUTE: u32 = crate::limits::RATE_LIMIT_PER_MINUTE;
/// The highest limit accepted.
pub const MAX_PER_MINUTE: u32 = crate::limits::MAX_RATE_LIMIT_PER_MINUTE;

/// Busy buckets kept at most.
const MAX_BUCKETS: usize = 100_000;
/// The map is swept of full buckets once it holds this many, and then whenever it has doubled.
const FIRST_SWEEP: usize = 4_096;
/// One minute, the window the limit is counted in.
const WINDOW_MS: i128 = 60_000;

/// What a request is counted against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Bucket {
    /// The SHA-256 of a valid API key.
    Key([u8; 32]),
    /// A client address; IPv6 addresses by their /64 (what one client usually holds).
    Ip(IpAddr),
}

impl Bucket {
    pub(super) fn key(token: &str) -> Bucket {
        Bucket::Key(Sha256::digest(token.as_bytes()).into())
    }

    pub(super) fn ip(ip: IpAddr) -> Bucket {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Bucket::Ip(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
            v4 => Bucket::Ip(v4),
        }
    }
}

/// The verdict on one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests left right now.
    pub remaining: u32,
    /// When the allowance is whole again (Unix seconds).
    pub reset: i64,
    /// Seconds until the next request is allowed (for a refusal; at least 1).
    pub retry_after: i64,
}

/// The limiter of one server.
pub(super) struct Limiter {
    per_minute: u32,
    buckets: Mutex<Buckets>,
    refused: AtomicU64,
}

struct Buckets {
    /// Each bucket's theoretical arrival time, in units of 1/N ms (exact for any N).
    tat: HashMap<Bucket, i128>,
    sweep_at: usize,
}

fn ceil_div(a: i128, b: i128) -> i128 {
    (a + b - 1).div_euclid(b)
}

impl Limiter {
    /// A limiter allowing `per_minute` requests a minute per bucket; 0 allows everything.
    pub(super) fn new(per_minute: u32) -> Limiter {
        Limiter {
            per_minute: per_minute.min(MAX_PER_MINUTE),
            buckets: Mutex::new(Buckets {
                tat: HashMap::new(),
                sweep_at: FIRST_SWEEP,
            }),
            refused: AtomicU64::new(0),
        }
    }

    /// The limit, if requests are limited.
    pub(super) fn per_minute(&self) -> Option<u32> {
        (self.per_minute > 0).then_some(self.per_minute)
    }

    /// Counts a request against `bucket` at `now` if the bucket allows it.
    pub(super) fn check(&self, bucket: Bucket, now: Millis) -> Decision {
        let n = i128::from(self.per_minute.max(1));
        let (now_s, step, window) = (i128::from(now) * n, WINDOW_MS, WINDOW_MS * n);
        let to_secs = |scaled: i128| -> i64 { ceil_div(ceil_div(scaled, n), 1000) as i64 };
        let mut b = self.buckets.lock();
        let tat = b.tat.get(&bucket).copied().unwrap_or(now_s).max(now_s);
        let next = tat + step;
        if next - now_s > window {
            drop(b);
            self.refused.fetch_add(1, Ordering::Relaxed);
            let wait_ms = ceil_div(next - window - now_s, n);
            return Decision {
                allowed: false,
                limit: self.per_minute,
                remaining: 0,
                reset: to_secs(tat),
                retry_after: ceil_div(wait_ms, 1000).max(1) as i64,
            };
        }
        b.tat.insert(bucket, next);
        if b.tat.len() >= b.sweep_at {
            b.sweep(now_s);
        }
        Decision {
            allowed: true,
            limit: self.per_minute,
            remaining: ((window - (next - now_s)) / step) as u32,
            reset: to_secs(next),
            retry_after: 0,
        }
    }

    /// Requests counted against `bucket` in the current window.
    pub(super) fn used(&self, bucket: Bucket, now: Millis) -> u32 {
        let n = i128::from(self.per_minute.max(1));
        let now_s = i128::from(now) * n;
        let tat = self.buckets.lock().tat.get(&bucket).copied();
        tat.map_or(0, |t| ceil_div((t - now_s).max(0), WINDOW_MS) as u32)
            .min(self.per_minute)
    }

    /// Requests refused since the server started.
    pub(super) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Buckets held now.
    pub(super) fn buckets(&self) -> usize {
        self.buckets.lock().tat.len()
    }
}

impl Buckets {
    fn sweep(&mut self, now_s: i128) {
        self.tat.retain(|_, t| *t > now_s);
        if self.tat.len() >= MAX_BUCKETS {
            // Keep the busier half: the buckets furthest from full.
            let mut all: Vec<i128> = self.tat.values().copied().collect();
            let mid = all.len() / 2;
            let (_, cut, _) = all.select_nth_unstable(mid);
            let cut = *cut;
            self.tat.retain(|_, t| *t > cut);
        }
        self.sweep_at = (self.tat.len() * 2).clamp(FIRST_SWEEP, MAX_BUCKETS);
    }
}

/// The client's address: the peer, or (behind a trusted reverse proxy) the last address of
/// `X-Forwarded-For`, the one that proxy appended.
fn client_ip(req: &Request, trust_forwarded_for: bool) -> IpAddr {
    let forwarded = || {
        req.headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(|ip| ip.trim().parse::<IpAddr>().ok())
    };
    let peer = || {
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    };
    trust_forwarded_for
        .then(forwarded)
        .flatten()
        .or_else(peer)
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn put(headers: &mut HeaderMap, name: &'static str, value: i64) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// The middleware. The intake has looked up the request's key ([`Authenticated`]), which decides
/// the bucket it counts against.
pub(super) async fn limit(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if st.limiter.per_minute().is_none() || EXEMPT.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let ip = Bucket::ip(client_ip(&req, st.opts.trust_forwarded_for));
    let echo = req.method() == Method::POST && req.uri().path().starts_with("/v1/echo/");
    let report = is_report(req.method(), req.uri().path());
    // The intake looked the key up: a valid one is its own bucket.
    let known = matches!(
        req.extensions().get::<Authenticated>(),
        Some(Authenticated(Some(_)))
    );
    let bucket = match bearer(req.headers()) {
        Some(token) if known && !echo => {
            if report {
                return next.run(req).await;
            }
            Bucket::key(token)
        }
        _ => ip,
    };
    let d = st.limiter.check(bucket, st.engine.clock().now());
    let mut resp = if d.allowed {
        next.run(req).await
    } else {
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            format!("Too many requests. Retry after {} seconds.", d.retry_after),
        )
        .into_response();
        put(r.headers_mut(), "retry-after", d.retry_after);
        r
    };
    let h = resp.headers_mut();
    put(h, "x-ratelimit-limit", i64::from(d.limit));
    put(h, "x-ratelimit-remaining", i64::from(d.remaining));
    put(h, "x-ratelimit-reset", d.reset);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_780_000_000_000;

    fn ip(last: u8) -> Bucket {
        Bucket::ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)))
    }

    #[test]
    fn a_burst_of_the_limit_then_one_request_per_share_of_the_minute() {
        let l = Limiter::new(3);
        let d: Vec<_> = (0..4).map(|_| l.check(ip(1), T0)).collect();
        assert_eq!(
            d.iter()
                .map(|d| (d.allowed, d.remaining))
                .collect::<Vec<_>>(),
            [(true, 2), (true, 1), (true, 0), (false, 0)]
        );
        // Three requests now: the allowance is whole again in 60 s; one comes back in 20 s.
        assert_eq!(d[2].reset, T0 / 1000 + 60);
        assert_eq!(d[3].retry_after, 20);
        assert_eq!(l.used(ip(1), T0), 3);
        assert_eq!(l.refused(), 1);
        assert!(!l.check(ip(1), T0 + 19_999).allowed);
        let back = l.check(ip(1), T0 + 20_000);
        assert!(back.allowed && back.remaining == 0);
        // Another bucket is untouched.
        assert_eq!(l.check(ip(2), T0).remaining, 2);
        assert_eq!(l.used(ip(1), T0 + 80_000), 0);
    }

    #[test]
    fn limits_that_do_not_divide_a_minute_are_exact() {
        let l = Limiter::new(7);
        let allowed = (0..20).filter(|_| l.check(ip(1), T0).allowed).count();
        assert_eq!(allowed, 7);
        let refused = l.check(ip(1), T0);
        // 60/7 s = 8.57 s until the next one.
        assert_eq!(refused.retry_after, 9);
        assert!(!l.check(ip(1), T0 + 8_571).allowed);
        assert!(l.check(ip(1), T0 + 8_572).allowed);
    }

    #[test]
    fn retry_after_is_at_least_a_second() {
        let l = Limiter::new(1_000_000);
        while l.check(ip(1), T0).allowed {}
        let d = l.check(ip(1), T0);
        assert!(!d.allowed && d.retry_after == 1);
    }

    #[test]
    fn idle_buckets_are_dropped_and_busy_ones_bounded() {
        let l = Limiter::new(10);
        for i in 0..(FIRST_SWEEP as u32 - 1) {
            l.check(Bucket::ip(IpAddr::V4(Ipv4Addr::from(i))), T0);
        }
        assert_eq!(l.buckets(), FIRST_SWEEP - 1);
        // A minute later all of them are full again: the next new bucket sweeps them away.
        l.check(ip(1), T0 + 60_000);
        assert_eq!(l.buckets(), 1);
        for i in 0..(MAX_BUCKETS as u32 + 10) {
            l.check(Bucket::ip(IpAddr::V4(Ipv4Addr::from(i))), T0 + 60_000);
        }
        assert!(l.buckets() <= MAX_BUCKETS);
    }

    #[test]
    fn reports_are_outcomes_and_heartbeats_posted() {
        let post = Method::POST;
        for path in [
            "/v1/executions/exec_1/outcome",
            "/v1/executions/{id}/heartbeat",
            "/v1/worker/heartbeat",
        ] {
            assert!(is_report(&post, path), "{path}");
        }
        for path in [
            "/v1/executions//outcome",
            "/v1/executions/exec_1/claim",
            "/v1/executions/claim",
            "/v1/executions/exec_1/outcome/x",
            "/v1/worker/heartbeat/",
            "/v1/workers",
            "/v1/cues/cue_1/fire",
        ] {
            assert!(!is_report(&post, path), "{path}");
        }
        assert!(!is_report(&Method::GET, "/v1/executions/exec_1/outcome"));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_prefix() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Bucket::ip(a), Bucket::ip(b));
        assert_ne!(Bucket::ip(a), Bucket::ip(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(Bucket::ip(mapped), ip(1));
    }
}
