//! The HTTP API of `cueapi serve`: the CueAPI surface over the engine.
//!
//! One file per resource ([`auth`], [`cues`], [`executions`], [`usage`], [`echo`]; [`ops`] for
//! health, status, info and metrics; [`limit`] for rate limiting; [`spec`] for the route table and
//! the OpenAPI document made from it; [`conn`] for connections — the accept loop, its caps and
//! timeouts — and [`intake`] for what a request may send before its key is known); this file holds
//! what they share:
//! the server's start and graceful stop, the error envelope, the body and query readers (every
//! malformed input becomes a 4xx that says what is wrong, never a 500), authentication, and the
//! JSON forms of instants.

mod alerts;
mod auth;
pub mod conn;
mod cues;
mod echo;
mod executions;
mod intake;
pub mod limit;
mod ops;
mod spec;
mod usage;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Millis;
use crate::engine::Engine;
use crate::error::Error;
use crate::public::{iso, iso_fields};
use crate::store::users::User;

pub use auth::Registration;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// Server settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Who may create a user with `POST /v1/auth/register`.
    pub registration: Registration,
    /// The server's public base URL (`CUEAPI_PUBLIC_URL` when unset): the links of alert
    /// emails, and a `Host` registration accepts.
    pub public_url: Option<String>,
    /// Whether callbacks may point at loopback and private networks (development and tests).
    pub allow_private_targets: bool,
    /// How long a remote worker's claim lasts unless extended (ms; 0 keeps the engine's default).
    pub worker_lease_ms: i64,
    /// How long a worker may stay silent before its expired claims are released (ms; 0 keeps
    /// the engine's default).
    pub worker_timeout_ms: i64,
    /// The same alert for the same cue or worker within this long counts on the open alert
    /// (ms; 0 keeps the stored setting, one hour unless set).
    pub realert_ms: i64,
    /// Requests a minute per API key (or client address); 0 turns rate limiting off.
    pub rate_limit_per_minute: u32,
    /// Whether the client address of per-address limits is the last `X-Forwarded-For` entry
    /// (behind a reverse proxy that appends it) instead of the peer.
    pub trust_forwarded_for: bool,
    /// What connections may do before authentication: timeouts and caps.
    pub limits: conn::Limits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            registration: Registration::Closed,
            public_url: None,
            allow_private_targets: false,
            rate_limit_per_minute: limit::DEFAULT_PER_MINUTE,
            trust_forwarded_for: false,
            worker_lease_ms: 0,
            worker_timeout_ms: 0,
            realert_ms: 0,
            limits: conn::Limits::default(),
        }
    }
}

