//! `/v1/cues`: create, list, read, change (PATCH keeps what is not sent), delete (one or in bulk),
//! fire.

use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{json, Map, Value};

use super::executions::filter_from;
use super::{ok, parse_time, read_object, ApiError, ApiResult, AppState, Auth, Id, Query};
use crate::engine::{FireRequest, SetStatus};
use crate::public::execution as execution_out;
use crate::store::{self, CueSpec, RetrySpec};

/// The default outcome deadline of cues made over the API: a handler that never reports is
/// noticed after five minutes.
const DEFAULT_OUTCOME_DEADLINE_S: i64 = 300;

fn spec_default(name: String) -> CueSpec {
    CueSpec {
        name,
        description: None,
        transport: "webhook".into(),
        cron: None,
        at: None,
        every: None,
        timezone: "UTC".into(),
        payload: json!({}),
        retry: None,
        outcome_deadline_seconds: Some(DEFAULT_OUTCOME_DEADLINE_S),
        verification_mode: None,
        overlap: "skip".into(),
        catch_up: "once".into(),
        catch_up_max: 100,
        on_failure_pause: false,
        callback_url: None,
        callback_method: "POST".into(),
        callback_headers: Default::default(),
        delivery_timeout_seconds: 30,
        signature_scheme: "v1".into(),
        on_failure_email: true,
        on_failure_webhook: None,
        claim_timeout_seconds: 900,
        alert_consecutive_failures: 3,
        on_success_fire: None,
        required_payload_keys: None,
        require_payload_override: false,
    }
}

/// Typed readers for body fields; each error names the field.
struct Field<'a> {
    path: String,
    v: &'a Value,
}

impl<'a> Field<'a> {
    fn str(&self) -> ApiResult<String> {
        self.v
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ApiError::field(&self.path, "must be a string"))
    }
    fn opt_str(&self) -> ApiResult<Option<String>> {
        if self.v.is_null() {
            Ok(None)
        } else {
            self.str().map(Some)
        }
    }
    fn bool(&self) -> ApiResult<bool> {
        self.v
            .as_bool()
            .ok_or_else(|| ApiError::field(&self.path, "must be true or false"))
    }
    fn int(&self) -> ApiResult<i64> {
        self.v
            .as_i64()
            .ok_or_else(|| ApiError::field(&self.path, "must be an integer"))
    }
    fn object(&self) -> ApiResult<&'a Map<String, Value>> {
        self.v
            .as_object()
            .ok_or_else(|| ApiError::field(&self.path, "must be an object"))
    }
}

/// Walks an object's keys, refusing any not in `known`.
fn fields<'a>(
    path: &str,
    m: &'a Map<String, Value>,
    known: &[&str],
) -> ApiResult<Vec<(&'a str, Field<'a>)>> {
    let mut out = Vec::with_capacity(m.len());
    for (k, v) in m {
        let p = format!("{path}.{k}");
        if !known.contains(&k.as_str()) {
            return Err(ApiError::field(
                p,
                format!("unknown field; expected one of {}", known.join(", ")),
            ));
        }
        out.push((k.as_str(), Field { path: p, v }));
    }
    Ok(out)
}

const TOP_FIELDS: &[&str] = &[
    "name",
    "description",
    "status",
    "transport",
    "schedule",
    "callback",
    "payload",
    "retry",
    "delivery",
    "on_failure",
    "verification",
    "alerts",
    "catch_up",
    "catch_up_max",
    "overlap",
    "on_success_fire",
    "required_payload_keys",
    "require_payload_override",
];

