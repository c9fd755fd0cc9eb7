//! Pull workers: `POST /v1/worker/heartbeat`, `GET /v1/workers`, `DELETE /v1/workers/{id}`, and
//! the claim cycle on executions — list what is claimable, claim one or the next, extend the
//! lease. A worker finishes a claim through the outcome route (see `executions.rs`).

use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::{
    iso, iso_fields, ok, read_object, refuse_unknown, ApiError, ApiResult, AppState, Auth, Id,
    Query,
};
use crate::store::workers::{ClaimFilter, WorkerClaim, MAX_WORKER_ID};
use crate::Error;

/// A worker id or task name from a body field: a non-empty string of at most 255 characters.
fn name_field(body: &Map<String, Value>, field: &str, required: bool) -> ApiResult<Option<String>> {
    let path = format!("body.{field}");
    match body.get(field) {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(ApiError::field(path, "is required")),
        Some(Value::String(s)) => {
            check_name(&path, s)?;
            Ok(Some(s.clone()))
        }
        Some(_) => Err(ApiError::field(path, "must be a string")),
    }
}

fn check_name(path: &str, s: &str) -> ApiResult<()> {
    if s.trim().is_empty() {
        return Err(ApiError::field(path, "must not be empty"));
    }
    if s.chars().count() > MAX_WORKER_ID {
        return Err(ApiError::field(
            path,
            format!("is longer than {MAX_WORKER_ID} characters"),
        ));
    }
    if s.contains('\0') {
        return Err(ApiError::field(path, "must not contain NUL characters"));
    }
    Ok(())
}

pub(super) async fn heartbeat(
    State(st): State<AppState>,
    Auth(user): Auth,
    req: Request,
) -> ApiResult {
    let body = read_object(req, true).await?;
    refuse_unknown(&body, &["worker_id", "handlers"])?;
    let worker_id = name_field(&body, "worker_id", true)?.unwrap_or_default();
    let handlers = match body.get("handlers") {
        None | Some(Value::Null) => None,
        Some(Value::Array(list)) => {
            let mut names = Vec::with_capacity(list.len());
            for (i, h) in list.iter().enumerate() {
                let path = format!("body.handlers.{i}");
                let name = h
                    .as_str()
                    .ok_or_else(|| ApiError::field(&path, "must be a string"))?;
                check_name(&path, name)?;
                names.push(name.to_string());
            }
            if names.len() > 1_000 {
                return Err(ApiError::field(
                    "body.handlers",
                    "lists more than 1000 handlers",
                ));
            }
            Some(names)
        }
        Some(_) => {
            return Err(ApiError::field(
                "body.handlers",
                "must be a list of task names",
            ))
        }
    };
    let now = st
        .engine
        .worker_heartbeat(&user.id, &worker_id, handlers)
        .await?;
    ok(
        StatusCode::OK,
        json!({"acknowledged": true, "worker_id": worker_id, "server_time": iso(now)}),
    )
}

pub(super) async fn list(State(st): State<AppState>, Auth(user): Auth) -> ApiResult {
    let now = st.engine.clock().now();
    let (_, timeout) = st.engine.worker_timing();
    let mut list = st.engine.read(|c| c.workers(&user.id, now, timeout))?;
    for w in &mut list {
        if let Some(m) = w.as_object_mut() {
            iso_fields(m, &["last_heartbeat", "registered_since"]);
        }
    }
    let total = list.len();
    ok(StatusCode::OK, json!({"workers": list, "total": total}))
}

