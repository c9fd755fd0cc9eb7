//! Execution rows: firing ticks (with catch-up and overlap policies), the claim / complete cycle,
//! retries, outcome deadlines, recovery after a crash, history queries.

use crate::store::cluster::Scope;
use crate::store::sql::{as_params, params, Db, OptionalExt, Param, Row, Value as SqlValue};
use serde::Deserialize;
use serde_json::{json, Value};

use super::alerts;
use super::cues::{self, CueRow};
use crate::clock::Millis;
use crate::error::{Error, Result};
use crate::model::{new_id, status, OUTCOME_STATES};
use crate::schedule::format_utc;

/// Missed ticks recorded one row each per catch-up; beyond this, one summary row.
const MISSED_ROWS_CAP: usize = 1_000;
/// Schedule steps walked to find missed ticks; beyond this the rest is summarised by count only.
const MISSED_WALK_CAP: usize = 1_000_000;

/// What firing a cue produced.
#[derive(Debug, Default)]
pub struct FireResult {
    /// Executions created in `pending`, to be dispatched.
    pub created: Vec<String>,
    /// The cue's transport: where the created executions go.
    pub transport: String,
    /// The cue's next fire time after this firing.
    pub next_run: Option<Millis>,
}

/// A claimed attempt, handed to a handler.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub execution_id: String,
    pub cue_id: String,
    pub cue_name: String,
    pub scheduled_for: Millis,
    pub attempt: i64,
    pub payload: String,
    pub idempotency_key: String,
    pub triggered_by: String,
    /// Set when this claim started the outcome deadline.
    pub outcome_deadline_at: Option<Millis>,
}

/// An outcome as a handler reports it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportedOutcome {
    pub success: bool,
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub error_type: Option<String>,
    #[serde(default)]
    pub traceback: Option<String>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub result_url: Option<String>,
    #[serde(default)]
    pub result_ref: Option<String>,
    #[serde(default)]
    pub result_type: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub artifacts: Option<Value>,
    /// When the handler really started, if later than the claim (claims come in batches).
    #[serde(default)]
    pub started_at: Option<Millis>,
    /// A failure that is a failed run rather than the handler's verdict (an exception, a crash,
    /// no handler): retried by the cue's retry policy. A plain reported failure is final unless the
    /// cue opts in (`retry.retry_reported_failures`).
    #[serde(default)]
    pub retry: bool,
}

/// An execution a chain step (`on_success_fire`) created, to hand to its transport once the
/// transaction that created it commits.
#[derive(Debug, Clone, PartialEq)]
pub struct Chained {
    pub id: String,
    pub transport: String,
}

/// What completing an attempt decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Finished {
    /// The execution is final (success or failure), and the chained execution its success
    /// started, if any.
    Done(Option<Chained>),
    /// The attempt failed; a retry is due at this instant.
    RetryAt(Millis),
    /// Delivered; the handler's outcome is due by this instant.
    AwaitOutcome(Millis),
}

fn idempotency_key(cue_id: &str, scheduled_for: Millis) -> String {
    format!("{cue_id}:{scheduled_for}")
}

#[allow(clippy::too_many_arguments)]
fn insert_execution(
    conn: &Db<'_>,
    cue: &CueRow,
    scheduled_for: Millis,
    state: &str,
    triggered_by: &str,
    error: Option<&str>,
    payload: &str,
    key: Option<String>,
    replay_of: Option<&str>,
    now: Millis,
) -> Result<Option<String>> {
    let id = new_id("exec", now);
    let key = key.unwrap_or_else(|| idempotency_key(&cue.id, scheduled_for));
    let mut stmt = conn.prepare_cached(
        "INSERT INTO executions (id, cue_id, scheduled_for, status, triggered_by, replay_of, idempotency_key, payload,
            error_message, outcome_deadline_seconds, created_at, updated_at, claim_deadline_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11,
            CASE WHEN ?12 THEN ?11 + (SELECT claim_timeout_seconds * 1000 FROM cues WHERE id = ?2) END)
         ON CONFLICT DO NOTHING",
    )?;
    let n = stmt.execute(params![
        id,
        cue.id,
        scheduled_for,
        state,
        triggered_by,
        replay_of,
        key,
        payload,
        error,
        cue.outcome_deadline_seconds,
        now,
        cue.transport == "worker" && state == status::PENDING
    ])?;
    Ok((n == 1).then_some(id))
}

/// A run of the cue that is still going, for `overlap=skip`: one being delivered or run, or one
/// queued that has not started yet. A run waiting for its retry (`retrying`, or `pending` again
/// after a failed or interrupted attempt) is not running: later ticks go ahead.
fn open_execution(conn: &Db<'_>, cue_id: &str) -> Result<Option<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM executions
         WHERE cue_id = ?1 AND status IN ('pending', 'delivering', 'retrying')
           AND (status = 'delivering' OR (status = 'pending' AND attempts = 0)) LIMIT 1",
    )?;
    stmt.query_row(params![cue_id], |r| r.get(0)).optional()
}

/// Writes ticks that did not run, one row each up to a cap, then one summary row.
fn record_missed(
    conn: &Db<'_>,
    cue: &CueRow,
    ticks: &[Millis],
    extra: usize,
    reason: &str,
    now: Millis,
) -> Result<()> {
    let (each, rest) = ticks.split_at(ticks.len().min(MISSED_ROWS_CAP));
    for t in each {
        insert_execution(
            conn,
            cue,
            *t,
            status::MISSED,
            "schedule",
            Some(reason),
            "{}",
            None,
            None,
            now,
        )?;
    }
    let more = rest.len() + extra;
    if let Some(first) = rest.first() {
        let last = rest.last().copied().unwrap_or(*first);
        let msg = format!(
            "{reason}; this row stands for {more} missed ticks from {} to {} or later, not recorded one by one",
            format_utc(*first),
            format_utc(last)
        );
        insert_execution(
            conn,
            cue,
            *first,
            status::MISSED,
            "schedule",
            Some(&msg),
            "{}",
            None,
            None,
            now,
        )?;
    }
    Ok(())
}

/// Fires every tick of `cue_id` that is due by `now`, applying the catch-up policy to ticks that
/// are more than `grace_ms` late and the overlap policy to all. Returns `None` when nothing is due
/// (the timer entry that asked is stale: the cue was paused, moved or deleted since).
pub fn fire_due(
    conn: &Db<'_>,
    cue_id: &str,
    now: Millis,
    grace_ms: i64,
) -> Result<Option<FireResult>> {
    let Some(cue) = cues::load(conn, cue_id)? else {
        return Ok(None);
    };
    let Some(expected) = cue.next_run.filter(|t| cue.status == "active" && *t <= now) else {
        return Ok(None);
    };
    // Every tick from `expected` up to now.
    let mut due = Vec::new();
    let mut unrecorded = 0usize;
    let mut next = Some(expected);
    while let Some(t) = next {
        if t > now {
            break;
        }
        if due.len() < MISSED_WALK_CAP {
            due.push(t);
        } else {
            unrecorded += 1;
            if unrecorded > MISSED_WALK_CAP {
                next = cue.schedule.next_after(now);
                break;
            }
        }
        next = cue.schedule.next_after(t);
    }
    let split = due.partition_point(|t| *t < now - grace_ms);
    let (late, on_time) = due.split_at(split);
    let (fire, missed, reason): (Vec<Millis>, Vec<Millis>, String) = match cue.catch_up.as_str() {
        "skip" => (
            on_time.to_vec(),
            late.to_vec(),
            "missed: cueapi was not running at this time (catch_up=skip)".into(),
        ),
        "all" => {
            let keep = late.len().saturating_sub(cue.catch_up_max as usize);
            let mut f = late[keep..].to_vec();
            f.extend_from_slice(on_time);
            (
                f,
                late[..keep].to_vec(),
                format!(
                    "missed: more than catch_up_max={} ticks were late",
                    cue.catch_up_max
                ),
            )
        }
        _ => {
            if on_time.is_empty() && !late.is_empty() {
                let (last, older) = late
                    .split_last()
                    .map(|(l, o)| (*l, o.to_vec()))
                    .unwrap_or((expected, vec![]));
                (
                    vec![last],
                    older,
                    format!(
                        "missed: folded into one catch-up run for {} (catch_up=once)",
                        format_utc(last)
                    ),
                )
            } else {
                (
                    on_time.to_vec(),
                    late.to_vec(),
                    "missed: a later tick ran instead (catch_up=once)".into(),
                )
            }
        }
    };
    record_missed(conn, &cue, &missed, unrecorded, &reason, now)?;
    let running = if cue.overlap == "skip" {
        open_execution(conn, &cue.id)?
    } else {
        None
    };
    let mut created = Vec::new();
    for t in &fire {
        match &running {
            Some(other) => {
                let why = format!(
                    "skipped: execution {other} of this cue was still running (overlap=skip)"
                );
                insert_execution(
                    conn,
                    &cue,
                    *t,
                    status::SKIPPED,
                    "schedule",
                    Some(&why),
                    "{}",
                    None,
                    None,
                    now,
                )?;
            }
            None => {
                if let Some(id) = insert_execution(
                    conn,
                    &cue,
                    *t,
                    status::PENDING,
                    "schedule",
                    None,
                    &cue.payload,
                    None,
                    None,
                    now,
                )? {
                    created.push(id);
                }
            }
        }
    }
    let new_status = final_status(&cue, next, !created.is_empty());
    conn.prepare_cached(
        "UPDATE cues SET next_run = ?2, fired_count = fired_count + ?3, status = ?4, updated_at = ?5 WHERE id = ?1",
    )?
    .execute(params![cue.id, next, created.len() as i64, new_status, now])?;
    Ok(Some(FireResult {
        created,
        transport: cue.transport.clone(),
        next_run: next,
    }))
}