/// Applies a create or PATCH body to a spec. Returns the status a PATCH asks for.
fn apply_body(
    spec: &mut CueSpec,
    body: &Map<String, Value>,
    creating: bool,
) -> ApiResult<Option<String>> {
    let mut status = None;
    for (key, f) in fields("body", body, TOP_FIELDS)? {
        match key {
            "name" => spec.name = f.str()?,
            "description" => spec.description = f.opt_str()?,
            "status" => {
                if creating {
                    return Err(ApiError::field(
                        f.path,
                        "cannot be set on create; a new cue is active (PATCH it to pause)",
                    ));
                }
                let s = f.str()?;
                if !matches!(s.as_str(), "active" | "paused") {
                    return Err(ApiError::field(f.path, "must be \"active\" or \"paused\""));
                }
                status = Some(s);
            }
            "transport" => {
                let t = f.str()?;
                if !matches!(t.as_str(), "webhook" | "worker") {
                    return Err(ApiError::field(f.path, "must be \"webhook\" or \"worker\""));
                }
                if !creating && t != spec.transport {
                    return Err(ApiError::field(
                        f.path,
                        "cannot be changed; create a new cue instead",
                    ));
                }
                spec.transport = t;
            }
            "schedule" => apply_schedule(spec, &f)?,
            "callback" => {
                for (k, g) in fields(&f.path, f.object()?, &["url", "method", "headers"])? {
                    match k {
                        "url" => spec.callback_url = g.opt_str()?,
                        "method" => spec.callback_method = g.str()?.to_ascii_uppercase(),
                        _ => {
                            spec.callback_headers = if g.v.is_null() {
                                Default::default()
                            } else {
                                serde_json::from_value(g.v.clone()).map_err(|_| {
                                    ApiError::field(&g.path, "must be an object of strings")
                                })?
                            }
                        }
                    }
                }
            }
            "payload" => {
                spec.payload = if f.v.is_null() {
                    json!({})
                } else {
                    f.object()?;
                    f.v.clone()
                }
            }
            "retry" => {
                let mut retry = spec.retry.clone().unwrap_or(RetrySpec {
                    max_attempts: 3,
                    backoff_minutes: vec![1.0, 5.0, 15.0],
                    retry_reported_failures: false,
                });
                if !f.v.is_null() {
                    let known = ["max_attempts", "backoff_minutes", "retry_reported_failures"];
                    for (k, g) in fields(&f.path, f.object()?, &known)? {
                        match k {
                            "max_attempts" => retry.max_attempts = g.int()?,
                            "retry_reported_failures" => {
                                retry.retry_reported_failures = g.bool()?
                            }
                            _ => {
                                retry.backoff_minutes = serde_json::from_value(g.v.clone())
                                    .map_err(|_| {
                                        ApiError::field(
                                            &g.path,
                                            "must be a list of numbers of minutes",
                                        )
                                    })?;
                            }
                        }
                    }
                }
                spec.retry = Some(retry);
            }
            "delivery" => {
                let known = [
                    "timeout_seconds",
                    "outcome_deadline_seconds",
                    "signature_scheme",
                    "claim_timeout_seconds",
                ];
                for (k, g) in fields(&f.path, f.object()?, &known)? {
                    match k {
                        "timeout_seconds" => spec.delivery_timeout_seconds = g.int()?,
                        "claim_timeout_seconds" => spec.claim_timeout_seconds = g.int()?,
                        "outcome_deadline_seconds" => {
                            spec.outcome_deadline_seconds =
                                if g.v.is_null() { None } else { Some(g.int()?) }
                        }
                        _ => spec.signature_scheme = g.str()?,
                    }
                }
            }
            "on_failure" => {
                if f.v.is_null() {
                    spec.on_failure_email = true;
                    spec.on_failure_webhook = None;
                    spec.on_failure_pause = false;
                    continue;
                }
                for (k, g) in fields(&f.path, f.object()?, &["email", "webhook", "pause"])? {
                    match k {
                        "email" => spec.on_failure_email = g.bool()?,
                        "pause" => spec.on_failure_pause = g.bool()?,
                        _ => {
                            spec.on_failure_webhook = match g.v {
                                Value::Null => None,
                                Value::String(s) => Some(s.clone()),
                                Value::Object(m) => {
                                    for (k2, h) in fields(&g.path, m, &["url", "method"])? {
                                        if k2 == "method" && !h.str()?.eq_ignore_ascii_case("POST")
                                        {
                                            return Err(ApiError::field(
                                                h.path,
                                                "failure webhooks are sent with POST",
                                            ));
                                        }
                                    }
                                    match m.get("url") {
                                        Some(u) => Field {
                                            path: format!("{}.url", g.path),
                                            v: u,
                                        }
                                        .opt_str()?,
                                        None => {
                                            return Err(ApiError::field(
                                                format!("{}.url", g.path),
                                                "is required",
                                            ))
                                        }
                                    }
                                }
                                _ => {
                                    return Err(ApiError::field(
                                        g.path,
                                        "must be a URL string or an object with a url",
                                    ))
                                }
                            }
                        }
                    }
                }
            }
            "alerts" => {
                if f.v.is_null() {
                    spec.alert_consecutive_failures = 3;
                    continue;
                }
                for (_, g) in fields(&f.path, f.object()?, &["consecutive_failures"])? {
                    spec.alert_consecutive_failures = g.int()?;
                }
            }
            "verification" => {
                spec.verification_mode = if f.v.is_null() {
                    None
                } else {
                    let mut mode = None;
                    for (_, g) in fields(&f.path, f.object()?, &["mode"])? {
                        mode = g.opt_str()?;
                    }
                    mode
                }
            }
            "catch_up" => match f.v {
                Value::String(s) => spec.catch_up = s.clone(),
                Value::Object(m) => {
                    for (k, g) in fields(&f.path, m, &["policy", "max"])? {
                        if k == "policy" {
                            spec.catch_up = g.str()?;
                        } else {
                            spec.catch_up_max = g.int()?;
                        }
                    }
                }
                _ => {
                    return Err(ApiError::field(
                        f.path,
                        "must be \"run_once_if_missed\", \"skip_missed\", \"replay_all\" \
                         (or \"once\", \"skip\", \"all\", or {\"policy\", \"max\"})",
                    ))
                }
            },
            "catch_up_max" => spec.catch_up_max = f.int()?,
            "on_success_fire" => spec.on_success_fire = f.opt_str()?,
            "required_payload_keys" => {
                spec.required_payload_keys = if f.v.is_null() {
                    None
                } else {
                    Some(serde_json::from_value(f.v.clone()).map_err(|_| {
                        ApiError::field(&f.path, "must be a list of strings (or null)")
                    })?)
                }
            }
            "require_payload_override" => spec.require_payload_override = f.bool()?,
            _ => spec.overlap = f.str()?,
        }
    }
    Ok(status)
}

