//! `GET /v1/usage`: the caller's cues, this month's executions and outcomes, and their rate limit,
//! in the reference's shape. A self-hosted server has no plans: the plan is `self-hosted` and
//! nothing is capped, and both objects say `"unlimited": true` for programs. The official CLI
//! prints the cue limit as it is, so that is the word `"unlimited"`; it computes a percentage from
//! `executions.limit` (comparing it with 0 and formatting it with thousands separators, so null or
//! text would crash it, and 0 reads as "0 / 0 (0.0%)"), so that is [`UNLIMITED`], the largest
//! 32-bit integer, which any client's integer type holds and nobody mistakes for a quota.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{Datelike, NaiveDate};
use serde_json::{json, Value};

use super::auth::month_start;
use super::limit::Bucket;
use super::{bearer, ok, ApiResult, AppState, Auth};

/// The number standing for "no limit" where a client needs a number (`executions.limit`).
pub(super) const UNLIMITED: i64 = i32::MAX as i64;

pub(super) async fn usage(
    State(st): State<AppState>,
    Auth(user): Auth,
    headers: HeaderMap,
) -> ApiResult {
    let now = st.engine.clock().now();
    let since = month_start(now);
    let u = st.engine.read(|c| c.usage(&user.id, since))?;
    let today = chrono::DateTime::from_timestamp_millis(now)
        .unwrap_or_default()
        .date_naive();
    let first = today.with_day(1).unwrap_or(today);
    let next_month = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    }
    .unwrap_or(first);
    let last = next_month.pred_opt().unwrap_or(first);
    let (day, days) = (i64::from(today.day()), i64::from(last.day()));
    let period = json!({"start": first.to_string(), "end": last.to_string()});
    let rate = match st.limiter.per_minute() {
        Some(limit) => {
            let used = bearer(&headers)
                .map(|k| st.limiter.used(Bucket::key(k), now))
                .unwrap_or(0);
            json!({"requests_per_minute": limit, "limit": limit, "current_usage": used})
        }
        None => json!({"requests_per_minute": null, "limit": "unlimited", "current_usage": null}),
    };
    ok(
        StatusCode::OK,
        json!({
            "plan": "self-hosted",
            "billing_period": {"start": first.to_string(), "end": last.to_string(),
                               "days_remaining": days - day},
            "period": period,
            "cues": {
                "used": u.active_cues + u.paused_cues,
                "active": u.active_cues,
                "paused": u.paused_cues,
                "total": u.all_cues,
                "limit": "unlimited",
                "unlimited": true,
                "remaining": Value::Null,
                "percent_used": 0,
            },
            "executions": {
                "used": u.executions,
                "limit": UNLIMITED,
                "unlimited": true,
                "remaining": Value::Null,
                "percent_used": 0,
                "percentage": 0.0,
                "projected_month_end": u.executions * days / day.max(1),
                "will_exceed_limit": false,
            },
            "outcomes": {
                "reported": u.reported,
                "succeeded": u.succeeded,
                "failed": u.failed,
                "timed_out": u.timed_out,
            },
            "rate_limit": rate,
            "upgrade_url": Value::Null,
        }),
    )
}

// -- routes ------------------------------------------------------------------------------------

pub(super) fn routes() -> Vec<super::spec::Route> {
    use super::spec::{get, obj, tagged};
    let day = json!({"type": "string", "format": "date"});
    let count = json!({"type": "integer", "minimum": 0});
    let schema = obj(json!({
        "plan": {"const": "self-hosted"},
        "billing_period": obj(json!({
            "start": day, "end": day, "days_remaining": {"type": "integer", "minimum": 0},
        })),
        "period": obj(json!({"start": day, "end": day})),
        "cues": obj(json!({
            "used": count, "active": count, "paused": count, "total": count,
            "limit": {"const": "unlimited"},
            "unlimited": {"const": true},
            "remaining": {"type": "null"},
            "percent_used": {"const": 0},
        })),
        "executions": obj(json!({
            "used": count,
            "limit": {"const": UNLIMITED, "description": "No limit: the largest 32-bit integer, for clients that compute with it (`unlimited` says so)"},
            "unlimited": {"const": true},
            "remaining": {"type": "null"},
            "percent_used": {"const": 0},
            "percentage": {"type": "number"},
            "projected_month_end": count,
            "will_exceed_limit": {"const": false},
        })),
        "outcomes": obj(json!({
            "reported": count, "succeeded": count, "failed": count, "timed_out": count,
        })),
        "rate_limit": obj(json!({
            "requests_per_minute": {"type": ["integer", "null"]},
            "limit": {"anyOf": [{"type": "integer"}, {"const": "unlimited"}]},
            "current_usage": {"type": ["integer", "null"]},
        })),
        "upgrade_url": {"type": "null"},
    }));
    tagged(
        "account",
        vec![get(
            "/v1/usage",
            "getUsage",
            "Your cues, this month's executions and outcomes, and your rate limit",
            usage,
        )
        .answers(200, "Usage", schema)],
    )
}