#[derive(Clone)]
struct AppState {
    engine: Arc<Engine>,
    opts: Arc<Options>,
    limiter: Arc<limit::Limiter>,
    echoes: Arc<echo::Echoes>,
    limits: Arc<conn::Limits>,
    public_bodies: Arc<intake::PublicBodies>,
    budget: Arc<intake::Budget>,
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Server {
    /// Binds `host:port` (port 0 picks a free one) and serves the API on the engine's runtime.
    pub fn start(
        engine: Arc<Engine>,
        host: &str,
        port: u16,
        opts: Options,
    ) -> crate::Result<Server> {
        let rt = engine.runtime()?;
        engine.set_allow_private_targets(opts.allow_private_targets);
        // Alert email: configured from CUEAPI_SMTP_*; a bad setting stops the start, clearly.
        if let Some(cfg) = crate::alerts::email::SmtpConfig::from_env()? {
            let mailer = crate::alerts::email::Mailer::new(cfg).map_err(|m| Error::Invalid {
                field: "CUEAPI_SMTP_*",
                message: m,
            })?;
            engine.set_mailer(mailer);
        }
        let (lease, timeout) = engine.worker_timing();
        engine.set_worker_timing(
            if opts.worker_lease_ms > 0 {
                opts.worker_lease_ms
            } else {
                lease
            },
            if opts.worker_timeout_ms > 0 {
                opts.worker_timeout_ms
            } else {
                timeout
            },
        );
        let std_listener = std::net::TcpListener::bind((host, port))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        if opts.realert_ms > 0 {
            engine.set_realert_ms(opts.realert_ms)?;
        }
        let mut opts = opts;
        if opts
            .public_url
            .as_deref()
            .is_none_or(|u| u.trim().is_empty())
        {
            opts.public_url = std::env::var("CUEAPI_PUBLIC_URL")
                .ok()
                .filter(|u| !u.trim().is_empty());
        }
        let public = opts
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        engine.set_public_url(public);
        let (limits, behind_proxy) = (opts.limits.clone(), opts.trust_forwarded_for);
        let state = AppState {
            engine,
            limiter: Arc::new(limit::Limiter::new(opts.rate_limit_per_minute)),
            echoes: Arc::new(echo::Echoes::default()),
            limits: Arc::new(limits.clone()),
            public_bodies: Arc::new(intake::PublicBodies::new(&routes())),
            budget: Arc::new(intake::Budget::default()),
            opts: Arc::new(opts),
        };
        let app = router(state);
        let (stop, stopped) = watch::channel(false);
        let _guard = rt.enter();
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let task = rt.spawn(conn::serve(listener, app, limits, behind_proxy, stopped));
        Ok(Server {
            addr,
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections and waits (up to 10 s) for requests in flight. Idempotent.
    /// Blocks: never call it on the runtime.
    pub fn stop(&self) {
        self.stop_by(std::time::Instant::now() + Duration::from_secs(10));
    }

    /// [`Server::stop`], waiting for requests in flight until `deadline` at most (a shutdown
    /// shares one deadline between the server and the engine).
    pub fn stop_by(&self, deadline: std::time::Instant) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.lock().take() {
            if let Ok(rt) = crate::engine::Engine::shared_runtime() {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                rt.block_on(async {
                    let _ = tokio::time::timeout(left, task).await;
                });
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Every route of the server, with its documentation (see [`spec`]).
fn routes() -> Vec<spec::Route> {
    [
        ops::routes(),
        usage::routes(),
        echo::routes(),
        auth::routes(),
        alerts::routes(),
        cues::routes(),
        workers::routes(),
        executions::routes(),
        spec::routes(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The router: exactly the routes of [`routes`], the table `GET /openapi.json` describes.
fn router(state: AppState) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |r, route| r.route(route.path, route.handler))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(run_to_completion))
        // Outermost last: the key is looked up and the body read (or drained) before a request
        // can be refused, so a refusal never leaves a body unread on a keep-alive connection.
        .layer(middleware::from_fn_with_state(state.clone(), limit::limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            intake::intake,
        ))
        .with_state(state)
}

/// Carries a request through in a task of its own, to its end whether or not its client is still
/// there. A client that goes away (killed, or timed out) closes the connection and hyper drops the
/// future serving it; a write that future asked for is committed all the same, and what follows it
/// in memory — a claim's lease and a new cue's first tick on the timer, a retry, a dispatch —
/// would be lost with the future: a claim never released, a cue that never fires.
async fn run_to_completion(req: Request, next: Next) -> Response {
    match tokio::spawn(next.run(req)).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!("a request failed: {e}");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "An internal error occurred",
            )
            .into_response()
        }
    }
}

/// A path id. One that is not valid UTF-8 cannot name anything: it reads as an id that matches
/// nothing, so the route answers its own JSON 404.
struct Id(String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Id> {
        let id = Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| id)
            .unwrap_or_default();
        // Ids are made of ASCII letters, digits and `_`: one with a NUL names nothing. PostgreSQL
        // text cannot hold a NUL at all, so it is looked up (and reported not found) with the
        // replacement character instead, the same answer on both stores.
        Ok(Id(if id.contains('\0') {
            id.replace('\0', "\u{fffd}")
        } else {
            id
        }))
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// An error answer in the reference's envelope: `{"error": {"code", "message", "status"}}`, with
/// `details` (field and message) for validation errors. The same object is mirrored under
/// `detail.error`, where FastAPI-shaped clients (the official CLI) look for it; the official SDK
/// and worker read the top-level `error`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
    details: Vec<(String, String)>,
    /// More members of the error object (`execution_id` of a conflicting fire, …).
    extra: Map<String, Value>,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: code.to_string(),
            message: message.into(),
            details: Vec::new(),
            extra: Map::new(),
        }
    }

    /// Adds a member to the error object.
    fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// A 422 naming the field at fault (`body.retry.max_attempts`, `query.limit`, …).
    fn field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        let (field, message) = (field.into(), message.into());
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "validation_error".into(),
            message: format!("{field}: {message}"),
            details: vec![(field, message)],
            extra: Map::new(),
        }
    }