/// The cue of an execution still pending (`None` once it is claimed, finished or gone).
pub fn pending_cue(conn: &Db<'_>, execution_id: &str) -> Result<Option<String>> {
    conn.prepare_cached("SELECT cue_id FROM executions WHERE id = ?1 AND status = 'pending'")?
        .query_row(params![execution_id], |r| r.get(0))
        .optional()
}

/// Claims a pending execution for `worker`: its attempt starts now.
pub fn claim(
    conn: &Db<'_>,
    execution_id: &str,
    worker: &str,
    now: Millis,
    lease_ms: i64,
    start_deadline: bool,
) -> Result<Option<Claimed>> {
    let row = conn
        .prepare_cached(
            "UPDATE executions SET status = 'delivering', attempts = attempts + 1, started_at = COALESCE(started_at, ?2),
                last_attempt_at = ?2, claimed_by = ?3, claimed_at = ?2, lease_expires_at = ?2 + ?4, next_retry = NULL,
                outcome_deadline_at = CASE WHEN ?5 THEN COALESCE(outcome_deadline_at,
                    CASE WHEN outcome_deadline_seconds IS NOT NULL THEN ?2 + outcome_deadline_seconds * 1000 END)
                    ELSE outcome_deadline_at END,
                updated_at = ?2
             WHERE id = ?1 AND status = 'pending'
             RETURNING cue_id, scheduled_for, attempts, payload, idempotency_key, triggered_by, outcome_deadline_at",
        )?
        .query_row(params![execution_id, now, worker, lease_ms, start_deadline], |r| {
            Ok((
                r.get::<String>(0)?,
                r.get::<Millis>(1)?,
                r.get::<i64>(2)?,
                r.get::<String>(3)?,
                r.get::<String>(4)?,
                r.get::<String>(5)?,
                r.get::<Option<Millis>>(6)?,
            ))
        })
        .optional()?;
    let Some((cue_id, scheduled_for, attempt, payload, key, triggered_by, deadline)) = row else {
        return Ok(None);
    };
    conn.prepare_cached(
        "INSERT INTO attempts (execution_id, number, status, started_at, claimed_by)
         VALUES (?1, ?2, 'running', ?3, ?4)
         ON CONFLICT (execution_id, number) DO UPDATE SET status = excluded.status,
             started_at = excluded.started_at, claimed_by = excluded.claimed_by, finished_at = NULL,
             duration_ms = NULL, error = NULL, error_type = NULL, traceback = NULL,
             http_status = NULL, outcome = NULL",
    )?
    .execute(params![execution_id, attempt, now, worker])?;
    let cue_name: String = conn
        .prepare_cached("SELECT name FROM cues WHERE id = ?1")?
        .query_row(params![&cue_id], |r| r.get(0))?;
    Ok(Some(Claimed {
        execution_id: execution_id.to_string(),
        cue_id,
        cue_name,
        scheduled_for,
        attempt,
        payload,
        idempotency_key: key,
        triggered_by,
        outcome_deadline_at: if attempt == 1 { deadline } else { None },
    }))
}

/// Gives back a claim whose request never went out (a delivery claimed to wait for a slot, when
/// the engine closes first): the execution is pending again as before its claim, and the attempt
/// is gone. Whether `claimed_by`'s attempt `attempt` was still waiting to go out.
pub fn unclaim(
    conn: &Db<'_>,
    execution_id: &str,
    attempt: i64,
    claimed_by: &str,
    now: Millis,
) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "UPDATE executions SET status = 'pending', attempts = attempts - 1,
                started_at = CASE WHEN attempts = 1 THEN NULL ELSE started_at END,
                last_attempt_at = (SELECT a.started_at FROM attempts a WHERE a.execution_id = ?1 AND a.number = ?2 - 1),
                claimed_by = NULL, claimed_at = NULL, lease_expires_at = NULL, updated_at = ?4
             WHERE id = ?1 AND status = 'delivering' AND attempts = ?2 AND claimed_by = ?3",
        )?
        .execute(params![execution_id, attempt, claimed_by, now])?;
    if n == 0 {
        return Ok(false);
    }
    conn.prepare_cached("DELETE FROM attempts WHERE execution_id = ?1 AND number = ?2")?
        .execute(params![execution_id, attempt])?;
    Ok(true)
}

fn backoff_ms(backoff_minutes: &[f64], retry_number: i64) -> i64 {
    let idx = (retry_number.max(1) - 1) as usize;
    let minutes = backoff_minutes
        .get(idx.min(backoff_minutes.len().saturating_sub(1)))
        .copied()
        .unwrap_or(1.0);
    (minutes * 60_000.0).round() as i64
}

fn outcome_state(mode: Option<&str>, o: &ReportedOutcome) -> (&'static str, Option<&'static str>) {
    if !o.success {
        return ("reported_failure", None);
    }
    let ok = |b: bool| {
        if b {
            ("verified_success", Some("valid"))
        } else {
            ("verification_failed", Some("invalid"))
        }
    };
    match mode {
        Some("require_external_id") => ok(o.external_id.as_deref().is_some_and(|s| !s.is_empty())),
        Some("require_result_url") => ok(o.result_url.is_some()),
        Some("require_artifacts") => ok(o
            .artifacts
            .as_ref()
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())),
        Some("manual") => ("verification_pending", None),
        _ => ("reported_success", None),
    }
}

