//! `/v1/executions`: history with filters, one execution, outcomes (write-once), evidence
//! appended later, verification, replay.

use axum::extract::{RawQuery, Request, State};
use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use super::{ok, parse_time, read_object, typed, ApiError, ApiResult, AppState, Auth, Id, Query};
use crate::clock::Millis;
use crate::engine::Reported;
use crate::model::status;
use crate::store::{conflict, Evidence, ExecutionFilter, ReportedOutcome};

/// The list filters of the query string (`status=all` means every status; `days=N` the last N
/// days; `since` an ISO instant).
pub(super) fn filter_from(
    q: &Query,
    cue_id: Option<String>,
    now: Millis,
    default_limit: i64,
) -> ApiResult<ExecutionFilter> {
    let one = q.str("status").filter(|s| *s != "all");
    let many = q
        .present("status__in")
        .then(|| q.str("status__in").unwrap_or(""));
    if one.is_some() && many.is_some() {
        return Err(ApiError::bad_request(
            "conflicting_filters",
            "give status or status__in, not both",
        ));
    }
    let states: Option<Vec<String>> = match (one, many) {
        (Some(s), _) => Some(s.split(',').map(|x| x.trim().to_string()).collect()),
        (_, Some(list)) => {
            let v: Vec<String> = list
                .split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect();
            if v.is_empty() {
                return Err(ApiError::bad_request(
                    "invalid_status_in",
                    "status__in needs at least one status",
                ));
            }
            Some(v)
        }
        _ => None,
    };
    if let Some(list) = &states {
        for s in list {
            if !status::ALL.contains(&s.as_str()) {
                return Err(ApiError::field(
                    "query.status",
                    format!("{s:?} is not one of {}, all", status::ALL.join(", ")),
                ));
            }
        }
    }
    if let Some(state) = q.str("outcome_state") {
        if !crate::model::OUTCOME_STATES.contains(&state) {
            return Err(ApiError::field(
                "query.outcome_state",
                format!(
                    "{state:?} is not one of {}",
                    crate::model::OUTCOME_STATES.join(", ")
                ),
            ));
        }
    }
    let days = match q.str("days") {
        Some(_) => Some(q.int("days", 0, 1, 36_500)?),
        None => None,
    };
    let since = match q.str("since") {
        Some(s) => Some(parse_time("query.since", &Value::String(s.to_string()))?),
        None => None,
    };
    let since = match (days.map(|d| now - d * 86_400_000), since) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    // The SDK's word for a tick of the schedule is `scheduled`.
    let triggered_by = match q.str("triggered_by") {
        None => None,
        Some("scheduled" | "schedule") => Some("schedule".to_string()),
        Some(t) if crate::public::TRIGGERS.contains(&t) => Some(t.to_string()),
        Some(t) => {
            return Err(ApiError::field(
                "query.triggered_by",
                format!("{t:?} is not one of {}", crate::public::TRIGGERS.join(", ")),
            ))
        }
    };
    Ok(ExecutionFilter {
        triggered_by,
        cue_id: cue_id.or_else(|| q.str("cue_id").map(str::to_string)),
        status: states,
        outcome_state: q.str("outcome_state").map(str::to_string),
        since,
        has_evidence: q.bool("has_evidence")?,
        result_type: q.str("result_type").map(str::to_string),
        limit: Some(q.int("limit", default_limit, 1, 1000)?),
        offset: Some(q.int("offset", 0, 0, i64::MAX)?),
    })
}

/// One page of executions, under both the reference's `executions` key and the `data` key the
/// article reads.
pub(super) fn page(st: &AppState, owner: &str, filter: ExecutionFilter) -> ApiResult {
    let (list, total) = st.engine.read(|c| {
        Ok((
            c.list_executions(owner, &filter)?,
            c.count_executions(owner, &filter)?,
        ))
    })?;
    let list: Vec<Value> = list.into_iter().map(crate::public::execution).collect();
    let (limit, offset) = (filter.limit.unwrap_or(0), filter.offset.unwrap_or(0));
    super::page_of("executions", list, total, limit, offset)
}