fn apply_schedule(spec: &mut CueSpec, f: &Field<'_>) -> ApiResult<()> {
    let m = f.object()?;
    let known = ["type", "cron", "at", "every", "every_seconds", "timezone"];
    let mut kind = None;
    let (mut cron, mut at, mut every) = (None, None, None);
    for (k, g) in fields(&f.path, m, &known)? {
        match k {
            "type" => kind = Some(g.str()?),
            "cron" => cron = g.opt_str()?,
            "at" => at = g.opt_str()?,
            "every" => every = g.opt_str()?,
            "every_seconds" => every = Some(format!("{}s", g.int()?)),
            _ => spec.timezone = g.str()?,
        }
    }
    let kind = match kind {
        Some(k) => k,
        None if cron.is_some() => "recurring".into(),
        None if at.is_some() => "once".into(),
        None if every.is_some() => "interval".into(),
        None => return Err(ApiError::field(format!("{}.type", f.path), "is required")),
    };
    let missing = |what: &str| {
        ApiError::bad_request(
            "invalid_schedule",
            format!("a {what} is required for a {kind} schedule"),
        )
    };
    let (c, a, e) = match kind.as_str() {
        "recurring" => (
            Some(cron.ok_or_else(|| missing("cron expression"))?),
            None,
            None,
        ),
        "once" => (None, Some(at.ok_or_else(|| missing("time (`at`)"))?), None),
        "interval" => (
            None,
            None,
            Some(every.ok_or_else(|| missing("period (`every`)"))?),
        ),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_schedule",
                "schedule.type must be \"recurring\", \"once\" or \"interval\"",
            ))
        }
    };
    spec.cron = c;
    spec.at = a;
    spec.every = e;
    Ok(())
}

/// Checks where a spec's URLs point (SSRF guard). A host that does not resolve now is accepted
/// with a warning: it is checked again at every delivery.
async fn check_targets(st: &AppState, spec: &CueSpec) -> ApiResult<Option<String>> {
    let mut warning = None;
    let urls = [
        (
            "callback.url",
            spec.callback_url
                .as_deref()
                .filter(|_| spec.transport == "webhook"),
        ),
        ("on_failure.webhook", spec.on_failure_webhook.as_deref()),
    ];
    for (field, url) in urls {
        let Some(raw) = url.map(str::trim).filter(|u| !u.is_empty()) else {
            continue;
        };
        if let Some(w) = check_url(st, field, raw, "invalid_callback_url").await? {
            warning = Some(w);
        }
    }
    Ok(warning)
}

/// Checks an outbound URL against the guard: refused (400 `code`) when it is not a valid http(s)
/// URL or resolves to a refused address; a warning when it cannot be resolved yet (it is checked
/// again at every delivery).
pub(super) async fn check_url(
    st: &AppState,
    field: &str,
    raw: &str,
    code: &str,
) -> ApiResult<Option<String>> {
    let parsed = crate::delivery::check_url_syntax(raw)
        .and_then(|u| reqwest::Url::parse(&u).map_err(|e| e.to_string()))
        .map_err(|m| ApiError::bad_request(code, format!("{field}: {m}")))?;
    let host = parsed.host_str().unwrap_or_default().to_string();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let policy = st.engine.policy();
    let looked = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        policy.resolve(&host, port),
    )
    .await;
    match looked {
        Ok(Ok(_)) => Ok(None),
        Ok(Err(m)) if m.starts_with("cannot resolve") => Ok(Some(format!(
            "{field}: {m}; deliveries will fail (and be retried) until it resolves"
        ))),
        Ok(Err(m)) => Err(ApiError::bad_request(code, format!("{field}: {m}"))),
        Err(_) => Ok(Some(format!(
            "{field}: resolving {host} timed out; it is checked again at every delivery"
        ))),
    }
}

