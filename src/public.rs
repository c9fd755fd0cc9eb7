//! The public form of cues and executions: the JSON both faces speak. `cueapi serve` answers
//! with it and the embedded App's records are read from it, so a cue or an execution looks the
//! same whether it came from a server or from a local database (and the Python models that read
//! one read the other).

use serde_json::{json, Map, Value};

use crate::clock::Millis;

/// An instant as ISO-8601 UTC text with milliseconds and `Z`.
pub fn iso(ms: Millis) -> String {
    crate::schedule::format_utc(ms)
}

/// Replaces the millisecond instants under `keys` with ISO-8601 text.
pub fn iso_fields(v: &mut Map<String, Value>, keys: &[&str]) {
    for k in keys {
        if let Some(ms) = v.get(*k).and_then(Value::as_i64) {
            v.insert((*k).to_string(), Value::String(iso(ms)));
        }
    }
}

/// A store cue in the public form: instants in ISO-8601, the schedule without its empty fields,
/// the outcome deadline under `delivery`, the catch-up policy in the hosted service's words, no
/// owner.
pub fn cue(mut v: Value, warning: Option<String>) -> Value {
    let Some(m) = v.as_object_mut() else {
        return v;
    };
    m.remove("owner");
    if let Some(s) = m.get_mut("schedule").and_then(Value::as_object_mut) {
        if let Some(at) = s.get("at").and_then(Value::as_i64) {
            s.insert("at".into(), Value::String(iso(at)));
        }
        if let Some(every) = s.remove("every_ms").and_then(|e| e.as_i64()) {
            s.insert("every".into(), Value::String(format!("{}s", every / 1000)));
        }
        s.retain(|_, x| !x.is_null());
    }
    if let Some(list) = m
        .get_mut("retry")
        .and_then(|r| r.get_mut("backoff_minutes"))
        .and_then(Value::as_array_mut)
    {
        for x in list.iter_mut() {
            if let Some(f) = x.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15) {
                *x = json!(f as i64);
            }
        }
    }
    let deadline = m.remove("outcome_deadline_seconds");
    if let (Some(d), Some(dl)) = (
        m.get_mut("delivery").and_then(Value::as_object_mut),
        deadline,
    ) {
        d.insert("outcome_deadline_seconds".into(), dl);
    }
    // The hosted service's names (`run_once_if_missed`, …); the bound stays `catch_up_max`.
    if let Some(policy) = m.get("catch_up").and_then(Value::as_str) {
        let name = crate::store::catch_up_name(policy);
        m.insert("catch_up".into(), name.into());
    }
    m.insert("warning".into(), warning.map_or(Value::Null, Value::String));
    // A paused cue has no next run (the store keeps its place, to record what the pause missed).
    if m.get("status").and_then(Value::as_str) != Some("active") {
        m.insert("next_run".into(), Value::Null);
    }
    iso_fields(m, &["next_run", "last_run", "created_at", "updated_at"]);
    v
}

/// A store execution in the public form: instants in ISO-8601, the outcome with its evidence
/// (omitted, not null, before one is reported: `e.get("outcome", {})` then works).
pub fn execution(mut v: Value) -> Value {
    let Some(m) = v.as_object_mut() else {
        return v;
    };
    let evidence = m.remove("evidence");
    if let Some(Value::Object(mut o)) = m.remove("outcome") {
        if let Some(Value::Object(ev)) = evidence.clone() {
            for (k, x) in ev {
                let key = if k == "metadata" {
                    "evidence_metadata".into()
                } else {
                    k
                };
                o.insert(key, x);
            }
        }
        iso_fields(&mut o, &["recorded_at", "produced_at"]);
        m.insert("outcome".into(), Value::Object(o));
    }
    if let Some(Value::Object(mut ev)) = evidence {
        iso_fields(&mut ev, &["produced_at"]);
        m.insert("evidence".into(), Value::Object(ev));
    }
    if let Some(t) = m.get("triggered_by").and_then(Value::as_str) {
        let public = trigger(t);
        m.insert("triggered_by".into(), public.into());
    }
    iso_fields(
        m,
        &[
            "scheduled_for",
            "next_retry",
            "started_at",
            "delivered_at",
            "last_attempt_at",
            "outcome_deadline_at",
            "outcome_timeout_at",
            "claimed_at",
            "created_at",
            "updated_at",
        ],
    );
    if let Some(Value::Array(list)) = m.get_mut("attempt_log") {
        for a in list.iter_mut() {
            if let Some(am) = a.as_object_mut() {
                iso_fields(am, &["started_at", "finished_at"]);
            }
        }
    }
    v
}

/// What can create an execution, in the public vocabulary: a tick of the schedule, a fire by
/// hand, a replay, or the successful outcome of the cue before it in a chain.
pub const TRIGGERS: &[&str] = &["scheduled", "manual_fire", "replay", "chain"];

/// What created an execution, in the public vocabulary (`scheduled` for the store's
/// `schedule`).
pub fn trigger(stored: &str) -> &str {
    if stored == "schedule" {
        "scheduled"
    } else {
        stored
    }
}