    fn bad_request(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn conflict(code: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// Replaces the code of a conflict (the store says *that* it conflicts; the route knows
    /// which reference code that is).
    fn conflict_code(self, code: &str) -> ApiError {
        if self.status == StatusCode::CONFLICT {
            ApiError {
                code: code.into(),
                ..self
            }
        } else {
            self
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match e {
            Error::InvalidSchedule(m) => ApiError::bad_request("invalid_schedule", m),
            Error::Invalid {
                field: "payload",
                message,
            } => ApiError::bad_request("invalid_payload", format!("payload {message}")),
            Error::Invalid { field, message } => {
                ApiError::field(format!("body.{}", api_field(field)), message)
            }
            Error::CueNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "cue_not_found", "Cue not found")
            }
            Error::ExecutionNotFound(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                "execution_not_found",
                "Execution not found",
            ),
            Error::Conflict(m) => ApiError::conflict("conflict", m),
            Error::WorkerNotFound(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                "worker_not_found",
                "Worker not found",
            ),
            Error::AlertNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "alert_not_found", "Alert not found")
            }
            Error::NotClaimHolder(m) => {
                ApiError::new(StatusCode::FORBIDDEN, "not_execution_owner", m)
            }
            Error::Json(e) => ApiError::bad_request("invalid_json", e.to_string()),
            Error::Closed | Error::Locked(_) | Error::SchemaTooNew { .. } | Error::Open { .. } => {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    e.to_string(),
                )
            }
            ref e if crate::store::is_unwritable(e) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the database cannot be written now (a full disk or a read-only file); \
                     nothing was changed, try again later",
            ),
            Error::Storage(_) | Error::Postgres(_) | Error::Io(_) => {
                tracing::error!("request failed: {e}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "An internal error occurred",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({
            "code": self.code,
            "message": self.message,
            "status": self.status.as_u16(),
        });
        if !self.details.is_empty() {
            error["details"] = self
                .details
                .iter()
                .map(|(f, m)| json!({"field": f, "message": m}))
                .collect();
        }
        if let Some(e) = error.as_object_mut() {
            e.extend(self.extra);
        }
        json_response(
            self.status,
            &json!({ "error": error.clone(), "detail": { "error": error } }),
        )
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;

fn json_response(status: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn ok(status: StatusCode, v: Value) -> ApiResult {
    Ok(json_response(status, &v))
}

/// One page of a list, under the reference's key (`cues`, `executions`) and under `data`, the key
/// the article reads.
fn page_of(key: &str, list: Vec<Value>, total: i64, limit: i64, offset: i64) -> ApiResult {
    let list = Value::Array(list);
    let mut out = json!({"data": list, "total": total, "limit": limit, "offset": offset,
                         "has_more": offset.saturating_add(limit) < total});
    out[key] = list;
    ok(StatusCode::OK, out)
}

/// Adds `truncated` (the free-text fields that were cut) to an answer when there are any.
fn with_truncated(mut out: Value, cut: &[&str]) -> ApiResult {
    if !cut.is_empty() {
        out["truncated"] = json!(cut);
    }
    ok(StatusCode::OK, out)
}

/// Parses the (already read) request body: sent as JSON (`Content-Type: application/json`, or
/// another `application/…+json`; else 415), UTF-8 and valid JSON (400), no integer wider than 64
/// bits (422). An empty body reads as `None`, whatever its type.
///
/// The media type is required because a browser page of any origin may send a `text/plain` (or
/// untyped) body without asking the server first: a JSON body arriving that way did not come from
/// a client of this API, and is refused before it can register a user or change anything.
async fn read_body(req: Request) -> ApiResult<Option<Value>> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(json_media_type);
    // The intake has read it already, within the limit: this only takes the bytes.
    let bytes: Bytes = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the body as JSON, with Content-Type: application/json",
        ));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::bad_request("invalid_json", "Request body is not valid UTF-8"))?;
    let v = serde_json::from_str(text).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("Request body is not valid JSON ({e})"),
        )
    })?;
    if let Some(n) = wide_integer(text) {
        return Err(ApiError::field(
            "body",
            format!("the integer {n} does not fit in 64 bits; send it as a string"),
        ));
    }
    Ok(Some(v))
}

/// Whether a `Content-Type` value is JSON: `application/json` or `application/<x>+json`, any
/// parameters (`charset`) aside.
fn json_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case("+json"))
}