/// Checks that attempt `attempt` of an execution is the one running; returns its cue's policy,
/// the execution's outcome state and its outcome deadline (seconds).
fn running(
    conn: &Db<'_>,
    execution_id: &str,
    attempt: i64,
) -> Result<(cues::Policy, Option<String>, Option<i64>)> {
    type Row = (String, String, i64, Option<String>, Option<i64>);
    let (cue_id, state, attempts, outcome_state, deadline_s): Row = conn
        .prepare_cached(
            "SELECT cue_id, status, attempts, outcome_state, outcome_deadline_seconds FROM executions WHERE id = ?1",
        )?
        .query_row(params![execution_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?
        .ok_or_else(|| Error::ExecutionNotFound(execution_id.to_string()))?;
    if state != status::DELIVERING || attempts != attempt {
        return Err(Error::Conflict(format!(
            "attempt {attempt} of execution {execution_id} is not running (status {state}, attempt {attempts})"
        )));
    }
    let cue =
        cues::load_policy(conn, &cue_id)?.ok_or_else(|| Error::CueNotFound(cue_id.clone()))?;
    Ok((cue, outcome_state, deadline_s))
}

/// Validates an outcome report without touching the store.
pub fn check_outcome(o: &ReportedOutcome) -> Result<()> {
    let texts = [
        ("result", &o.result),
        ("error", &o.error),
        ("summary", &o.summary),
        ("external_id", &o.external_id),
        ("result_url", &o.result_url),
        ("result_ref", &o.result_ref),
        ("result_type", &o.result_type),
    ];
    for (field, value) in texts {
        let max = crate::limits::CUT_TEXT
            .iter()
            .chain(crate::limits::EVIDENCE_TEXT.iter())
            .find(|(f, _)| *f == field)
            .map_or(usize::MAX, |(_, n)| *n);
        if value.as_ref().is_some_and(|v| v.chars().count() > max) {
            return Err(Error::invalid(
                field,
                format!("is longer than {max} characters"),
            ));
        }
    }
    if let Some(m) = &o.metadata {
        if !m.is_object() {
            return Err(Error::invalid("metadata", "must be a JSON object"));
        }
        if crate::signing::canonical_json(m).len() > crate::limits::METADATA_BYTES {
            return Err(Error::invalid(
                "metadata",
                format!(
                    "is larger than {} bytes (as JSON)",
                    crate::limits::METADATA_BYTES
                ),
            ));
        }
    }
    if o.artifacts.as_ref().is_some_and(|a| !a.is_array()) {
        return Err(Error::invalid("artifacts", "must be a list"));
    }
    Ok(())
}

/// Records the end of attempt `attempt` of an execution: the outcome when it is final, or the
/// failure and the time of the next retry. Every check comes before the first write, so a refused
/// report leaves no trace in the batch it shares a transaction with.
pub fn complete(
    conn: &Db<'_>,
    execution_id: &str,
    attempt: i64,
    o: &ReportedOutcome,
    now: Millis,
) -> Result<Finished> {
    check_outcome(o)?;
    let (cue, prior_state, _) = running(conn, execution_id, attempt)?;
    conn.prepare_cached(
        "UPDATE attempts SET status = ?3, finished_at = ?4, started_at = COALESCE(?8, started_at),
            duration_ms = ?4 - COALESCE(?8, started_at), error = ?5, error_type = ?6, traceback = ?7
         WHERE execution_id = ?1 AND number = ?2",
    )?
    .execute(params![
        execution_id,
        attempt,
        if o.success { "success" } else { "failed" },
        now,
        o.error,
        o.error_type,
        o.traceback,
        o.started_at
    ])?;
    // One rule for failures: a failed run (`retry`) is retried like a failed delivery; a reported
    // failure is the handler's verdict and final, unless the cue retries those too.
    let retried = o.retry || cue.retry_reported_failures;
    if !o.success && retried && attempt - 1 < cue.max_attempts {
        // The report of a failed try that will be retried stays on its attempt: nothing is lost.
        conn.prepare_cached(
            "UPDATE attempts SET outcome = ?3 WHERE execution_id = ?1 AND number = ?2",
        )?
        .execute(params![
            execution_id,
            attempt,
            attempt_report(o).to_string()
        ])?;
        let at = now + backoff_ms(&cue.backoff_minutes, attempt);
        conn.prepare_cached(
            "UPDATE executions SET status = 'retrying', next_retry = ?2, error_message = ?3, claimed_by = NULL,
                lease_expires_at = NULL, updated_at = ?4 WHERE id = ?1",
        )?
        .execute(params![execution_id, at, o.error.as_deref().unwrap_or("failed"), now])?;
        alerts::outcome_reported(conn, &cue.id, execution_id, false, "reported_failure", now)?;
        return Ok(Finished::RetryAt(at));
    }
    let (new_state, validation) = outcome_state(cue.verification_mode.as_deref(), o);
    let new_state = if prior_state.as_deref() == Some("outcome_timeout") {
        "outcome_timeout"
    } else {
        new_state
    };
    let has_proof = o.external_id.is_some() || o.result_url.is_some() || o.artifacts.is_some();
    let json_of = |v: &Option<Value>| v.as_ref().map(|v| v.to_string());
    conn.prepare_cached(
        "UPDATE executions SET status = ?2, delivered_at = CASE WHEN ?3 THEN CAST(?4 AS BIGINT) END, error_message = ?5,
            claimed_by = NULL, lease_expires_at = NULL,
            outcome_success = ?3, outcome_result = ?6, outcome_error = ?5, outcome_metadata = ?7, outcome_recorded_at = ?4,
            outcome_state = ?8, evidence_external_id = ?9, evidence_result_url = ?10, evidence_result_ref = ?11,
            evidence_result_type = ?12, evidence_summary = ?13, evidence_artifacts = ?14, evidence_validation_state = ?15,
            evidence_produced_at = CASE WHEN ?16 THEN ?4 END, updated_at = ?4
         WHERE id = ?1",
    )?
    .execute(params![
        execution_id,
        if o.success { status::SUCCESS } else { status::FAILED },
        o.success,
        now,
        o.error,
        o.result,
        json_of(&o.metadata),
        new_state,
        o.external_id,
        o.result_url,
        o.result_ref,
        o.result_type,
        o.summary,
        json_of(&o.artifacts),
        validation,
        has_proof
    ])?;
    finish_cue(conn, &cue, o.success, now)?;
    if !o.success || cue.alert_state || new_state == "verification_failed" {
        alerts::outcome_reported(conn, &cue.id, execution_id, o.success, new_state, now)?;
    }
    if !o.success {
        let error = o
            .error
            .as_deref()
            .unwrap_or("the handler reported a failure");
        alerts::execution_failed(
            conn,
            &cue.id,
            execution_id,
            alerts::kind::RETRIES_EXHAUSTED,
            error,
            now,
        )?;
    }
    let chained = if is_success_state(new_state) {
        chain_after(conn, execution_id, now)?
    } else {
        None
    };
    Ok(Finished::Done(chained))
}

/// A webhook execution delivered with success whose handler then reports a failure over the API:
/// the handler's verdict is final, so the execution fails, and so does a one-shot cue (it was
/// `completed` by the delivery); a recurring cue with `on_failure.pause` pauses. Executions not
/// delivered yet are left as they are (their delivery decides).
fn failed_after_delivery(conn: &Db<'_>, cue_id: &str, id: &str, now: Millis) -> Result<()> {
    let changed = conn
        .prepare_cached(
            "UPDATE executions SET status = 'failed', updated_at = ?2 WHERE id = ?1 AND status = 'success'",
        )?
        .execute(params![id, now])?;
    let Some(cue) = cues::load_policy(conn, cue_id)? else {
        return Ok(());
    };
    if changed == 0 {
        return Ok(());
    }
    let (to, from) = match (cue.one_shot, cue.on_failure_pause) {
        (true, _) => ("failed", "('active', 'completed')"),
        (false, true) => ("paused", "('active')"),
        (false, false) => return Ok(()),
    };
    conn.execute(
        &format!("UPDATE cues SET status = ?2, updated_at = ?3 WHERE id = ?1 AND status IN {from}"),
        params![cue_id, to, now],
    )?;
    Ok(())
}

/// Whether an outcome state is a success that chains (`on_success_fire`).
fn is_success_state(state: &str) -> bool {
    matches!(state, "reported_success" | "verified_success")
}

/// A reported outcome as kept on the attempt it ended.
fn attempt_report(o: &ReportedOutcome) -> Value {
    let mut evidence = serde_json::Map::new();
    for (k, v) in [
        ("external_id", &o.external_id),
        ("result_url", &o.result_url),
        ("result_ref", &o.result_ref),
        ("result_type", &o.result_type),
        ("summary", &o.summary),
    ] {
        if let Some(v) = v {
            evidence.insert(k.into(), Value::String(v.clone()));
        }
    }
    if let Some(a) = &o.artifacts {
        evidence.insert("artifacts".into(), a.clone());
    }
    json!({
        "outcome": {"success": o.success, "result": o.result, "error": o.error, "metadata": o.metadata},
        "outcome_state": "reported_failure",
        "evidence": evidence,
    })
}

/// A retry (or a fire sent for later) whose time has come becomes claimable. Returns the cue's
/// transport when it did.
pub fn retry_due(conn: &Db<'_>, execution_id: &str, now: Millis) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "UPDATE executions SET status = 'pending', next_retry = NULL, updated_at = ?2,
                claim_deadline_at = next_retry + (SELECT claim_timeout_seconds * 1000 FROM cues
                                          WHERE cues.id = executions.cue_id AND transport = 'worker')
             WHERE id = ?1 AND next_retry <= ?2
               AND (status = 'retrying' OR (status = 'pending' AND next_retry IS NOT NULL))
             RETURNING (SELECT transport FROM cues WHERE cues.id = executions.cue_id)",
        )?
        .query_row(params![execution_id, now], |r| r.get::<Option<String>>(0))
        .optional()?
        .map(|t| t.unwrap_or_else(|| "local".into())))
}

/// Marks `outcome_timeout` on an execution whose deadline passed without a reported outcome.
pub fn deadline_due(conn: &Db<'_>, execution_id: &str, now: Millis) -> Result<bool> {
    let cue_id: Option<(String, Option<Millis>)> = conn
        .prepare_cached(
            "UPDATE executions SET outcome_state = 'outcome_timeout', outcome_timeout_at = ?2, updated_at = ?2
             WHERE id = ?1 AND outcome_recorded_at IS NULL AND outcome_state IS NULL AND outcome_deadline_at <= ?2
             RETURNING cue_id, outcome_deadline_seconds",
        )?
        .query_row(params![execution_id, now], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((cue_id, seconds)) = cue_id else {
        return Ok(false);
    };
    let why = format!(
        "no outcome was reported within {} s",
        seconds.unwrap_or_default()
    );
    alerts::execution_failed(
        conn,
        &cue_id,
        execution_id,
        alerts::kind::OUTCOME_TIMEOUT,
        &why,
        now,
    )?;
    Ok(true)
}

/// Work to put back on the timer and the queue after opening a database.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Executions waiting for a claim (local) or a send (webhook), oldest first: (id, transport).
    pub pending: Vec<(String, String)>,
    /// Executions waiting for a retry: (due, id).
    pub retries: Vec<(Millis, String)>,
    /// Outcome deadlines still open: (due, id).
    pub deadlines: Vec<(Millis, String)>,
    /// How many in-flight attempts of a dead process were closed as interrupted.
    pub interrupted: usize,
    /// Claims remote workers hold (they outlive this process): (end of lease, id).
    pub leases: Vec<(Millis, String)>,
    /// Worker executions waiting for a claim: (end of the claim window, id).
    pub claim_windows: Vec<(Millis, String)>,
}