/// An unknown time zone is a 422 `invalid_timezone`, as in the reference.
fn check_timezone(spec: &CueSpec) -> ApiResult<()> {
    crate::schedule::parse_timezone(&spec.timezone)
        .map(|_| ())
        .map_err(|_| {
            let mut e = ApiError::field(
                "body.schedule.timezone",
                format!("Unknown timezone: {:?}", spec.timezone),
            );
            e.code = "invalid_timezone".into();
            e
        })
}

fn owned_cue(st: &AppState, owner: &str, id: &str) -> ApiResult<Value> {
    let v = st.engine.read(|c| c.cue_json(id));
    match v {
        Ok(v) if v.get("owner").and_then(Value::as_str) == Some(owner) => Ok(v),
        Ok(_) | Err(crate::Error::CueNotFound(_)) => {
            Err(crate::Error::CueNotFound(id.to_string()).into())
        }
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn create(
    State(st): State<AppState>,
    Auth(user): Auth,
    req: Request,
) -> ApiResult {
    let body = read_object(req, true).await?;
    let name = match body.get("name") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(ApiError::field("body.name", "must be a string")),
        None => return Err(ApiError::field("body.name", "is required")),
    };
    if body.get("schedule").is_none() {
        return Err(ApiError::field("body.schedule", "is required"));
    }
    let mut spec = spec_default(name);
    apply_body(&mut spec, &body, true)?;
    check_timezone(&spec)?;
    let warning = check_targets(&st, &spec).await?;
    let id = st
        .engine
        .create_cue(&user.id, spec)
        .await
        .map_err(|e| ApiError::from(e).conflict_code("duplicate_cue_name"))?;
    // Read back outside the writer: the writer's time is the server's scarcest resource.
    let cue = st.engine.read(|c| c.cue_json(&id))?;
    ok(StatusCode::CREATED, crate::public::cue(cue, warning))
}

pub(super) async fn list(
    State(st): State<AppState>,
    Auth(user): Auth,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = Query::parse(raw.as_deref());
    let limit = q.int("limit", 50, 1, 1000)?;
    let offset = q.int("offset", 0, 0, i64::MAX)?;
    let status = q.str("status").filter(|s| *s != "all");
    if let Some(s) = status {
        if !matches!(s, "active" | "paused" | "completed" | "failed") {
            return Err(ApiError::field(
                "query.status",
                "must be one of active, paused, completed, failed, all",
            ));
        }
    }
    let cues = st.engine.read(|c| {
        let (ids, total) = c.cue_page(&user.id, status, limit, offset)?;
        let list = ids
            .iter()
            .map(|id| c.cue_json(id).map(|v| crate::public::cue(v, None)))
            .collect::<crate::Result<Vec<_>>>()?;
        Ok((list, total))
    })?;
    let (list, total) = cues;
    super::page_of("cues", list, total, limit, offset)
}

pub(super) async fn get_one(
    State(st): State<AppState>,
    Auth(user): Auth,
    Id(id): Id,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = Query::parse(raw.as_deref());
    let limit = q.int("execution_limit", 10, 1, 100)?;
    let offset = q.int("execution_offset", 0, 0, i64::MAX)?;
    let cue = owned_cue(&st, &user.id, &id)?;
    let filter = store::ExecutionFilter {
        cue_id: Some(id.clone()),
        limit: Some(limit),
        offset: Some(offset),
        ..Default::default()
    };
    let (execs, total) = st.engine.read(|c| {
        Ok((
            c.list_executions(&user.id, &filter)?,
            c.count_executions(&user.id, &filter)?,
        ))
    })?;
    let mut out = crate::public::cue(cue, None);
    if let Some(m) = out.as_object_mut() {
        m.insert(
            "executions".into(),
            execs.into_iter().map(execution_out).collect(),
        );
        m.insert("execution_total".into(), total.into());
        m.insert("execution_limit".into(), limit.into());
        m.insert("execution_offset".into(), offset.into());
    }
    ok(StatusCode::OK, out)
}

pub(super) async fn update(
    State(st): State<AppState>,
    Auth(user): Auth,
    Id(id): Id,
    req: Request,
) -> ApiResult {
    let body = read_object(req, true).await?;
    let mut spec = st.engine.read(|c| c.cue_spec(&user.id, &id))?;
    let status = apply_body(&mut spec, &body, false)?;
    check_timezone(&spec)?;
    let warning = check_targets(&st, &spec).await?;
    let set_status = match status.as_deref() {
        Some("paused") => Some(SetStatus::Paused),
        Some("active") => Some(SetStatus::Active),
        _ => None,
    };
    st.engine
        .update_cue(&user.id, &id, spec, set_status)
        .await
        .map_err(|e| ApiError::from(e).conflict_code("duplicate_cue_name"))?;
    let cue = st.engine.read(|c| c.cue_json(&id))?;
    ok(StatusCode::OK, crate::public::cue(cue, warning))
}

pub(super) async fn delete(State(st): State<AppState>, Auth(user): Auth, Id(id): Id) -> ApiResult {
    let done = st.engine.delete_cues(&user.id, vec![id.clone()]).await?;
    if done.deleted.is_empty() {
        return Err(crate::Error::CueNotFound(id).into());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The most cues one bulk delete takes.
const MAX_BULK_DELETE: usize = 100;

/// `POST /v1/cues/bulk-delete`: deletes each of the caller's cues named in `ids` as the single
/// DELETE does; ids that name no cue of the caller (or name one again) are skipped. Both lists
/// keep the order of the request.
pub(super) async fn bulk_delete(
    State(st): State<AppState>,
    Auth(user): Auth,
    headers: HeaderMap,
    req: Request,
) -> ApiResult {
    super::confirmed(
        &headers,
        "This deletes the cues and their history at once; send the header X-Confirm-Destructive: true to confirm",
    )?;
    let body = read_object(req, true).await?;
    super::refuse_unknown(&body, &["ids"])?;
    let list = match body.get("ids") {
        None | Some(Value::Null) => return Err(ApiError::field("body.ids", "is required")),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(ApiError::field("body.ids", "must be a list of cue ids")),
    };
    if list.is_empty() || list.len() > MAX_BULK_DELETE {
        return Err(ApiError::field(
            "body.ids",
            format!(
                "must hold 1 to {MAX_BULK_DELETE} cue ids (got {})",
                list.len()
            ),
        ));
    }
    let mut ids = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        match v.as_str() {
            Some(id) => ids.push(id.to_string()),
            None => return Err(ApiError::field(format!("body.ids.{i}"), "must be a string")),
        }
    }
    let done = st.engine.delete_cues(&user.id, ids).await?;
    ok(
        StatusCode::OK,
        json!({"deleted": done.deleted, "skipped": done.skipped}),
    )
}

pub(super) async fn fire(
    State(st): State<AppState>,
    Auth(user): Auth,
    Id(id): Id,
    req: Request,
) -> ApiResult {
    let body = read_object(req, false).await?;
    let cue = owned_cue(&st, &user.id, &id)?;
    let known = [
        "send_at",
        "payload_override",
        "merge_strategy",
        "idempotency_key",
        "exit_criteria",
    ];
    let (mut send_at, mut over, mut strategy, mut key) = (None, None, "merge".to_string(), None);
    for (k, f) in fields("body", &body, &known)? {
        match k {
            "send_at" if !f.v.is_null() => send_at = Some(parse_time(&f.path, f.v)?),
            "payload_override" if !f.v.is_null() => over = Some(f.object()?.clone()),
            "merge_strategy" if !f.v.is_null() => {
                strategy = f.str()?;
                if !matches!(strategy.as_str(), "merge" | "replace") {
                    return Err(ApiError::field(f.path, "must be \"merge\" or \"replace\""));
                }
            }
            "idempotency_key" if !f.v.is_null() => {
                let k = f.str()?;
                if k.is_empty() || k.len() > 255 {
                    return Err(ApiError::field(f.path, "must be 1 to 255 characters"));
                }
                key = Some(k);
            }
            _ => {}
        }
    }
    let overridden = over.is_some();
    let cue_payload = cue
        .get("payload")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let payload = over.map(|o| {
        if strategy == "replace" {
            Value::Object(o)
        } else {
            let mut base = cue_payload.clone();
            base.extend(o);
            Value::Object(base)
        }
    });
    if cue.get("require_payload_override") == Some(&Value::Bool(true)) && !overridden {
        return Err(ApiError::bad_request(
            "payload_override_required",
            "this cue requires a payload_override on every manual fire (require_payload_override)",
        ));
    }
    if let Some(Value::Array(keys)) = cue.get("required_payload_keys") {
        let have = payload
            .as_ref()
            .and_then(Value::as_object)
            .unwrap_or(&cue_payload);
        let missing: Vec<&str> = keys
            .iter()
            .filter_map(Value::as_str)
            .filter(|k| !have.contains_key(*k))
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::bad_request(
                "missing_payload_keys",
                format!(
                    "the payload lacks the keys this cue requires (required_payload_keys): {}",
                    missing.join(", ")
                ),
            )
            .with("missing_keys", missing));
        }
    }
    // The request a key was first used with, to refuse the same key with another one.
    let mut request = body.clone();
    request.remove("idempotency_key");
    let digest = crate::signing::sha256_hex(
        crate::signing::canonical_json(&Value::Object(request)).as_bytes(),
    );
    let req = FireRequest {
        payload,
        send_at,
        key: key.map(|key| (key, digest)),
    };
    let (fired, exec) = st.engine.fire_cue(&user.id, &id, req).await?;
    let Some(exec) = exec else {
        return Err(ApiError::conflict(
            "idempotency_key_conflict",
            format!(
                "this idempotency_key was used within the last 24 hours for execution {} with another \
                 request; use a new key, or send the same request to get that execution",
                fired.id
            ),
        )
        .with("execution_id", fired.id.clone()));
    };
    let mut out = execution_out(exec);
    if let Some(m) = out.as_object_mut() {
        m.insert("execution_id".into(), fired.id.clone().into());
        m.insert("created".into(), fired.created.into());
    }
    ok(StatusCode::OK, out)
}