pub(super) async fn list(
    State(st): State<AppState>,
    Auth(user): Auth,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = Query::parse(raw.as_deref());
    let filter = filter_from(&q, None, st.engine.clock().now(), 20)?;
    page(&st, &user.id, filter)
}

pub(super) async fn get_one(State(st): State<AppState>, Auth(user): Auth, Id(id): Id) -> ApiResult {
    let v = st.engine.read(|c| c.execution(&user.id, &id))?;
    ok(StatusCode::OK, crate::public::execution(v))
}

const OUTCOME_FIELDS: &[&str] = &[
    "success",
    "result",
    "error",
    "metadata",
    "external_id",
    "result_url",
    "result_ref",
    "result_type",
    "summary",
    "artifacts",
    "retry",
];

fn check_result_url(url: Option<&str>, field: &str) -> ApiResult<()> {
    if let Some(u) = url {
        match reqwest::Url::parse(u) {
            Ok(p) if matches!(p.scheme(), "http" | "https") => {}
            _ => return Err(ApiError::field(field, "must be an http or https URL")),
        }
    }
    Ok(())
}

/// Keeps only the known keys of an object, refusing others.
fn known_only(body: &Map<String, Value>, known: &[&str]) -> ApiResult<Value> {
    super::refuse_unknown(body, known)?;
    Ok(Value::Object(body.clone()))
}

/// Free-text limits: longer text is cut (and the answer says so) rather than refused — an outcome
/// report is evidence of work done, and losing it over the length of a message helps nobody.
const TEXT_LIMITS: &[(&str, usize)] = &crate::limits::CUT_TEXT;

/// Makes free-text fields text (a JSON object or list given as `result` or `error` is kept as its
/// canonical JSON) and cuts them to their limits. Returns the names of the fields cut.
fn soften(body: &mut Map<String, Value>) -> Vec<&'static str> {
    let mut cut = Vec::new();
    for (name, max) in TEXT_LIMITS {
        let Some(v) = body.get_mut(*name) else {
            continue;
        };
        if matches!(v, Value::Object(_) | Value::Array(_)) && *name != "summary" {
            *v = Value::String(crate::signing::canonical_json(v));
        }
        if let Value::String(text) = v {
            if text.chars().count() > *max {
                let mut short: String = text.chars().take(max - 1).collect();
                short.push('…');
                *text = short;
                cut.push(*name);
            }
        }
    }
    cut
}

pub(super) async fn outcome(
    State(st): State<AppState>,
    Auth(user): Auth,
    Id(id): Id,
    req: Request,
) -> ApiResult {
    let mut body = read_object(req, true).await?;
    if !body.contains_key("success") {
        return Err(ApiError::field("body.success", "is required"));
    }
    let cut = soften(&mut body);
    let report: ReportedOutcome = typed(known_only(&body, OUTCOME_FIELDS)?)?;
    check_result_url(report.result_url.as_deref(), "body.result_url")?;
    if let Some(m) = &report.metadata {
        if crate::signing::canonical_json(m).len() > crate::limits::METADATA_BYTES {
            return Err(ApiError::bad_request(
                "metadata_too_large",
                format!(
                    "metadata is larger than {} bytes",
                    crate::limits::METADATA_BYTES
                ),
            ));
        }
    }
    let reported = st
        .engine
        .report_outcome(&user.id, &id, report)
        .await
        .map_err(|e| match e {
            crate::Error::Conflict(m) if m.starts_with(conflict::NOT_CLAIMED) => {
                ApiError::conflict("execution_not_claimed", m)
            }
            other => ApiError::from(other).conflict_code("outcome_already_recorded"),
        })?;
    let out = match reported {
        Reported::Recorded(state) => {
            json!({"execution_id": id, "outcome_recorded": true, "outcome_state": state, "reason": null})
        }
        Reported::Worker(w) => {
            let mut out = json!({
                "execution_id": id,
                "outcome_recorded": true,
                "outcome_state": w.outcome_state.unwrap_or_else(|| "reported_failure".into()),
                "status": w.status,
                "reason": null,
            });
            if let Some(at) = w.next_retry {
                out["next_retry"] = json!(super::iso(at));
            }
            out
        }
    };
    super::with_truncated(out, &cut)
}