/// Closes the attempts a previous process left running (it no longer holds the database, so they
/// are dead), retries them as their cue allows, and lists the work to resume.
pub fn recover(conn: &Db<'_>, now: Millis, scope: &Scope) -> Result<Recovered> {
    let mut out = Recovered::default();
    let in_flight: Vec<(String, String, i64)> = {
        // Remote workers' claims are not this process's: their leases decide.
        let mut stmt = conn.prepare(
            "SELECT e.id, e.cue_id, e.attempts, e.claimed_by FROM executions e JOIN cues c ON c.id = e.cue_id
             WHERE e.status = 'delivering' AND c.transport != 'worker'",
        )?;
        let rows: Vec<(String, String, i64, Option<String>)> = stmt.query_map(params![], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
        rows.into_iter()
            .filter(|(_, cue, _, by)| scope.holds(cue) && scope.abandoned(by.as_deref()))
            .map(|(id, cue, attempt, _)| (id, cue, attempt))
            .collect()
    };
    let why = if scope.live.is_empty() {
        "interrupted: the process running this attempt exited before it finished"
    } else {
        "interrupted: the node running this attempt exited or lost the database before it finished"
    };
    for (id, cue_id, attempt) in in_flight {
        conn.execute(
            "UPDATE attempts SET status = 'interrupted', finished_at = ?3, error = ?4 WHERE execution_id = ?1 AND number = ?2",
            params![id, attempt, now, why],
        )?;
        let policy = cues::load_policy(conn, &cue_id)?;
        let max_retries = policy.as_ref().map_or(0, |c| c.max_attempts);
        let next = if attempt - 1 < max_retries {
            status::PENDING
        } else {
            status::FAILED
        };
        conn.execute(
            "UPDATE executions SET status = ?2, error_message = ?3, claimed_by = NULL, lease_expires_at = NULL, updated_at = ?4
             WHERE id = ?1",
            params![id, next, why, now],
        )?;
        if next == status::FAILED {
            // Final, like any run whose retries are spent: a one-shot cue fails, a cue that asks
            // pauses, and the run is counted.
            if let Some(policy) = &policy {
                finish_cue(conn, policy, false, now)?;
            }
            alerts::execution_failed(
                conn,
                &cue_id,
                &id,
                alerts::kind::RETRIES_EXHAUSTED,
                why,
                now,
            )?;
        }
        out.interrupted += 1;
    }
    // The rest is read with the cue of each row, and kept when the scope holds that cue.
    let scoped = |sql: &str, args: &[&dyn Param]| -> Result<Vec<(Millis, String)>> {
        let rows: Vec<(Millis, String, String)> = conn
            .prepare(sql)?
            .query_map(args, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows
            .into_iter()
            .filter(|(_, _, cue)| scope.holds(cue))
            .map(|(at, id, _)| (at, id))
            .collect())
    };
    let pending: Vec<(String, String, String)> = conn
        .prepare(
            "SELECT e.id, c.transport, e.cue_id FROM executions e JOIN cues c ON c.id = e.cue_id
             WHERE e.status = 'pending' AND e.next_retry IS NULL AND c.transport IN ('local', 'webhook')
             ORDER BY e.scheduled_for, e.id",
        )?
        .query_map(params![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    out.pending = pending
        .into_iter()
        .filter(|(_, _, cue)| scope.holds(cue))
        .map(|(id, transport, _)| (id, transport))
        .collect();
    out.retries = scoped(
        "SELECT next_retry, id, cue_id FROM executions
         WHERE (status = 'retrying' OR (status = 'pending' AND next_retry IS NOT NULL))",
        params![],
    )?;
    out.deadlines = scoped(
        "SELECT outcome_deadline_at, id, cue_id FROM executions
         WHERE outcome_deadline_at IS NOT NULL AND outcome_recorded_at IS NULL AND outcome_state IS NULL
          ",
        params![],
    )?;
    out.leases = scoped(
        "SELECT COALESCE(e.lease_expires_at, ?1), e.id, e.cue_id FROM executions e JOIN cues c ON c.id = e.cue_id
         WHERE e.status = 'delivering' AND c.transport = 'worker'",
        params![now],
    )?;
    out.claim_windows = scoped(
        "SELECT claim_deadline_at, id, cue_id FROM executions
         WHERE status = 'pending' AND next_retry IS NULL AND claim_deadline_at IS NOT NULL",
        params![],
    )?;
    Ok(out)
}

/// A manual fire: the execution and when it goes out.
#[derive(Debug, Clone)]
pub struct Fired {
    pub id: String,
    /// False when an earlier fire with the same idempotency key is returned instead.
    pub created: bool,
    /// True when that earlier fire was made with another request (`id` is the earlier one): the
    /// key cannot be used again for something else.
    pub conflicting: bool,
    pub scheduled_for: Millis,
    /// Set when the fire was sent for later: it is dispatched at this instant.
    pub later: Option<Millis>,
    pub transport: String,
}

/// How long an idempotency key of a manual fire is remembered.
pub const FIRE_KEY_TTL_MS: Millis = 24 * 3600 * 1000;

/// An idempotency key of a manual fire, and a digest of the request it came with.
pub struct FireKey<'a> {
    pub key: &'a str,
    pub request: &'a str,
}

/// Creates an execution outside the schedule, now or at `send_at` (when that is in the future),
/// with `payload` instead of the cue's. With an idempotency key, a second fire with the same key
/// within a day returns the first execution (`conflicting` when it came with another request).
pub fn fire_at(
    conn: &Db<'_>,
    cue_id: &str,
    payload: Option<&Value>,
    send_at: Option<Millis>,
    fire_key: Option<FireKey<'_>>,
    now: Millis,
) -> Result<Fired> {
    let key = fire_key.as_ref().map(|k| k.key);
    let cue = cues::load(conn, cue_id)?.ok_or_else(|| Error::CueNotFound(cue_id.to_string()))?;
    let payload = match payload {
        Some(p) if p.is_object() && !cues::has_nul(p) => p.to_string(),
        Some(p) if p.is_object() => {
            return Err(Error::invalid("payload", "must not contain NUL characters"))
        }
        Some(_) => return Err(Error::invalid("payload", "must be a JSON object")),
        None => cue.payload.clone(),
    };
    let stored_key = key.map(|k| format!("{}:fire:key:{k}", cue.id));
    if let Some(k) = &stored_key {
        let found = conn
            .prepare_cached(
                "SELECT id, scheduled_for, next_retry, fire_request FROM executions
                 WHERE cue_id = ?1 AND triggered_by = 'manual_fire' AND idempotency_key = ?2 AND created_at > ?3
                 ORDER BY created_at DESC LIMIT 1",
            )?
            .query_row(params![cue.id, k, now - FIRE_KEY_TTL_MS], |r| {
                Ok((
                    r.get::<String>(0)?,
                    r.get::<Millis>(1)?,
                    r.get(2)?,
                    r.get::<Option<String>>(3)?,
                ))
            })
            .optional()?;
        if let Some((id, scheduled_for, later, request)) = found {
            let asked = fire_key.as_ref().map(|k| k.request);
            return Ok(Fired {
                id,
                created: false,
                conflicting: request.is_some() && request.as_deref() != asked,
                scheduled_for,
                later,
                transport: cue.transport,
            });
        }
    }
    let later = send_at.filter(|t| *t > now);
    let scheduled_for = later.unwrap_or(now);
    let id = insert_execution(
        conn,
        &cue,
        scheduled_for,
        status::PENDING,
        "manual_fire",
        None,
        &payload,
        stored_key.clone(),
        None,
        now,
    )?
    .ok_or_else(|| Error::Conflict("could not create the execution".into()))?;
    if stored_key.is_none() || later.is_some() || fire_key.is_some() {
        conn.execute(
            "UPDATE executions SET idempotency_key = COALESCE(?3, ?2), next_retry = ?4, fire_request = ?5
             WHERE id = ?1",
            params![
                id,
                format!("{}:fire:{id}", cue.id),
                stored_key,
                later,
                fire_key.as_ref().map(|k| k.request)
            ],
        )?;
    }
    Ok(Fired {
        id,
        created: true,
        conflicting: false,
        scheduled_for,
        later,
        transport: cue.transport,
    })
}

/// Creates an execution now, outside the schedule.
pub fn fire_now(
    conn: &Db<'_>,
    cue_id: &str,
    payload: Option<&Value>,
    now: Millis,
) -> Result<String> {
    Ok(fire_at(conn, cue_id, payload, None, None, now)?.id)
}

/// Chains deeper than this are not followed (loops are refused when a cue is stored; this bounds
/// what a long chain can do).
pub const MAX_CHAIN_DEPTH: i64 = 100;

/// After execution `parent` succeeded: fires the cue its cue chains to (`on_success_fire`), once.
/// The step is an execution like any other (`triggered_by: "chain"`, with `chain_parent_id` and
/// `chain_depth`); one that cannot run — its cue paused or finished, a payload it requires, a chain
/// too deep — is recorded as `skipped` with the reason. Returns the execution to dispatch.
pub(crate) fn chain_after(conn: &Db<'_>, parent: &str, now: Millis) -> Result<Option<Chained>> {
    let found = conn
        .prepare_cached(
            "SELECT c.on_success_fire, e.chain_depth FROM executions e JOIN cues c ON c.id = e.cue_id
             WHERE e.id = ?1 AND c.on_success_fire IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM executions x WHERE x.chain_parent_id = e.id)",
        )?
        .query_row(params![parent], |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)))
        .optional()?;
    let Some((target, depth)) = found else {
        return Ok(None);
    };
    let Some(cue) = cues::load(conn, &target)? else {
        return Ok(None);
    };
    let depth = depth + 1;
    let required: Option<(bool, Option<String>)> = conn
        .prepare_cached(
            "SELECT require_payload_override, required_payload_keys FROM cues WHERE id = ?1",
        )?
        .query_row(params![&target], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (needs_override, keys) = required.unwrap_or((false, None));
    let missing: Vec<String> = keys
        .as_deref()
        .and_then(|k| serde_json::from_str::<Vec<String>>(k).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|k| {
            serde_json::from_str::<Value>(&cue.payload)
                .ok()
                .and_then(|p| p.get(k).map(|_| ()))
                .is_none()
        })
        .collect();
    let why_not = if cue.status != "active" {
        Some(format!(
            "cue is {}: the chain step from {parent} did not run",
            cue.status
        ))
    } else if depth > MAX_CHAIN_DEPTH {
        Some(format!(
            "the chain from {parent} is deeper than {MAX_CHAIN_DEPTH} steps"
        ))
    } else if needs_override {
        Some(format!(
            "the cue requires a payload_override, which a chain step from {parent} does not carry"
        ))
    } else if !missing.is_empty() {
        Some(format!(
            "the cue's payload lacks the keys it requires ({}): the chain step from {parent} did not run",
            missing.join(", ")
        ))
    } else {
        None
    };
    let state = if why_not.is_some() {
        status::SKIPPED
    } else {
        status::PENDING
    };
    let key = format!("{}:chain:{parent}", cue.id);
    let Some(id) = insert_execution(
        conn,
        &cue,
        now,
        state,
        "chain",
        why_not.as_deref(),
        &cue.payload,
        Some(key),
        None,
        now,
    )?
    else {
        return Ok(None);
    };
    conn.prepare_cached(
        "UPDATE executions SET chain_parent_id = ?2, chain_depth = ?3 WHERE id = ?1",
    )?
    .execute(params![id, parent, depth])?;
    Ok(why_not.is_none().then_some(Chained {
        id,
        transport: cue.transport,
    }))
}