pub(super) async fn executions(
    State(st): State<AppState>,
    Auth(user): Auth,
    Id(id): Id,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    owned_cue(&st, &user.id, &id)?;
    let q = Query::parse(raw.as_deref());
    let filter = filter_from(&q, Some(id), st.engine.clock().now(), 50)?;
    super::executions::page(&st, &user.id, filter)
}

// -- routes ------------------------------------------------------------------------------------

/// A cue as the API shows it.
fn cue_schema() -> Value {
    use super::spec::{instant, instant_or_null, obj, obj_some, or_null, text_or_null};
    obj(json!({
        "id": {"type": "string"},
        "name": {"type": "string"},
        "description": text_or_null(),
        "status": {"enum": ["active", "paused", "completed", "failed"]},
        "transport": {"enum": ["webhook", "worker", "local"]},
        "schedule": obj_some(json!({
            "type": {"enum": ["recurring", "once", "interval"]},
            "cron": {"type": "string"},
            "at": instant(),
            "every": {"type": "string", "description": "The period in seconds, as `<n>s`"},
            "timezone": {"type": "string"},
        }), &["type", "timezone"]),
        "payload": {"type": ["object", "null"]},
        "retry": obj(json!({
            "max_attempts": {"type": "integer"},
            "backoff_minutes": {"type": "array", "items": {"type": "number"}},
            "retry_reported_failures": {
                "type": "boolean",
                "description": "Whether reported failures are retried too (by default they are final)",
            },
        })),
        "verification": or_null(obj(json!({"mode": {"enum": crate::model::VERIFICATION_MODES}}))),
        "overlap": {"enum": ["skip", "allow"]},
        "catch_up": {"enum": ["run_once_if_missed", "skip_missed", "replay_all"]},
        "catch_up_max": {"type": "integer", "description": "The most missed ticks replay_all runs"},
        "on_success_fire": {
            "type": ["string", "null"],
            "description": "The cue fired (triggered_by chain) when an execution of this one succeeds",
        },
        "required_payload_keys": {
            "type": ["array", "null"],
            "items": {"type": "string"},
            "description": "Keys a manual fire's payload must have",
        },
        "require_payload_override": {"type": "boolean"},
        "on_failure": obj(json!({
            "pause": {"type": "boolean"},
            "email": {"type": "boolean"},
            "webhook": text_or_null(),
        })),
        "callback": obj(json!({
            "url": text_or_null(),
            "method": {"enum": ["POST", "GET", "PUT", "PATCH"]},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        })),
        "delivery": obj(json!({
            "timeout_seconds": {"type": "integer"},
            "outcome_deadline_seconds": {"type": ["integer", "null"]},
            "signature_scheme": {"enum": ["v1", "sha256"]},
            "claim_timeout_seconds": {"type": "integer"},
        })),
        "alerts": obj(json!({"consecutive_failures": {"type": "integer"}})),
        "next_run": instant_or_null(),
        "last_run": instant_or_null(),
        "run_count": {"type": "integer"},
        "fired_count": {"type": "integer"},
        "created_at": instant(),
        "updated_at": instant(),
        "warning": {
            "type": ["string", "null"],
            "description": "Set when a URL's host could not be resolved yet: it is checked again at every delivery",
        },
    }))
}