pub(super) async fn evidence(
    State(st): State<AppState>,
    Auth(user): Auth,
    Id(id): Id,
    req: Request,
) -> ApiResult {
    let mut body = read_object(req, true).await?;
    let cut = soften(&mut body);
    let known = [
        "external_id",
        "result_url",
        "result_ref",
        "result_type",
        "summary",
        "artifacts",
        "metadata",
    ];
    let ev: Evidence = typed(known_only(&body, &known)?)?;
    check_result_url(ev.result_url.as_deref(), "body.result_url")?;
    let state = st
        .engine
        .append_evidence(&user.id, &id, ev)
        .await
        .map_err(|e| ApiError::from(e).conflict_code("no_outcome"))?;
    super::with_truncated(
        json!({"execution_id": id, "outcome_state": state, "evidence_updated": true}),
        &cut,
    )
}

pub(super) async fn verify(
    State(st): State<AppState>,
    Auth(user): Auth,
    Id(id): Id,
    req: Request,
) -> ApiResult {
    let body = read_object(req, false).await?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Verdict {
        #[serde(default = "yes")]
        valid: bool,
        #[serde(default)]
        reason: Option<String>,
    }
    fn yes() -> bool {
        true
    }
    let v: Verdict = typed(Value::Object(body))?;
    if v.reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(ApiError::field(
            "body.reason",
            "is longer than 500 characters",
        ));
    }
    let (valid, reason) = (v.valid, v.reason.clone());
    let state = st
        .engine
        .verify(&user.id, &id, v.valid, v.reason)
        .await
        .map_err(|e| ApiError::from(e).conflict_code("invalid_state"))?;
    ok(
        StatusCode::OK,
        json!({"execution_id": id, "outcome_state": state, "valid": valid, "reason": reason}),
    )
}

pub(super) async fn verification_pending(
    State(st): State<AppState>,
    Auth(user): Auth,
    Id(id): Id,
) -> ApiResult {
    st.engine
        .verification_pending(&user.id, &id)
        .await
        .map_err(|e| match e {
            crate::Error::Conflict(m) if m == conflict::NO_OUTCOME => {
                ApiError::conflict("no_outcome", m)
            }
            other => ApiError::from(other).conflict_code("invalid_state"),
        })?;
    ok(
        StatusCode::OK,
        json!({"execution_id": id, "outcome_state": "verification_pending"}),
    )
}

pub(super) async fn replay(State(st): State<AppState>, Auth(user): Auth, Id(id): Id) -> ApiResult {
    let (new_id, exec) = st
        .engine
        .replay_finished(&user.id, &id)
        .await
        .map_err(|e| ApiError::from(e).conflict_code("execution_in_flight"))?;
    let mut v = crate::public::execution(exec);
    if let Some(m) = v.as_object_mut() {
        m.insert("execution_id".into(), new_id.into());
        m.insert("replayed_from".into(), id.into());
    }
    ok(StatusCode::OK, v)
}

// -- routes ------------------------------------------------------------------------------------

