//! Execution rows and their attempts: the claim / complete cycle, webhook deliveries, retries and
//! outcome deadlines. Making executions is in `firing`, what is reported of them over the API in
//! `outcomes`, recovery after a crash in `recovery`, reading them back in `history`.

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

mod firing;
mod history;
mod outcomes;
mod recovery;

pub use firing::*;
pub use history::*;
use history::{execution_json, EXEC_COLUMNS};
use outcomes::write_outcome;
pub use outcomes::*;
pub use recovery::*;

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