/// The first integer literal of a JSON text that fits neither `i64` nor `u64` (it would be read
/// as a float and change), if any.
fn wide_integer(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    let (mut i, mut in_string) = (0, false);
    while i < b.len() {
        let c = b[i];
        if in_string {
            match c {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if c == b'-' || c.is_ascii_digit() {
            let start = i;
            i += 1;
            while i < b.len() && matches!(b[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
                i += 1;
            }
            let token = &text[start..i];
            let integral = !token.contains(['.', 'e', 'E']);
            if integral && token.parse::<i64>().is_err() && token.parse::<u64>().is_err() {
                return Some(token);
            }
            continue;
        }
        i += 1;
    }
    None
}

/// The request field a store field comes from.
fn api_field(store_field: &str) -> &str {
    match store_field {
        "verification_mode" => "verification.mode",
        "outcome_deadline" => "delivery.outcome_deadline_seconds",
        "signature_scheme" => "delivery.signature_scheme",
        "catch_up" => "catch_up.policy",
        "catch_up_max" => "catch_up.max",
        other => other,
    }
}

/// A JSON body that must be an object.
async fn read_object(req: Request, required: bool) -> ApiResult<Map<String, Value>> {
    match read_body(req).await? {
        Some(Value::Object(m)) => Ok(m),
        None if !required => Ok(Map::new()),
        None => Err(ApiError::field("body", "a JSON object is required")),
        Some(_) => Err(ApiError::field("body", "must be a JSON object")),
    }
}

/// Refuses (422, naming it) the first body field a route does not know.
fn refuse_unknown(body: &Map<String, Value>, known: &[&str]) -> ApiResult<()> {
    match body.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::field(
            format!("body.{k}"),
            format!("unknown field; expected one of {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

/// Deserialises a JSON value into `T`, naming the field that does not fit.
fn typed<T: serde::de::DeserializeOwned>(v: Value) -> ApiResult<T> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "body".to_string()
        } else {
            format!("body.{path}")
        };
        ApiError::field(field, e.into_inner().to_string())
    })
}

/// The query string, parsed; lookups give 422s naming `query.<name>`.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn str(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    fn present(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    fn int(&self, name: &str, default: i64, min: i64, max: i64) -> ApiResult<i64> {
        let Some(v) = self.str(name) else {
            return Ok(default);
        };
        let n: i64 = v.trim().parse().map_err(|_| {
            ApiError::field(format!("query.{name}"), format!("{v:?} is not an integer"))
        })?;
        if !(min..=max).contains(&n) {
            return Err(ApiError::field(
                format!("query.{name}"),
                format!("must be between {min} and {max}"),
            ));
        }
        Ok(n)
    }

    fn bool(&self, name: &str) -> ApiResult<Option<bool>> {
        match self.str(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(None),
            Some("true" | "1" | "yes") => Ok(Some(true)),
            Some("false" | "0" | "no") => Ok(Some(false)),
            Some(v) => Err(ApiError::field(
                format!("query.{name}"),
                format!("{v:?} is not true or false"),
            )),
        }
    }
}

/// A destructive request goes ahead only with the header `X-Confirm-Destructive: true`; without
/// it, 400 `confirmation_required` with `message` (what it would do, and how to confirm).
fn confirmed(headers: &HeaderMap, message: &str) -> ApiResult<()> {
    let yes = headers
        .get("x-confirm-destructive")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if yes {
        Ok(())
    } else {
        Err(ApiError::bad_request("confirmation_required", message))
    }
}

/// The authenticated user of a request.
struct Auth(User);

/// The user a request's key belongs to (`None`: no user has that key), when the rate limiter
/// already looked it up.
#[derive(Clone)]
struct Authenticated(Option<User>);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Auth> {
        if let Some(Authenticated(found)) = parts.extensions.get::<Authenticated>() {
            return found.clone().map(Auth).ok_or_else(invalid_key);
        }
        let key = bearer(&parts.headers).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "Missing or invalid Authorization header",
            )
        })?;
        let user = state
            .engine
            .read(|c| c.user_by_key(key))?
            .ok_or_else(invalid_key)?;
        Ok(Auth(user))
    }
}

fn invalid_key() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
        "Invalid API key",
    )
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// An instant as ISO-8601 UTC with `Z`.
/// Parses an ISO-8601 instant given in a request (a value without an offset is UTC).
fn parse_time(field: &str, v: &Value) -> ApiResult<Millis> {
    let text = v
        .as_str()
        .ok_or_else(|| ApiError::field(field, "must be an ISO-8601 date-time string"))?;
    crate::schedule::parse_instant(text, chrono_tz::UTC)
        .map_err(|_| ApiError::field(field, format!("{text:?} is not an ISO-8601 date-time")))
}

#[cfg(test)]
mod tests {
    use super::{json_media_type, wide_integer};

    #[test]
    fn json_bodies_are_declared_json() {
        for yes in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ",
            "application/merge-patch+json",
        ] {
            assert!(json_media_type(yes), "{yes}");
        }
        for no in [
            "text/plain",
            "text/plain; charset=application/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonp",
            "application/+json",
            "json",
            "",
        ] {
            assert!(!json_media_type(no), "{no}");
        }
    }

    #[test]
    fn wide_integers_are_found_outside_strings_only() {
        assert_eq!(
            wide_integer(r#"{"a": 100000000000000000000}"#),
            Some("100000000000000000000")
        );
        assert_eq!(
            wide_integer(r#"{"a": -9223372036854775809}"#),
            Some("-9223372036854775809")
        );
        assert_eq!(
            wide_integer(r#"{"a": 18446744073709551615, "b": -9223372036854775808}"#),
            None
        );
        assert_eq!(
            wide_integer(r#"{"a": "100000000000000000000", "b\"1": 1e400}"#),
            None
        );
        assert_eq!(
            wide_integer(r#"[1.5, 2e10, 100000000000000000000.0]"#),
            None
        );
    }
}