/// The body of a create (`creating`) or of a PATCH: a PATCH keeps what it does not send.
fn cue_body_schema(creating: bool) -> Value {
    use super::spec::{obj_some, or_null};
    let url = json!({"type": ["string", "null"], "description": "An http(s) URL"});
    let mut props = json!({
        "name": {"type": "string", "minLength": 1, "maxLength": 255},
        "description": {"type": ["string", "null"]},
        "transport": {"enum": ["webhook", "worker"], "default": "webhook"},
        "schedule": obj_some(json!({
            "type": {"enum": ["recurring", "once", "interval"], "description": "Inferred from the field given when left out"},
            "cron": {"type": ["string", "null"], "description": "5 fields (Vixie cron), optional seconds and year"},
            "at": {"type": ["string", "null"], "description": "An ISO-8601 instant (for `once`)"},
            "every": {"type": ["string", "null"], "description": "A period such as `90s`, `15m`, `1h` (for `interval`)"},
            "every_seconds": {"type": "integer"},
            "timezone": {"type": "string", "description": "An IANA zone", "default": "UTC"},
        }), &[]),
        "callback": obj_some(json!({
            "url": url,
            "method": {"enum": ["POST", "GET", "PUT", "PATCH"]},
            "headers": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
        }), &[]),
        "payload": {"type": ["object", "null"]},
        "retry": or_null(obj_some(json!({
            "max_attempts": {"type": "integer", "minimum": 0, "maximum": 10},
            "backoff_minutes": {"type": "array", "maxItems": 10, "items": {"type": "number", "minimum": 0}},
            "retry_reported_failures": {"type": "boolean", "default": false},
        }), &[])),
        "delivery": obj_some(json!({
            "timeout_seconds": {"type": "integer", "minimum": 1, "maximum": 3600},
            "outcome_deadline_seconds": {"type": ["integer", "null"], "minimum": 1, "maximum": 604_800},
            "signature_scheme": {"enum": ["v1", "sha256"]},
            "claim_timeout_seconds": {"type": "integer", "minimum": 1, "maximum": 2_592_000},
        }), &[]),
        "on_failure": or_null(obj_some(json!({
            "email": {"type": "boolean"},
            "pause": {"type": "boolean"},
            "webhook": {"anyOf": [
                {"type": ["string", "null"]},
                obj_some(json!({"url": url, "method": {"const": "POST"}}), &["url"]),
            ]},
        }), &[])),
        "verification": or_null(obj_some(json!({
            "mode": {"anyOf": [{"enum": crate::model::VERIFICATION_MODES}, {"type": "null"}]},
        }), &[])),
        "alerts": or_null(obj_some(json!({
            "consecutive_failures": {"type": "integer", "minimum": 1, "maximum": 10_000},
        }), &[])),
        "catch_up": {"anyOf": [
            {"enum": ["run_once_if_missed", "skip_missed", "replay_all", "skip", "once", "all"]},
            obj_some(json!({
                "policy": {"enum": ["run_once_if_missed", "skip_missed", "replay_all", "skip", "once", "all"]},
                "max": {"type": "integer", "minimum": 1, "maximum": 100_000},
            }), &[]),
        ]},
        "catch_up_max": {"type": "integer", "minimum": 1, "maximum": 100_000},
        "overlap": {"enum": ["skip", "allow"]},
        "on_success_fire": {
            "type": ["string", "null"],
            "description": "One of your cues (cue_…) to fire when an execution of this one succeeds; no loops",
        },
        "required_payload_keys": {
            "type": ["array", "null"],
            "maxItems": 50,
            "items": {"type": "string", "minLength": 1, "maxLength": 255},
        },
        "require_payload_override": {"type": "boolean"},
    });
    if creating {
        obj_some(props, &["name", "schedule"])
    } else {
        props["status"] = json!({"enum": ["active", "paused"]});
        obj_some(props, &[])
    }
}