/// Runs an execution again as a new execution with the same payload.
pub fn replay(conn: &Db<'_>, execution_id: &str, now: Millis) -> Result<String> {
    let (cue_id, payload): (String, String) = conn
        .query_row(
            "SELECT cue_id, payload FROM executions WHERE id = ?1",
            params![execution_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .ok_or_else(|| Error::ExecutionNotFound(execution_id.to_string()))?;
    let cue = cues::load(conn, &cue_id)?.ok_or_else(|| Error::CueNotFound(cue_id.clone()))?;
    let key = format!("{cue_id}:replay:{execution_id}:{now}");
    insert_execution(
        conn,
        &cue,
        now,
        status::PENDING,
        "replay",
        None,
        &payload,
        Some(key),
        Some(execution_id),
        now,
    )?
    .ok_or_else(|| Error::Conflict("could not create the execution".into()))
}

/// Pauses an active cue; its next run is kept, so that resuming records the ticks the pause missed.
pub fn pause(conn: &Db<'_>, cue_id: &str, now: Millis) -> Result<()> {
    let cue = cues::load(conn, cue_id)?.ok_or_else(|| Error::CueNotFound(cue_id.to_string()))?;
    if cue.status == "active" {
        cues::set_status(conn, cue_id, "paused", cue.next_run, now)?;
    }
    Ok(())
}

/// Resumes a paused cue: ticks that fell in the pause are recorded as missed; the schedule
/// continues from now.
pub fn resume(conn: &Db<'_>, cue_id: &str, now: Millis) -> Result<Option<Millis>> {
    let cue = cues::load(conn, cue_id)?.ok_or_else(|| Error::CueNotFound(cue_id.to_string()))?;
    if cue.status != "paused" {
        return Ok(cue.next_run);
    }
    let mut ticks = Vec::new();
    let mut extra = 0usize;
    let mut t = cue.next_run;
    while let Some(at) = t {
        if at > now {
            break;
        }
        if ticks.len() < MISSED_ROWS_CAP + 1 {
            ticks.push(at);
        } else {
            extra += 1;
            if extra > MISSED_WALK_CAP {
                break;
            }
        }
        t = cue.schedule.next_after(at);
    }
    record_missed(conn, &cue, &ticks, extra, "missed: the cue was paused", now)?;
    let next = cue.schedule.next_after(now);
    cues::set_status(conn, cue_id, final_status(&cue, next, false), next, now)?;
    Ok(next)
}

/// The status of a cue after its ticks up to now were handled: a schedule with no tick left is
/// done — a recurring one `completed`; a one-shot stays `active` until its run finishes, or is
/// `failed` when its only tick did not run (missed or skipped).
fn final_status(cue: &CueRow, next: Option<Millis>, ran: bool) -> &'static str {
    match (next, cues::is_one_shot(cue), ran) {
        (Some(_), _, _) => "active",
        (None, false, _) => "completed",
        (None, true, true) => "active",
        (None, true, false) => "failed",
    }
}

/// Filters for listing executions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionFilter {
    #[serde(default)]
    pub cue_id: Option<String>,
    #[serde(default)]
    pub status: Option<Vec<String>>,
    #[serde(default)]
    pub outcome_state: Option<String>,
    #[serde(default)]
    pub since: Option<Millis>,
    #[serde(default)]
    pub has_evidence: Option<bool>,
    #[serde(default)]
    pub result_type: Option<String>,
    /// `schedule`, `manual_fire`, `replay` or `chain`.
    #[serde(default)]
    pub triggered_by: Option<String>,
    #[serde(default)]
    pub limit: Option<i64>,
    #[serde(default)]
    pub offset: Option<i64>,
}

const EXEC_COLUMNS: &str = "e.id, e.cue_id, c.name, e.scheduled_for, e.status, e.triggered_by, e.replay_of, e.idempotency_key,
    e.payload, e.attempts, e.next_retry, e.error_message, e.started_at, e.delivered_at, e.last_attempt_at,
    e.outcome_success, e.outcome_result, e.outcome_error, e.outcome_metadata, e.outcome_recorded_at, e.outcome_state,
    e.outcome_deadline_at, e.outcome_timeout_at, e.evidence_external_id, e.evidence_result_url, e.evidence_result_ref,
    e.evidence_result_type, e.evidence_summary, e.evidence_validation_state, e.evidence_produced_at,
    e.evidence_artifacts, e.evidence_metadata, e.created_at, e.updated_at, e.http_status, e.response_body, c.transport,
    (SELECT a.claimed_by FROM attempts a WHERE c.transport = 'worker' AND a.execution_id = e.id
        AND a.number = e.attempts AND a.status != 'abandoned'), e.claimed_at, e.chain_parent_id, e.chain_depth";