/// An execution as the API shows it.
fn execution_schema() -> Value {
    use super::spec::{instant, instant_or_null, obj, obj_some, text_or_null};
    let outcome_states = json!({"enum": crate::model::OUTCOME_STATES});
    let evidence = json!({
        "external_id": text_or_null(),
        "result_url": text_or_null(),
        "result_ref": text_or_null(),
        "result_type": text_or_null(),
        "summary": text_or_null(),
        "validation_state": text_or_null(),
        "produced_at": instant_or_null(),
        "artifacts": {"description": "A list, when given"},
    });
    let mut in_outcome = evidence.clone();
    in_outcome["evidence_metadata"] = json!({"description": "The evidence's metadata"});
    let mut outcome = json!({
        "success": {"type": ["boolean", "null"]},
        "result": text_or_null(),
        "error": text_or_null(),
        "metadata": {"description": "An object, when given"},
        "recorded_at": instant(),
    });
    if let (Some(o), Some(e)) = (outcome.as_object_mut(), in_outcome.as_object()) {
        o.extend(e.clone());
    }
    let mut evidence_all = evidence;
    evidence_all["metadata"] = json!({"description": "An object, when given"});
    let attempt = obj(json!({
        "number": {"type": "integer", "minimum": 1},
        "status": {"type": "string"},
        "started_at": instant(),
        "finished_at": instant_or_null(),
        "duration_ms": {"type": ["integer", "null"]},
        "error": text_or_null(),
        "error_type": text_or_null(),
        "traceback": text_or_null(),
        "http_status": {"type": ["integer", "null"]},
        "claimed_by": text_or_null(),
        "outcome": {"description": "What the attempt reported, when it did"},
    }));
    obj_some(
        json!({
            "id": {"type": "string"},
            "cue_id": {"type": "string"},
            "cue_name": {"type": "string"},
            "scheduled_for": instant(),
            "status": {"enum": status::ALL},
            "triggered_by": {"enum": crate::public::TRIGGERS},
            "replay_of": text_or_null(),
            "chain_parent_id": {
                "type": ["string", "null"],
                "description": "The execution whose success fired this one (on_success_fire)",
            },
            "chain_depth": {"type": "integer", "minimum": 0},
            "idempotency_key": {"type": "string"},
            "payload": {"type": ["object", "null"]},
            "attempts": {"type": "integer", "minimum": 0},
            "next_retry": instant_or_null(),
            "error_message": text_or_null(),
            "started_at": instant_or_null(),
            "delivered_at": instant_or_null(),
            "last_attempt_at": instant_or_null(),
            "outcome": {
                "description": "Present once an outcome is recorded: the report with its evidence",
                "allOf": [obj_some(outcome, &["success", "result", "error", "metadata", "recorded_at"])],
            },
            "outcome_state": {"anyOf": [outcome_states, {"type": "null"}]},
            "outcome_deadline_at": instant_or_null(),
            "outcome_timeout_at": instant_or_null(),
            "evidence": {
                "description": "Present once there is any evidence",
                "allOf": [obj(evidence_all)],
            },
            "created_at": instant(),
            "updated_at": instant(),
            "http_status": {"type": ["integer", "null"]},
            "response_body": text_or_null(),
            "transport": {"enum": ["webhook", "worker", "local"]},
            "claimed_by_worker": {
                "type": ["string", "null"],
                "description": "The pull worker whose claim is the latest attempt: while it runs, and \
                    after it ended with an outcome (null before any claim, for other transports, and \
                    once a claim was released: the attempt log keeps who held it)",
            },
            "claimed_at": {
                "type": ["string", "null"], "format": "date-time",
                "description": "When that worker claimed it",
            },
            "attempt_log": {
                "type": "array",
                "description": "Every attempt (when one execution is asked for)",
                "items": attempt,
            },
        }),
        &[
            "id",
            "cue_id",
            "cue_name",
            "scheduled_for",
            "status",
            "triggered_by",
            "replay_of",
            "idempotency_key",
            "payload",
            "attempts",
            "next_retry",
            "error_message",
            "started_at",
            "delivered_at",
            "last_attempt_at",
            "outcome_state",
            "outcome_deadline_at",
            "outcome_timeout_at",
            "created_at",
            "updated_at",
            "http_status",
            "response_body",
            "transport",
            "chain_parent_id",
            "chain_depth",
            "claimed_by_worker",
            "claimed_at",
        ],
    )
}

/// The schemas this file's answers refer to.
pub(super) fn schemas() -> Vec<(&'static str, Value)> {
    use super::spec::extend;
    let id = json!({"type": "string"});
    let fired = extend(
        execution_schema(),
        json!({"execution_id": id, "created": {
            "type": "boolean",
            "description": "false when an idempotency key named an execution made before",
        }}),
    );
    let replayed = extend(
        execution_schema(),
        json!({"execution_id": id, "replayed_from": id}),
    );
    vec![
        ("Execution", execution_schema()),
        ("FiredExecution", fired),
        ("ReplayedExecution", replayed),
    ]
}