/// The schemas this file's answers refer to.
pub(super) fn schemas() -> Vec<(&'static str, Value)> {
    use super::spec::{extend, r};
    let detail = extend(
        cue_schema(),
        json!({
            "executions": {"type": "array", "items": r("Execution")},
            "execution_total": {"type": "integer"},
            "execution_limit": {"type": "integer"},
            "execution_offset": {"type": "integer"},
        }),
    );
    vec![("Cue", cue_schema()), ("CueDetail", detail)]
}

pub(super) fn routes() -> Vec<super::spec::Route> {
    use super::spec::{get, int_between, offset, page, patch, post, r, tagged};
    let not_found: &[&str] = &["cue_not_found"];
    let refused: &[&str] = &[
        "invalid_schedule",
        "invalid_payload",
        "invalid_callback_url",
    ];
    let example = json!({
        "name": "nightly-report",
        "schedule": {"type": "recurring", "cron": "0 3 * * *", "timezone": "Europe/Paris"},
        "transport": "worker",
        "payload": {"task": "report"},
    });
    let mut routes = vec![
        post("/v1/cues", "createCue", "Create a cue", create)
            .body_example(cue_body_schema(true), true, example)
            .answers(201, "The cue", r("Cue"))
            .errors(400, refused)
            .errors(409, &["duplicate_cue_name"])
            .errors(422, &["invalid_timezone"]),
        get("/v1/cues", "listCues", "Your cues, oldest first", list)
            .query("status", "Only cues in this status", json!({"enum": ["active", "paused", "completed", "failed", "all"]}))
            .query("limit", "Page size", int_between(1, 1000, 50))
            .query("offset", "Cues to skip", offset())
            .answers(200, "A page of cues", page("cues", r("Cue")))
            .errors(422, &["validation_error"]),
        get("/v1/cues/{id}", "getCue", "One cue, with its latest executions", get_one)
            .query("execution_limit", "Executions shown", int_between(1, 100, 10))
            .query("execution_offset", "Executions skipped", offset())
            .answers(200, "The cue", r("CueDetail"))
            .errors(404, not_found)
            .errors(422, &["validation_error"]),
        patch("/v1/cues/{id}", "updateCue", "Change a cue; what is not sent is kept", update)
            .describe("`status` pauses or resumes it; the transport cannot change.")
            .body_example(cue_body_schema(false), true, json!({"status": "paused"}))
            .answers(200, "The cue", r("Cue"))
            .errors(400, refused)
            .errors(404, not_found)
            .errors(409, &["duplicate_cue_name"])
            .errors(422, &["invalid_timezone"]),
        super::spec::delete("/v1/cues/{id}", "deleteCue", "Delete a cue and its history", delete)
            .answers_empty(204, "Deleted")
            .errors(404, not_found),
        post("/v1/cues/bulk-delete", "bulkDeleteCues", "Delete up to 100 cues and their history", bulk_delete)
            .describe(
                "Each cue is deleted as `DELETE /v1/cues/{id}` does; ids that name none of your cues \
                 (or name one again) are skipped, not refused. Both lists keep the order of `ids`.",
            )
            .header(
                "X-Confirm-Destructive",
                "`true` to confirm: the cues and their history are deleted at once",
                json!({"type": "string", "enum": ["true"]}),
            )
            .body_example(
                super::spec::obj(json!({"ids": {
                    "type": "array", "minItems": 1, "maxItems": MAX_BULK_DELETE,
                    "items": {"type": "string"},
                }})),
                true,
                json!({"ids": ["cue_01jz8k2x7q3m4n5p6r7s8t9v0w"]}),
            )
            .answers(200, "What was deleted and what was skipped", super::spec::obj(json!({
                "deleted": {"type": "array", "items": {"type": "string"}},
                "skipped": {"type": "array", "items": {"type": "string"}},
            })))
            .errors(400, &["confirmation_required"]),
        post("/v1/cues/{id}/fire", "fireCue", "Run a cue now (or at `send_at`), outside its schedule", fire)
            .body_example(
                super::spec::obj_some(json!({
                    "send_at": {"type": ["string", "null"], "format": "date-time"},
                    "payload_override": {"type": ["object", "null"]},
                    "merge_strategy": {"anyOf": [{"enum": ["merge", "replace"]}, {"type": "null"}]},
                    "idempotency_key": {"type": ["string", "null"], "minLength": 1, "maxLength": 255},
                    "exit_criteria": {"description": "Accepted and ignored (the reference's field)"},
                }), &[]),
                false,
                json!({"payload_override": {"note": "by hand"}}),
            )
            .answers(200, "The execution it created (or the one an idempotency key names)", r("FiredExecution"))
            .describe(
                "A cue with `require_payload_override` takes only fires with a `payload_override`; one with \
                 `required_payload_keys` only fires whose payload (after the override) has those keys. The \
                 same `idempotency_key` within 24 hours gives the same execution back; with another request \
                 it is a 409 `idempotency_key_conflict` naming that execution (`execution_id`).",
            )
            .errors(400, &["payload_override_required", "missing_payload_keys"])
            .errors(409, &["idempotency_key_conflict"])
            .errors(404, not_found),
        get("/v1/cues/{id}/executions", "listCueExecutions", "A cue's executions, newest first", executions)
            .answers(200, "A page of executions", page("executions", r("Execution")))
            .errors(404, not_found),
    ];
    if let Some(last) = routes.pop() {
        routes.push(super::executions::filters(last, 50));
    }
    tagged("cues", routes)
}