fn parse_json(text: Option<String>) -> Value {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

fn execution_json(r: &Row<'_>) -> Result<Value> {
    let recorded: Option<i64> = r.get(19)?;
    let outcome = match recorded {
        Some(at) => json!({
            "success": r.get::<Option<bool>>(15)?,
            "result": r.get::<Option<String>>(16)?,
            "error": r.get::<Option<String>>(17)?,
            "metadata": parse_json(r.get(18)?),
            "recorded_at": at,
        }),
        None => Value::Null,
    };
    let evidence = json!({
        "external_id": r.get::<Option<String>>(23)?,
        "result_url": r.get::<Option<String>>(24)?,
        "result_ref": r.get::<Option<String>>(25)?,
        "result_type": r.get::<Option<String>>(26)?,
        "summary": r.get::<Option<String>>(27)?,
        "validation_state": r.get::<Option<String>>(28)?,
        "produced_at": r.get::<Option<i64>>(29)?,
        "artifacts": parse_json(r.get(30)?),
        "metadata": parse_json(r.get(31)?),
    });
    let has_evidence = evidence
        .as_object()
        .is_some_and(|m| m.values().any(|v| !v.is_null()));
    // The worker whose claim is the latest attempt, while it runs and after it ended with an
    // outcome; none once that claim was released (the attempt log keeps who held it).
    let claimer: Option<String> = r.get(37)?;
    Ok(json!({
        "id": r.get::<String>(0)?,
        "cue_id": r.get::<String>(1)?,
        "cue_name": r.get::<String>(2)?,
        "scheduled_for": r.get::<i64>(3)?,
        "status": r.get::<String>(4)?,
        "triggered_by": r.get::<String>(5)?,
        "replay_of": r.get::<Option<String>>(6)?,
        "idempotency_key": r.get::<String>(7)?,
        "payload": parse_json(r.get(8)?),
        "attempts": r.get::<i64>(9)?,
        "next_retry": r.get::<Option<i64>>(10)?,
        "error_message": r.get::<Option<String>>(11)?,
        "started_at": r.get::<Option<i64>>(12)?,
        "delivered_at": r.get::<Option<i64>>(13)?,
        "last_attempt_at": r.get::<Option<i64>>(14)?,
        "outcome": outcome,
        "outcome_state": r.get::<Option<String>>(20)?,
        "outcome_deadline_at": r.get::<Option<i64>>(21)?,
        "outcome_timeout_at": r.get::<Option<i64>>(22)?,
        "evidence": if has_evidence { evidence } else { Value::Null },
        "created_at": r.get::<i64>(32)?,
        "updated_at": r.get::<i64>(33)?,
        "http_status": r.get::<Option<i64>>(34)?,
        "response_body": r.get::<Option<String>>(35)?,
        "transport": r.get::<String>(36)?,
        "claimed_by_worker": claimer,
        "claimed_at": claimer.as_ref().and(r.get::<Option<i64>>(38)?),
        "chain_parent_id": r.get::<Option<String>>(39)?,
        "chain_depth": r.get::<i64>(40)?,
    }))
}

/// What can create an execution.
pub const TRIGGERS: &[&str] = &["schedule", "manual_fire", "replay", "chain"];

fn filter_sql(owner: &str, f: &ExecutionFilter) -> Result<(String, Vec<SqlValue>)> {
    let mut sql =
        String::from(" FROM executions e JOIN cues c ON c.id = e.cue_id WHERE c.owner = ?");
    let mut args: Vec<SqlValue> = vec![owner.to_string().into()];
    if let Some(cue) = &f.cue_id {
        sql.push_str(" AND e.cue_id = ?");
        args.push(cue.clone().into());
    }
    if let Some(states) = &f.status {
        for s in states {
            if !status::ALL.contains(&s.as_str()) {
                return Err(Error::invalid(
                    "status",
                    format!("{s:?} is not one of {}", status::ALL.join(", ")),
                ));
            }
        }
        if !states.is_empty() {
            sql.push_str(&format!(
                " AND e.status IN ({})",
                vec!["?"; states.len()].join(", ")
            ));
            args.extend(states.iter().map(|s| s.clone().into()));
        }
    }
    if let Some(state) = &f.outcome_state {
        if !OUTCOME_STATES.contains(&state.as_str()) {
            return Err(Error::invalid(
                "outcome_state",
                format!("{state:?} is not one of {}", OUTCOME_STATES.join(", ")),
            ));
        }
        sql.push_str(" AND e.outcome_state = ?");
        args.push(state.clone().into());
    }
    if let Some(since) = f.since {
        sql.push_str(" AND e.scheduled_for >= ?");
        args.push(since.into());
    }
    match f.has_evidence {
        Some(true) => sql.push_str(
            " AND (e.evidence_external_id IS NOT NULL OR e.evidence_result_url IS NOT NULL OR e.evidence_result_ref IS NOT NULL OR e.evidence_artifacts IS NOT NULL)",
        ),
        Some(false) => sql.push_str(
            " AND e.evidence_external_id IS NULL AND e.evidence_result_url IS NULL AND e.evidence_result_ref IS NULL AND e.evidence_artifacts IS NULL",
        ),
        None => {}
    }
    if let Some(rt) = &f.result_type {
        sql.push_str(" AND e.evidence_result_type = ?");
        args.push(rt.clone().into());
    }
    if let Some(t) = &f.triggered_by {
        if !TRIGGERS.contains(&t.as_str()) {
            return Err(Error::invalid(
                "triggered_by",
                format!("{t:?} is not one of {}", TRIGGERS.join(", ")),
            ));
        }
        sql.push_str(" AND e.triggered_by = ?");
        args.push(t.clone().into());
    }
    Ok((sql, args))
}

/// Lists executions, newest scheduled first.
pub fn list(conn: &Db<'_>, owner: &str, f: &ExecutionFilter) -> Result<Vec<Value>> {
    let (filter, mut args) = filter_sql(owner, f)?;
    let limit = f.limit.unwrap_or(100);
    let offset = f.offset.unwrap_or(0);
    if !(1..=10_000).contains(&limit) {
        return Err(Error::invalid("limit", "must be between 1 and 10000"));
    }
    if offset < 0 {
        return Err(Error::invalid("offset", "must not be negative"));
    }
    let sql = format!(
        "SELECT {EXEC_COLUMNS}{filter} ORDER BY e.scheduled_for DESC, e.id DESC LIMIT ? OFFSET ?"
    );
    args.push(limit.into());
    args.push(offset.into());
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(&as_params(&args), execution_json)?;
    Ok(rows)
}

/// How many executions match a filter (its limit and offset aside).
pub fn count(conn: &Db<'_>, owner: &str, f: &ExecutionFilter) -> Result<i64> {
    let (filter, args) = filter_sql(owner, f)?;
    let sql = format!("SELECT count(*){filter}");
    conn.query_row(&sql, &as_params(&args), |r| r.get(0))
}

/// One execution with its attempts.
pub fn get(conn: &Db<'_>, owner: &str, id: &str) -> Result<Value> {
    let sql = format!("SELECT {EXEC_COLUMNS} FROM executions e JOIN cues c ON c.id = e.cue_id WHERE e.id = ?1 AND c.owner = ?2");
    let mut v = conn
        .query_row(&sql, params![id, owner], execution_json)
        .optional()?
        .ok_or_else(|| Error::ExecutionNotFound(id.to_string()))?;
    let mut stmt = conn.prepare(
        "SELECT number, status, started_at, finished_at, duration_ms, error, error_type, traceback, http_status, claimed_by,
                outcome
         FROM attempts WHERE execution_id = ?1 ORDER BY number",
    )?;
    let attempts = stmt.query_map(params![id], |r| {
        Ok(json!({
            "number": r.get::<i64>(0)?,
            "status": r.get::<String>(1)?,
            "started_at": r.get::<i64>(2)?,
            "finished_at": r.get::<Option<i64>>(3)?,
            "duration_ms": r.get::<Option<i64>>(4)?,
            "error": r.get::<Option<String>>(5)?,
            "error_type": r.get::<Option<String>>(6)?,
            "traceback": r.get::<Option<String>>(7)?,
            "http_status": r.get::<Option<i64>>(8)?,
            "claimed_by": r.get::<Option<String>>(9)?,
            "outcome": parse_json(r.get(10)?),
        }))
    })?;
    if let Some(m) = v.as_object_mut() {
        m.insert("attempt_log".into(), Value::Array(attempts));
    }
    Ok(v)
}

/// Counts and durations of a cue's executions since an instant, as JSON.
pub fn stats(conn: &Db<'_>, cue_id: &str, since: Millis) -> Result<Value> {
    let mut counts = serde_json::Map::new();
    let mut stmt = conn.prepare("SELECT status, count(*) FROM executions WHERE cue_id = ?1 AND scheduled_for >= ?2 GROUP BY status")?;
    let mut total = 0i64;
    for row in stmt.query_map(params![cue_id, since], |r| {
        Ok((r.get::<String>(0)?, r.get::<i64>(1)?))
    })? {
        let (s, n) = row;
        total += n;
        counts.insert(s, n.into());
    }
    let count = |s: &str| counts.get(s).and_then(Value::as_i64).unwrap_or(0);
    let (ok, failed) = (count(status::SUCCESS), count(status::FAILED));
    let mut durations: Vec<i64> = conn
        .prepare(
            "SELECT a.duration_ms FROM executions e JOIN attempts a ON a.execution_id = e.id AND a.number = e.attempts
             WHERE e.cue_id = ?1 AND e.scheduled_for >= ?2 AND e.status IN ('success', 'failed')
               AND a.duration_ms IS NOT NULL",
        )?
        .query_map(params![cue_id, since], |r| r.get(0))?;
    durations.sort_unstable();
    let pct = |p: f64| -> Value {
        if durations.is_empty() {
            return Value::Null;
        }
        let idx = ((p * durations.len() as f64).ceil() as usize).clamp(1, durations.len()) - 1;
        durations[idx].into()
    };
    Ok(json!({
        "cue_id": cue_id,
        "since": since,
        "total": total,
        "counts": counts,
        "success_rate": if ok + failed > 0 { json!(ok as f64 / (ok + failed) as f64) } else { Value::Null },
        "duration_ms_p50": pct(0.50),
        "duration_ms_p95": pct(0.95),
    }))
}

/// Records a delivery attempt of a webhook execution: delivered (with the outcome a 2xx body
/// reported inline, or an outcome deadline from now), retried later, or failed for good.
pub fn delivered(
    conn: &Db<'_>,
    execution_id: &str,
    attempt: i64,
    a: &crate::delivery::Attempt,
    now: Millis,
) -> Result<Finished> {
    let (cue, _, deadline_s) = running(conn, execution_id, attempt)?;
    conn.prepare_cached(
        "UPDATE attempts SET status = ?3, started_at = COALESCE(?7, started_at), finished_at = ?4,
             duration_ms = ?4 - COALESCE(?7, started_at), error = ?5, http_status = ?6
         WHERE execution_id = ?1 AND number = ?2",
    )?
    .execute(params![
        execution_id,
        attempt,
        if a.delivered { "success" } else { "failed" },
        now,
        a.error,
        a.http_status.map(i64::from),
        a.sent_at
    ])?;
    if a.delivered {
        let deadline = match (&a.inline, deadline_s) {
            (None, Some(s)) => Some(now + s * 1000),
            _ => None,
        };
        conn.prepare_cached(
            "UPDATE executions SET status = 'success', delivered_at = ?2, http_status = ?3, response_body = ?4,
                error_message = NULL, claimed_by = NULL, lease_expires_at = NULL, outcome_deadline_at = ?5,
                updated_at = ?2
             WHERE id = ?1",
        )?
        .execute(params![execution_id, now, a.http_status.map(i64::from), a.response_body, deadline])?;
        let mut chained = None;
        match &a.inline {
            Some(o) => {
                let state =
                    write_outcome(conn, execution_id, cue.verification_mode.as_deref(), o, now)?;
                if !o.success || cue.alert_state || state == "verification_failed" {
                    alerts::outcome_reported(conn, &cue.id, execution_id, o.success, &state, now)?;
                }
                if is_success_state(&state) {
                    chained = chain_after(conn, execution_id, now)?;
                }
            }
            // A 2xx closes an incident of failed deliveries; one opened by reported outcomes
            // waits for a successful report.
            None if cue.alert_state => alerts::delivered_again(conn, &cue.id, execution_id, now)?,
            None => {}
        }
        // Delivered, and the receiver's answer said the work failed: the handler's verdict is
        // final (not retried), and the execution is failed like any reported failure.
        let reported_ok = a.inline.as_ref().is_none_or(|o| o.success);
        if !reported_ok {
            conn.prepare_cached("UPDATE executions SET status = 'failed' WHERE id = ?1")?
                .execute(params![execution_id])?;
        }
        finish_cue(conn, &cue, reported_ok, now)?;
        return Ok(deadline.map_or(Finished::Done(chained), Finished::AwaitOutcome));
    }
    let error = a.error.as_deref().unwrap_or("delivery failed");
    if !a.gone && attempt - 1 < cue.max_attempts {
        set_aside_outcome(conn, execution_id, attempt)?;
        let wait = backoff_ms(&cue.backoff_minutes, attempt).max(a.retry_after_ms.unwrap_or(0));
        let at = now + wait;
        conn.prepare_cached(
            "UPDATE executions SET status = 'retrying', next_retry = ?2, error_message = ?3, http_status = ?4,
                response_body = ?5, claimed_by = NULL, lease_expires_at = NULL, updated_at = ?6
             WHERE id = ?1",
        )?
        .execute(params![execution_id, at, error, a.http_status.map(i64::from), a.response_body, now])?;
        return Ok(Finished::RetryAt(at));
    }
    conn.prepare_cached(
        "UPDATE executions SET status = 'failed', error_message = ?2, http_status = ?3, response_body = ?4,
            claimed_by = NULL, lease_expires_at = NULL, updated_at = ?5
         WHERE id = ?1",
    )?
    .execute(params![execution_id, error, a.http_status.map(i64::from), a.response_body, now])?;
    finish_cue(conn, &cue, false, now)?;
    alerts::execution_failed(
        conn,
        &cue.id,
        execution_id,
        alerts::kind::RETRIES_EXHAUSTED,
        error,
        now,
    )?;
    Ok(Finished::Done(None))
}

/// Moves an outcome reported during attempt `attempt` onto that attempt's record and clears it
/// from the execution, because the delivery failed and will be retried: the retry's handler
/// reports again (the article's receiver reports a failure, answers 500, and succeeds on the
/// retry). Nothing is lost: the attempt log keeps the earlier report.
fn set_aside_outcome(conn: &Db<'_>, execution_id: &str, attempt: i64) -> Result<()> {
    let sql = format!(
        "SELECT {EXEC_COLUMNS} FROM executions e JOIN cues c ON c.id = e.cue_id
         WHERE e.id = ?1 AND e.outcome_recorded_at IS NOT NULL"
    );
    let Some(v) = conn
        .prepare_cached(&sql)?
        .query_row(params![execution_id], execution_json)
        .optional()?
    else {
        return Ok(());
    };
    let kept = json!({
        "outcome": v.get("outcome"),
        "outcome_state": v.get("outcome_state"),
        "evidence": v.get("evidence"),
    });
    conn.execute(
        "UPDATE attempts SET outcome = ?3 WHERE execution_id = ?1 AND number = ?2",
        params![execution_id, attempt, kept.to_string()],
    )?;
    conn.execute(
        "UPDATE executions SET outcome_success = NULL, outcome_result = NULL, outcome_error = NULL,
            outcome_metadata = NULL, outcome_recorded_at = NULL,
            outcome_state = CASE WHEN outcome_state = 'outcome_timeout' THEN outcome_state END,
            evidence_external_id = NULL, evidence_result_url = NULL, evidence_result_ref = NULL,
            evidence_result_type = NULL, evidence_summary = NULL, evidence_validation_state = NULL,
            evidence_produced_at = NULL, evidence_artifacts = NULL, evidence_metadata = NULL
         WHERE id = ?1",
        params![execution_id],
    )?;
    Ok(())
}

/// A cue whose execution failed without running (missed): a one-shot cue fails, a recurring one
/// pauses when its `on_failure` says so. Its run count does not move.
pub(crate) fn escalate_cue(conn: &Db<'_>, cue: &cues::Policy, now: Millis) -> Result<()> {
    let to = match (cue.one_shot, cue.on_failure_pause) {
        (true, _) => "failed",
        (false, true) => "paused",
        (false, false) => return Ok(()),
    };
    conn.prepare_cached(
        "UPDATE cues SET status = ?2, updated_at = ?3 WHERE id = ?1 AND status = 'active'",
    )?
    .execute(params![cue.id, to, now])?;
    Ok(())
}

/// The cue's bookkeeping once one of its executions is final.
pub(crate) fn finish_cue(
    conn: &Db<'_>,
    cue: &cues::Policy,
    success: bool,
    now: Millis,
) -> Result<()> {
    let cue_status = match (success, cue.one_shot) {
        (true, true) => "completed",
        (false, true) => "failed",
        (false, false) if cue.on_failure_pause => "paused",
        _ => cue.status.as_str(),
    };
    conn.prepare_cached(
        "UPDATE cues SET run_count = run_count + 1, last_run = ?2,
            status = CASE WHEN status = 'active' THEN ?3 ELSE status END, updated_at = ?2 WHERE id = ?1",
    )?
    .execute(params![cue.id, now, cue_status])?;
    Ok(())
}

/// Writes a reported outcome and its evidence onto an execution; returns the outcome state. A
/// report arriving after the deadline keeps the `outcome_timeout` state (the report is kept too).
fn write_outcome(
    conn: &Db<'_>,
    execution_id: &str,
    mode: Option<&str>,
    o: &ReportedOutcome,
    now: Millis,
) -> Result<String> {
    let (new_state, validation) = outcome_state(mode, o);
    let has_proof = o.external_id.is_some() || o.result_url.is_some() || o.artifacts.is_some();
    let json_of = |v: &Option<Value>| v.as_ref().map(|v| v.to_string());
    conn
        .prepare_cached(
            "UPDATE executions SET outcome_success = ?2, outcome_result = ?3, outcome_error = ?4,
                outcome_metadata = ?5, outcome_recorded_at = ?6,
                outcome_state = CASE WHEN outcome_state = 'outcome_timeout' THEN outcome_state ELSE ?7 END,
                evidence_external_id = COALESCE(?8, evidence_external_id),
                evidence_result_url = COALESCE(?9, evidence_result_url),
                evidence_result_ref = COALESCE(?10, evidence_result_ref),
                evidence_result_type = COALESCE(?11, evidence_result_type),
                evidence_summary = COALESCE(?12, evidence_summary),
                evidence_artifacts = COALESCE(?13, evidence_artifacts),
                evidence_validation_state = ?14,
                evidence_produced_at = CASE WHEN ?15 THEN ?6 ELSE evidence_produced_at END,
                updated_at = ?6
             WHERE id = ?1
             RETURNING outcome_state",
        )?
        .query_row(
            params![
                execution_id,
                o.success,
                o.result,
                o.error,
                json_of(&o.metadata),
                now,
                new_state,
                o.external_id,
                o.result_url,
                o.result_ref,
                o.result_type,
                o.summary,
                json_of(&o.artifacts),
                validation,
                has_proof
            ],
            |r| r.get(0),
        )
}

/// An owned execution's cue, transport, verification mode, outcome time and outcome state.
type Owned = (
    String,
    String,
    Option<String>,
    Option<Millis>,
    Option<String>,
);

fn owned(conn: &Db<'_>, owner: &str, id: &str) -> Result<Owned> {
    conn.prepare_cached(
        "SELECT e.cue_id, c.transport, c.verification_mode, e.outcome_recorded_at, e.outcome_state
         FROM executions e JOIN cues c ON c.id = e.cue_id WHERE e.id = ?1 AND c.owner = ?2",
    )?
    .query_row(params![id, owner], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .optional()?
    .ok_or_else(|| Error::ExecutionNotFound(id.to_string()))
}

/// Why an outcome or verification request conflicts with the stored state.
pub mod conflict {
    pub const ALREADY_RECORDED: &str = "an outcome was already recorded for this execution";
    pub const NO_OUTCOME: &str = "no outcome has been recorded yet; report the outcome first";
    pub const NOT_CLAIMED: &str = "no worker holds a claim on this execution";
}

/// Records the outcome a handler reports over the API (once: a second report is a conflict).
/// Returns the outcome state, and the chained execution a success started.
pub fn report(
    conn: &Db<'_>,
    owner: &str,
    id: &str,
    o: &ReportedOutcome,
    now: Millis,
) -> Result<(String, Option<Chained>)> {
    check_outcome(o)?;
    let (cue_id, _, mode, recorded, _) = owned(conn, owner, id)?;
    if recorded.is_some() {
        return Err(Error::Conflict(conflict::ALREADY_RECORDED.into()));
    }
    let state = write_outcome(conn, id, mode.as_deref(), o, now)?;
    alerts::outcome_reported(conn, &cue_id, id, o.success, &state, now)?;
    if !o.success {
        failed_after_delivery(conn, &cue_id, id, now)?;
    }
    let chained = if is_success_state(&state) {
        chain_after(conn, id, now)?
    } else {
        None
    };
    Ok((state, chained))
}

/// Evidence appended after the outcome: given fields replace, `metadata` keys are merged and
/// `artifacts` are added to the list; nothing recorded earlier is lost.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Evidence {
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub result_url: Option<String>,
    #[serde(default)]
    pub result_ref: Option<String>,
    #[serde(default)]
    pub result_type: Option<String>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub artifacts: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// Appends evidence to an execution whose outcome is recorded. Returns the outcome state.
pub fn append_evidence(
    conn: &Db<'_>,
    owner: &str,
    id: &str,
    ev: &Evidence,
    now: Millis,
) -> Result<String> {
    check_outcome(&ReportedOutcome {
        success: true,
        external_id: ev.external_id.clone(),
        result_url: ev.result_url.clone(),
        result_ref: ev.result_ref.clone(),
        result_type: ev.result_type.clone(),
        summary: ev.summary.clone(),
        artifacts: ev.artifacts.clone(),
        metadata: ev.metadata.clone(),
        ..Default::default()
    })?;
    let (_, _, _, recorded, state) = owned(conn, owner, id)?;
    if recorded.is_none() {
        return Err(Error::Conflict(conflict::NO_OUTCOME.into()));
    }
    let (old_artifacts, old_meta): (Option<String>, Option<String>) = conn.query_row(
        "SELECT evidence_artifacts, evidence_metadata FROM executions WHERE id = ?1",
        params![id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let artifacts = match (&ev.artifacts, old_artifacts) {
        (Some(Value::Array(new)), Some(old)) => {
            let mut list = serde_json::from_str::<Vec<Value>>(&old).unwrap_or_default();
            list.extend(new.iter().cloned());
            Some(Value::Array(list).to_string())
        }
        (Some(new), _) => Some(new.to_string()),
        (None, old) => old,
    };
    let metadata = match (&ev.metadata, old_meta) {
        (Some(Value::Object(new)), Some(old)) => {
            let mut map =
                serde_json::from_str::<serde_json::Map<String, Value>>(&old).unwrap_or_default();
            map.extend(new.clone());
            Some(Value::Object(map).to_string())
        }
        (Some(new), _) => Some(new.to_string()),
        (None, old) => old,
    };
    let proof = ev.external_id.is_some() || ev.result_url.is_some() || ev.artifacts.is_some();
    conn.execute(
        "UPDATE executions SET evidence_external_id = COALESCE(?2, evidence_external_id),
            evidence_result_url = COALESCE(?3, evidence_result_url),
            evidence_result_ref = COALESCE(?4, evidence_result_ref),
            evidence_result_type = COALESCE(?5, evidence_result_type),
            evidence_summary = COALESCE(?6, evidence_summary),
            evidence_artifacts = ?7, evidence_metadata = ?8,
            evidence_produced_at = CASE WHEN ?9 THEN COALESCE(evidence_produced_at, ?10) ELSE evidence_produced_at END,
            updated_at = ?10
         WHERE id = ?1",
        params![
            id,
            ev.external_id,
            ev.result_url,
            ev.result_ref,
            ev.result_type,
            ev.summary,
            artifacts,
            metadata,
            proof,
            now
        ],
    )?;
    Ok(state.unwrap_or_default())
}

/// A person's (or a checker's) verdict on a reported outcome. Returns the new outcome state.
pub fn verify(
    conn: &Db<'_>,
    owner: &str,
    id: &str,
    valid: bool,
    reason: Option<&str>,
    now: Millis,
) -> Result<(String, Option<Chained>)> {
    let (_, _, _, _, state) = owned(conn, owner, id)?;
    let state = state.unwrap_or_default();
    // A reported failure can be confirmed as failed, never turned into a success: not even once
    // it was parked for review (`verification_pending`).
    let reported_success = || -> Result<bool> {
        Ok(conn
            .prepare_cached("SELECT outcome_success FROM executions WHERE id = ?1")?
            .query_row(params![id], |r| r.get::<Option<bool>>(0))?
            == Some(true))
    };
    let allowed = match state.as_str() {
        "reported_success" => true,
        "verification_pending" => !valid || reported_success()?,
        "reported_failure" => !valid,
        _ => false,
    };
    if !allowed && state == "verification_pending" {
        return Err(Error::Conflict(
            "the reported outcome was a failure: it can be confirmed (valid=false), not verified \
             as a success"
                .into(),
        ));
    }
    if !allowed {
        return Err(Error::Conflict(format!(
            "cannot verify an execution in outcome state {:?}",
            if state.is_empty() { "none" } else { &state }
        )));
    }
    let (new_state, validation) = if valid {
        ("verified_success", "valid")
    } else {
        ("verification_failed", "invalid")
    };
    let note = reason
        .filter(|r| !valid && !r.is_empty())
        .map(|r| format!("verification rejected: {r}"));
    conn.execute(
        "UPDATE executions SET outcome_state = ?2, evidence_validation_state = ?3,
            evidence_summary = CASE WHEN ?4 IS NULL THEN evidence_summary
                WHEN evidence_summary IS NULL THEN substr(?4, 1, 500)
                ELSE substr(evidence_summary || ' | ' || ?4, 1, 500) END,
            updated_at = ?5
         WHERE id = ?1",
        params![id, new_state, validation, note, now],
    )?;
    // A success that was waiting for its verdict chains now (one chain per execution).
    let chained = if valid {
        chain_after(conn, id, now)?
    } else {
        None
    };
    Ok((new_state.into(), chained))
}

/// Parks a reported outcome for manual verification.
pub fn verification_pending(conn: &Db<'_>, owner: &str, id: &str, now: Millis) -> Result<()> {
    let (_, _, _, recorded, state) = owned(conn, owner, id)?;
    if recorded.is_none() {
        return Err(Error::Conflict(conflict::NO_OUTCOME.into()));
    }
    if matches!(
        state.as_deref(),
        Some("verified_success" | "verification_failed")
    ) {
        return Err(Error::Conflict(format!(
            "the outcome was already verified ({}); a verdict is not reopened",
            state.unwrap_or_default()
        )));
    }
    conn.execute(
        "UPDATE executions SET outcome_state = 'verification_pending', updated_at = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    Ok(())
}
