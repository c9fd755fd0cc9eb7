//! Reading executions back: the history filters, pages and counts, one execution with its
//! attempts, and a cue's run statistics.

use super::*;

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

pub(super) const EXEC_COLUMNS: &str = "e.id, e.cue_id, c.name, e.scheduled_for, e.status, e.triggered_by, e.replay_of, e.idempotency_key,
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

pub(super) fn execution_json(r: &Row<'_>) -> Result<Value> {
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
