//! `/v1/alerts`: what went wrong (and right again), newest first; acknowledging an alert.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use serde_json::Value;

use super::{iso_fields, ok, page_of, parse_time, ApiError, ApiResult, AppState, Auth, Id, Query};
use crate::store::alerts::{kind, AlertFilter};

/// An alert as the API shows it: instants as ISO-8601 text.
fn alert_out(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        let times = [
            "created_at",
            "last_seen_at",
            "resolved_at",
            "acknowledged_at",
        ];
        iso_fields(m, &times);
        if let Some(Value::Array(list)) = m.get_mut("notifications") {
            for n in list.iter_mut().filter_map(Value::as_object_mut) {
                iso_fields(n, &["sent_at", "next_attempt_at"]);
            }
        }
    }
    v
}

pub(super) async fn list(
    State(st): State<AppState>,
    Auth(user): Auth,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q = Query::parse(raw.as_deref());
    let alert_type = q.str("alert_type").map(str::to_string);
    if let Some(t) = &alert_type {
        if !kind::ALL.contains(&t.as_str()) {
            return Err(ApiError::bad_request(
                "invalid_filter",
                format!("alert_type {t:?} is not one of {}", kind::ALL.join(", ")),
            ));
        }
    }
    let since = match q.str("since") {
        Some(s) => Some(parse_time("query.since", &Value::String(s.to_string()))?),
        None => None,
    };
    let filter = AlertFilter {
        alert_type,
        cue_id: q.str("cue_id").map(str::to_string),
        since,
        acknowledged: q.bool("acknowledged")?,
        limit: q.int("limit", 20, 1, 100)?,
        offset: q.int("offset", 0, 0, i64::MAX)?,
    };
    let (list, total) = st.engine.read(|c| c.alerts(&user.id, &filter))?;
    let list = list.into_iter().map(alert_out).collect();
    page_of("alerts", list, total, filter.limit, filter.offset)
}

pub(super) async fn get_one(State(st): State<AppState>, Auth(user): Auth, Id(id): Id) -> ApiResult {
    let v = st.engine.read(|c| c.alert(&user.id, &id))?;
    ok(StatusCode::OK, alert_out(v))
}

pub(super) async fn acknowledge(
    State(st): State<AppState>,
    Auth(user): Auth,
    Id(id): Id,
) -> ApiResult {
    let v = st.engine.acknowledge_alert(&user.id, &id).await?;
    ok(StatusCode::OK, alert_out(v))
}

// -- routes ------------------------------------------------------------------------------------

fn alert_schema(with_notifications: bool) -> serde_json::Value {
    use super::spec::{instant, instant_or_null, obj, text_or_null};
    use serde_json::json;
    let mut props = json!({
        "id": {"type": "string"},
        "cue_id": text_or_null(),
        "execution_id": text_or_null(),
        "alert_type": {"enum": kind::ALL},
        "severity": {"type": "string"},
        "message": {"type": "string"},
        "occurrences": {"type": "integer", "minimum": 1},
        "metadata": {"type": "object"},
        "last_seen_at": instant(),
        "resolved_at": instant_or_null(),
        "acknowledged": {"type": "boolean"},
        "acknowledged_at": instant_or_null(),
        "created_at": instant(),
    });
    if with_notifications {
        props["notifications"] = json!({
            "type": "array",
            "description": "How each notification of the alert went",
            "items": obj(json!({
                "channel": {"type": "string"},
                "status": {"type": "string"},
                "attempts": {"type": "integer"},
                "last_error": text_or_null(),
                "sent_at": instant_or_null(),
                "next_attempt_at": instant_or_null(),
            })),
        });
    }
    obj(props)
}

/// The schemas this file's answers refer to.
pub(super) fn schemas() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("Alert", alert_schema(false)),
        ("AlertDetail", alert_schema(true)),
    ]
}

pub(super) fn routes() -> Vec<super::spec::Route> {
    use super::spec::{get, int_between, offset, page, post, r, tagged};
    use serde_json::json;
    let not_found: &[&str] = &["alert_not_found"];
    tagged(
        "alerts",
        vec![
            get(
                "/v1/alerts",
                "listAlerts",
                "Your alerts, newest first",
                list,
            )
            .query("alert_type", "Only this kind", json!({"enum": kind::ALL}))
            .query("cue_id", "Only this cue's", json!({"type": "string"}))
            .query(
                "since",
                "Only those created at or after this instant",
                json!({"type": "string", "format": "date-time"}),
            )
            .query(
                "acknowledged",
                "Only acknowledged (true) or unacknowledged (false) ones",
                json!({"type": "boolean"}),
            )
            .query("limit", "Page size", int_between(1, 100, 20))
            .query("offset", "Alerts to skip", offset())
            .answers(200, "A page of alerts", page("alerts", r("Alert")))
            .errors(400, &["invalid_filter"])
            .errors(422, &["validation_error"]),
            get(
                "/v1/alerts/{id}",
                "getAlert",
                "One alert, with how its notifications went",
                get_one,
            )
            .answers(200, "The alert", r("AlertDetail"))
            .errors(404, not_found),
            post(
                "/v1/alerts/{id}/acknowledge",
                "acknowledgeAlert",
                "Acknowledge an alert (again is a no-op)",
                acknowledge,
            )
            .answers(200, "The alert", r("AlertDetail"))
            .errors(404, not_found),
        ],
    )
}