/// Adds the list filters of [`filter_from`] to a route.
pub(super) fn filters(route: super::spec::Route, default_limit: i64) -> super::spec::Route {
    use super::spec::{int_between, offset};
    let states = status::ALL.join(", ");
    route
        .query(
            "status",
            &format!("One status ({states}) or `all`; a comma-separated list is accepted"),
            json!({"type": "string"}),
        )
        .query(
            "status__in",
            "A comma-separated list of statuses",
            json!({"type": "string"}),
        )
        .query(
            "outcome_state",
            "Only this outcome state",
            json!({"enum": crate::model::OUTCOME_STATES}),
        )
        .query(
            "days",
            "Only the last N days",
            json!({"type": "integer", "minimum": 1, "maximum": 36_500}),
        )
        .query(
            "since",
            "Only those scheduled at or after this instant",
            json!({"type": "string", "format": "date-time"}),
        )
        .query(
            "triggered_by",
            "Only those made this way",
            json!({"enum": crate::public::TRIGGERS}),
        )
        .query(
            "has_evidence",
            "Only those with (true) or without (false) evidence",
            json!({"type": "boolean"}),
        )
        .query(
            "result_type",
            "Only those whose evidence has this result type",
            json!({"type": "string"}),
        )
        .query("limit", "Page size", int_between(1, 1000, default_limit))
        .query("offset", "Executions to skip", offset())
        .errors(400, &["conflicting_filters", "invalid_status_in"])
        .errors(422, &["validation_error"])
        .describe("Filters combine (AND).")
}