pub(super) async fn delete(
    State(st): State<AppState>,
    Auth(user): Auth,
    Id(worker_id): Id,
) -> ApiResult {
    st.engine.delete_worker(&user.id, &worker_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn claimable(
    State(st): State<AppState>,
    Auth(user): Auth,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = Query::parse(raw.as_deref());
    for name in ["task", "worker_id"] {
        if let Some(v) = q.str(name) {
            check_name(&format!("query.{name}"), v)?;
        }
    }
    let (_, live_ms) = st.engine.worker_timing();
    let filter = ClaimFilter {
        task: q.str("task").map(str::to_string),
        worker_id: q.str("worker_id").map(str::to_string),
        limit: q.int("limit", 50, 1, 100)?,
        live_ms,
    };
    let now = st.engine.clock().now();
    let mut list = st.engine.read(|c| c.claimable(&user.id, &filter, now))?;
    for e in &mut list {
        if let Some(m) = e.as_object_mut() {
            iso_fields(m, &["scheduled_for"]);
        }
    }
    let total = list.len();
    ok(StatusCode::OK, json!({"executions": list, "total": total}))
}

/// The answer to a successful claim.
fn claimed(st: &AppState, c: WorkerClaim) -> ApiResult {
    let (lease, _) = st.engine.worker_timing();
    let payload: Value = serde_json::from_str(&c.job.payload).unwrap_or(Value::Null);
    ok(
        StatusCode::OK,
        json!({
            "claimed": true,
            "execution_id": c.job.execution_id,
            "cue_id": c.job.cue_id,
            "cue_name": c.job.cue_name,
            "task": c.task,
            "payload": payload,
            "scheduled_for": iso(c.job.scheduled_for),
            "attempt": c.job.attempt,
            "idempotency_key": c.job.idempotency_key,
            "triggered_by": crate::public::trigger(&c.job.triggered_by),
            "lease_seconds": lease / 1000,
            "lease_expires_at": iso(c.lease_expires_at),
        }),
    )
}

fn claim_failed(message: impl Into<String>) -> ApiError {
    ApiError::conflict("claim_failed", message)
}

pub(super) async fn claim_one(
    State(st): State<AppState>,
    Auth(user): Auth,
    Id(id): Id,
    req: Request,
) -> ApiResult {
    let body = read_object(req, true).await?;
    refuse_unknown(&body, &["worker_id"])?;
    let worker_id = name_field(&body, "worker_id", true)?.unwrap_or_default();
    match st
        .engine
        .claim_for_worker(&user.id, Some(&id), &worker_id, None)
        .await
    {
        Ok(Some(c)) => claimed(&st, c),
        Ok(None) => Err(claim_failed(format!(
            "execution {id} was claimed by another worker first"
        ))),
        Err(Error::Conflict(m)) => Err(claim_failed(m)),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn claim_next(
    State(st): State<AppState>,
    Auth(user): Auth,
    req: Request,
) -> ApiResult {
    let body = read_object(req, true).await?;
    refuse_unknown(&body, &["worker_id", "task"])?;
    let worker_id = name_field(&body, "worker_id", true)?.unwrap_or_default();
    let task = name_field(&body, "task", false)?;
    match st
        .engine
        .claim_for_worker(&user.id, None, &worker_id, task.as_deref())
        .await?
    {
        Some(c) => claimed(&st, c),
        None => Err(claim_failed("No executions available for claiming")),
    }
}

/// `POST /v1/executions/{id}/heartbeat`: the worker (named by `X-Worker-Id` or the body's
/// `worker_id`, optional) still works on its claim; the lease runs again from now.
pub(super) async fn extend(
    State(st): State<AppState>,
    Auth(user): Auth,
    Id(id): Id,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, ApiError> {
    let body = read_object(req, false).await?;
    refuse_unknown(&body, &["worker_id"])?;
    let from_header = match headers.get("x-worker-id") {
        Some(v) => {
            let s = v.to_str().map_err(|_| {
                ApiError::bad_request("invalid_header", "X-Worker-Id must be visible ASCII text")
            })?;
            check_name("header.X-Worker-Id", s)?;
            Some(s.to_string())
        }
        None => None,
    };
    let worker_id = from_header.or(name_field(&body, "worker_id", false)?);
    let until = st
        .engine
        .extend_lease(&user.id, &id, worker_id)
        .await
        .map_err(|e| ApiError::from(e).conflict_code("execution_not_claiming"))?;
    ok(
        StatusCode::OK,
        json!({"execution_id": id, "acknowledged": true, "lease_extended_until": iso(until)}),
    )
}

// -- routes ------------------------------------------------------------------------------------

/// The schemas this file's answers refer to.
pub(super) fn schemas() -> Vec<(&'static str, Value)> {
    use super::spec::{instant, obj};
    let worker = obj(json!({
        "worker_id": {"type": "string"},
        "handlers": {
            "type": ["array", "null"], "items": {"type": "string"},
            "description": "The tasks it runs; null: it never said (any task may go to it)",
        },
        "last_heartbeat": instant(),
        "seconds_since_heartbeat": {"type": "integer", "minimum": 0},
        "heartbeat_status": {"enum": ["active", "stale", "dead"]},
        "registered_since": instant(),
        "claims": {"type": "integer", "minimum": 0},
    }));
    let claim = obj(json!({
        "claimed": {"const": true},
        "execution_id": {"type": "string"},
        "cue_id": {"type": "string"},
        "cue_name": {"type": "string"},
        "task": {"type": ["string", "null"]},
        "payload": {"description": "The execution's payload (an object)"},
        "scheduled_for": instant(),
        "attempt": {"type": "integer", "minimum": 1},
        "idempotency_key": {"type": "string", "description": "The same across retries of one occurrence"},
        "triggered_by": {"enum": crate::public::TRIGGERS},
        "lease_seconds": {"type": "integer"},
        "lease_expires_at": instant(),
    }));
    vec![("Worker", worker), ("Claim", claim)]
}

pub(super) fn routes() -> Vec<super::spec::Route> {
    use super::spec::{get, instant, int_between, obj, obj_some, post, r, tagged};
    let name = json!({"type": "string", "minLength": 1, "maxLength": MAX_WORKER_ID});
    let maybe_name =
        json!({"type": ["string", "null"], "minLength": 1, "maxLength": MAX_WORKER_ID});
    let waiting = obj(json!({
        "execution_id": {"type": "string"},
        "cue_id": {"type": "string"},
        "cue_name": {"type": "string"},
        "task": {"type": ["string", "null"]},
        "scheduled_for": instant(),
        "payload": {"description": "The execution's payload (an object)"},
        "attempt": {"type": "integer", "minimum": 0},
    }));
    let not_found: &[&str] = &["execution_not_found"];
    tagged(
        "workers",
        vec![
            post(
                "/v1/worker/heartbeat",
                "workerHeartbeat",
                "A pull worker is alive (and which tasks it runs)",
                heartbeat,
            )
            .body_example(
                obj_some(
                    json!({
                        "worker_id": name,
                        "handlers": {"type": ["array", "null"], "maxItems": 1000, "items": name},
                    }),
                    &["worker_id"],
                ),
                true,
                json!({"worker_id": "worker-1", "handlers": ["report"]}),
            )
            .answers(
                200,
                "Heard",
                obj(json!({
                    "acknowledged": {"const": true},
                    "worker_id": {"type": "string"},
                    "server_time": instant(),
                })),
            ),
            get(
                "/v1/workers",
                "listWorkers",
                "Your workers, the most recently heard from first",
                list,
            )
            .answers(
                200,
                "The workers",
                obj(json!({
                    "workers": {"type": "array", "items": r("Worker")},
                    "total": {"type": "integer", "minimum": 0},
                })),
            ),
            super::spec::delete(
                "/v1/workers/{id}",
                "deleteWorker",
                "Forget a worker; its claims wait for a claim again",
                delete,
            )
            .answers_empty(204, "Forgotten")
            .errors(404, &["worker_not_found"]),
            get(
                "/v1/executions/claimable",
                "listClaimable",
                "Executions a worker may claim now",
                claimable,
            )
            .describe(
                "Filtered (`task`, `worker_id`): oldest first. Unfiltered, as the official daemon asks \
                 (it reads the first page and skips tasks it has no handler for): the executions whose \
                 task one of your live workers registered in its heartbeat come first, in turns by \
                 task (the oldest of each such task before the second oldest of any), then everything \
                 else, oldest first. Nothing is left out: a worker finds its own work on the first \
                 page whatever else is queued.",
            )
            .query("task", "Only this task", name.clone())
            .query(
                "worker_id",
                "Only tasks this worker registered",
                name.clone(),
            )
            .query("limit", "At most this many", int_between(1, 100, 50))
            .answers(
                200,
                "Claimable executions",
                obj(json!({
                    "executions": {"type": "array", "items": waiting},
                    "total": {"type": "integer", "minimum": 0},
                })),
            )
            .errors(422, &["validation_error"]),
            post(
                "/v1/executions/claim",
                "claimNext",
                "Claim the oldest execution a worker can run",
                claim_next,
            )
            .body_example(
                obj_some(
                    json!({"worker_id": name, "task": maybe_name}),
                    &["worker_id"],
                ),
                true,
                json!({"worker_id": "worker-1"}),
            )
            .answers(200, "Claimed: run it, then report its outcome", r("Claim"))
            .errors(409, &["claim_failed"]),
            post(
                "/v1/executions/{id}/claim",
                "claimExecution",
                "Claim one execution",
                claim_one,
            )
            .body_example(
                obj(json!({"worker_id": name})),
                true,
                json!({"worker_id": "worker-1"}),
            )
            .answers(200, "Claimed: run it, then report its outcome", r("Claim"))
            .errors(404, not_found)
            .errors(409, &["claim_failed"]),
            post(
                "/v1/executions/{id}/heartbeat",
                "extendClaim",
                "A worker still works on its claim: the lease runs again from now",
                extend,
            )
            .header(
                "X-Worker-Id",
                "The worker (only the holder may extend)",
                name.clone(),
            )
            .body_example(
                obj_some(json!({"worker_id": maybe_name}), &[]),
                false,
                json!({"worker_id": "worker-1"}),
            )
            .answers(
                200,
                "Extended",
                obj(json!({
                    "execution_id": {"type": "string"},
                    "acknowledged": {"const": true},
                    "lease_extended_until": instant(),
                })),
            )
            .errors(400, &["invalid_header"])
            .errors(403, &["not_execution_owner"])
            .errors(404, not_found)
            .errors(409, &["execution_not_claiming"]),
        ],
    )
}
