//! What happens to a request before its route runs: the key is looked up, then the body is read —
//! or not — within a deadline and a budget.
//!
//! A body is buffered (up to [`super::MAX_BODY`]) only when someone accountable sent it, or a
//! route that takes no key needs it:
//!
//! - a request with a **valid key**: buffered, as any route may read it;
//! - a request without one to a **public route that takes a body** (`POST /v1/auth/register`,
//!   `POST /v1/echo/{token}`): buffered within [`PUBLIC_BODY_BUDGET`] bytes shared by all such
//!   requests at once (reserved up front from `Content-Length`, or the whole limit without one);
//!   when the budget is spent the request gets 503 `server_busy` with `Retry-After`;
//! - **anything else** (no valid key for a route that needs one, a public route that reads no
//!   body, an unknown route): the route runs with an empty body — it answers without one anyway —
//!   and the body is read and thrown away afterwards, never held, so the answer still reaches a
//!   client that sent one on a keep-alive connection.
//!
//! Every body must arrive within [`super::conn::Limits::body_timeout`] of its headers: a buffered
//! one is answered 408 `request_timeout` when it does not, a discarded one ends its connection.
//! Either way the connection is closed after the answer. So connections trickling bodies without a
//! key cost neither memory nor more than that long.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::{bearer, limit, ApiError, AppState, Authenticated, MAX_BODY};

/// Bytes of bodies buffered at once for requests without a valid key (registrations, echoes).
pub const PUBLIC_BODY_BUDGET: usize = 16 << 20;

/// The routes that take a body without a key, by method and path template.
pub(super) struct PublicBodies(HashSet<(Method, &'static str)>);

impl PublicBodies {
    pub(super) fn new(routes: &[super::spec::Route]) -> PublicBodies {
        PublicBodies(
            routes
                .iter()
                .filter(|r| r.is_public() && r.takes_body())
                .map(|r| (r.method().clone(), r.path))
                .collect(),
        )
    }

    fn contains(&self, method: &Method, path: &str) -> bool {
        self.0
            .iter()
            .any(|(m, t)| m == method && template_matches(t, path))
    }
}

/// Whether `path` is one the route template (`/v1/echo/{token}`) serves: the same segments, a
/// `{name}` standing for any one non-empty segment (as the router reads them).
fn template_matches(template: &str, path: &str) -> bool {
    let mut want = template.split('/');
    let mut got = path.split('/');
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') => {
                if g.is_empty() {
                    return false;
                }
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
}

/// The bytes of public bodies buffered now.
pub(super) struct Budget(Arc<Semaphore>);

impl Default for Budget {
    fn default() -> Self {
        Budget(Arc::new(Semaphore::new(PUBLIC_BODY_BUDGET)))
    }
}

/// The middleware (outermost): the key, then the body, as the module docs say.
pub(super) async fn intake(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return closing(too_large());
    }
    let deadline = Instant::now() + st.limits.body_timeout;
    let user = authenticate(&st, &mut req);
    let (parts, body) = req.into_parts();
    let public_body = st.public_bodies.contains(&parts.method, parts.uri.path());
    if user {
        return match read(body, deadline).await {
            Ok(bytes) => {
                next.run(Request::from_parts(parts, Body::from(bytes)))
                    .await
            }
            Err(refusal) => closing(refusal),
        };
    }
    if public_body {
        let want = declared.map_or(MAX_BODY, |n| n as usize).max(1);
        let Ok(reserved) = Arc::clone(&st.budget.0).try_acquire_many_owned(want as u32) else {
            let busy = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_busy",
                "Too many unauthenticated request bodies are being received at once; retry shortly",
            );
            let mut r = busy.into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return discard_after(r, body, deadline).await;
        };
        let read = read(body, deadline).await;
        return match read {
            Ok(bytes) => {
                let r = next
                    .run(Request::from_parts(parts, Body::from(bytes)))
                    .await;
                drop(reserved);
                r
            }
            Err(refusal) => closing(refusal),
        };
    }
    let r = next.run(Request::from_parts(parts, Body::empty())).await;
    discard_after(r, body, deadline).await
}

/// Looks up the request's key (once: the rate limiter and the `Auth` extractor reuse the
/// answer); true when it names a user. `POST /v1/echo/{token}` takes no key and counts against
/// the client address, whatever it carries.
fn authenticate(st: &AppState, req: &mut Request) -> bool {
    let path = req.uri().path();
    let echo = req.method() == Method::POST && path.starts_with("/v1/echo/");
    if echo || limit::EXEMPT.contains(&path) {
        return false;
    }
    let Some(token) = bearer(req.headers()).map(str::to_string) else {
        return false;
    };
    match st.engine.read(|c| c.user_by_key(&token)) {
        Ok(found) => {
            let known = found.is_some();
            req.extensions_mut().insert(Authenticated(found));
            known
        }
        // The route's own lookup reports the store's trouble.
        Err(_) => false,
    }
}

/// The whole body, up to [`MAX_BODY`] and by `deadline`.
async fn read(body: Body, deadline: Instant) -> Result<Bytes, ApiError> {
    match tokio::time::timeout_at(deadline, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "The request body did not arrive in time",
        )),
    }
}

/// Reads and drops what is left of `body` (never more than [`MAX_BODY`], never past `deadline`)
/// before answering `r`; when it cannot be read to its end, the connection is closed after `r`.
async fn discard_after(r: Response, mut body: Body, deadline: Instant) -> Response {
    let mut seen = 0usize;
    let drained = tokio::time::timeout_at(deadline, async {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    seen += f.data_ref().map_or(0, Bytes::len);
                    if seen > MAX_BODY {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    })
    .await;
    if drained == Ok(true) {
        r
    } else {
        closing(r)
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        format!("Request body exceeds {MAX_BODY} bytes"),
    )
}

/// `r` with `Connection: close`: the rest of its request was not read, so the connection cannot
/// carry another.
fn closing(r: impl IntoResponse) -> Response {
    let mut r = r.into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

#[cfg(test)]
mod tests {
    use super::template_matches;

    #[test]
    fn templates_match_as_the_router_does() {
        assert!(template_matches("/v1/echo/{token}", "/v1/echo/abc"));
        assert!(!template_matches("/v1/echo/{token}", "/v1/echo/"));
        assert!(!template_matches("/v1/echo/{token}", "/v1/echo/a/b"));
        assert!(!template_matches("/v1/echo/{token}", "/v1/echo"));
        assert!(template_matches("/v1/auth/register", "/v1/auth/register"));
        assert!(!template_matches("/v1/auth/register", "/v1/auth/register/"));
        assert!(!template_matches("/v1/auth/register", "/v1/auth/registe"));
    }
}
