//! What is said of an execution after its run: outcomes reported over the API, evidence
//! appended later, and verdicts on outcomes parked for verification.

use super::*;

/// Writes a reported outcome and its evidence onto an execution; returns the outcome state. A
/// report arriving after the deadline keeps the `outcome_timeout` state (the report is kept too).
pub(super) fn write_outcome(
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