pub(super) fn routes() -> Vec<super::spec::Route> {
    use super::spec::{get, obj, obj_some, page, patch, post, r, tagged};
    let not_found: &[&str] = &["execution_not_found"];
    let truncated = json!({
        "type": "array", "items": {"enum": ["result", "error", "summary"]},
        "description": "Free-text fields that were cut to their limit",
    });
    use crate::limits::{CUT_TEXT, EVIDENCE_TEXT, METADATA_BYTES, URL_CHARS};
    let max = |field: &str| {
        EVIDENCE_TEXT
            .iter()
            .chain(CUT_TEXT.iter())
            .find(|(f, _)| *f == field)
            .map_or(0, |(_, n)| *n)
    };
    let url = json!({"type": ["string", "null"], "maxLength": URL_CHARS, "description": "An http(s) URL"});
    let evidence_props = json!({
        "external_id": {"type": ["string", "null"], "maxLength": max("external_id")},
        "result_url": url,
        "result_ref": {"type": ["string", "null"], "maxLength": max("result_ref")},
        "result_type": {"type": ["string", "null"], "maxLength": max("result_type")},
        "summary": {
            "type": ["string", "null"],
            "description": format!("Cut to {} characters", max("summary")),
        },
        "artifacts": {"type": ["array", "null"]},
        "metadata": {
            "type": ["object", "null"],
            "description": format!("At most {METADATA_BYTES} bytes as JSON"),
        },
    });
    let mut outcome_props = evidence_props.clone();
    if let Some(m) = outcome_props.as_object_mut() {
        m.insert("success".into(), json!({"type": "boolean"}));
        let text = json!({
            "type": ["string", "object", "array", "null"],
            "description": "Text (cut to 2000 characters); an object or list is kept as its JSON",
        });
        m.insert("result".into(), text.clone());
        m.insert("error".into(), text);
        m.insert(
            "retry".into(),
            json!({
                "type": "boolean",
                "description": "With success false: this was a failed run (a crash, an exception), to be \
                    retried by the cue's retry policy like a failed delivery. Without it a reported failure \
                    is the handler's verdict and final (unless the cue sets retry.retry_reported_failures). \
                    For worker executions.",
            }),
        );
    }
    let outcome_state = json!({"enum": crate::model::OUTCOME_STATES});
    let list = filters(
        get(
            "/v1/executions",
            "listExecutions",
            "Your executions, newest first",
            list,
        )
        .answers(
            200,
            "A page of executions",
            page("executions", r("Execution")),
        ),
        20,
    );
    let routes = vec![
        list,
        get(
            "/v1/executions/{id}",
            "getExecution",
            "One execution, with every attempt",
            get_one,
        )
        .answers(200, "The execution", r("Execution"))
        .errors(404, not_found),
        post(
            "/v1/executions/{id}/outcome",
            "reportOutcome",
            "Report how an execution went (once)",
            outcome,
        )
        .describe(
            "A worker's report completes its claim. A reported failure is final; one sent with \
             `retry: true` (a failed run) follows the cue's retry policy (`next_retry`).",
        )
        .body_example(
            obj_some(outcome_props, &["success"]),
            true,
            json!({"success": true, "result": "42 rows", "external_id": "run-42"}),
        )
        .answers(
            200,
            "Recorded",
            obj_some(
                json!({
                    "execution_id": {"type": "string"},
                    "outcome_recorded": {"const": true},
                    "outcome_state": outcome_state,
                    "status": {"enum": status::ALL},
                    "next_retry": super::spec::instant(),
                    "reason": {"type": "null"},
                    "truncated": truncated,
                }),
                &[
                    "execution_id",
                    "outcome_recorded",
                    "outcome_state",
                    "reason",
                ],
            ),
        )
        .errors(400, &["metadata_too_large"])
        .errors(404, not_found)
        .errors(409, &["outcome_already_recorded", "execution_not_claimed"]),
        patch(
            "/v1/executions/{id}/evidence",
            "appendEvidence",
            "Add evidence to a recorded outcome",
            evidence,
        )
        .body_example(
            obj_some(evidence_props, &[]),
            true,
            json!({"result_url": "https://example.com/r/42"}),
        )
        .answers(
            200,
            "Added",
            obj_some(
                json!({
                    "execution_id": {"type": "string"},
                    "outcome_state": outcome_state,
                    "evidence_updated": {"const": true},
                    "truncated": truncated,
                }),
                &["execution_id", "outcome_state", "evidence_updated"],
            ),
        )
        .errors(404, not_found)
        .errors(409, &["no_outcome"]),
        post(
            "/v1/executions/{id}/verify",
            "verifyExecution",
            "Confirm (or reject) a reported outcome",
            verify,
        )
        .body_example(
            obj_some(
                json!({
                    "valid": {"type": "boolean", "default": true},
                    "reason": {"type": ["string", "null"], "maxLength": 500},
                }),
                &[],
            ),
            false,
            json!({"valid": false, "reason": "the file is empty"}),
        )
        .answers(
            200,
            "The new outcome state",
            obj(json!({
                "execution_id": {"type": "string"},
                "outcome_state": {"enum": ["verified_success", "verification_failed"]},
                "valid": {"type": "boolean"},
                "reason": {
                    "type": ["string", "null"],
                    "description": "The reason given (a rejection's is also kept in the evidence summary)",
                },
            })),
        )
        .errors(404, not_found)
        .errors(409, &["invalid_state"]),
        post(
            "/v1/executions/{id}/verification-pending",
            "markVerificationPending",
            "Park a reported outcome for manual verification",
            verification_pending,
        )
        .answers(
            200,
            "Parked",
            obj(json!({
                "execution_id": {"type": "string"},
                "outcome_state": {"const": "verification_pending"},
            })),
        )
        .errors(404, not_found)
        .errors(409, &["no_outcome", "invalid_state"]),
        post(
            "/v1/executions/{id}/replay",
            "replayExecution",
            "Run a finished execution again, as a new one",
            replay,
        )
        .answers(200, "The new execution", r("ReplayedExecution"))
        .errors(404, not_found)
        .errors(409, &["execution_in_flight"]),
    ];
    tagged("executions", routes)
}
