//! After a crash (or a node's death, on a shared database): the attempts left running are closed
//! as interrupted and retried as their cue allows, and the work to resume is listed.

use super::*;

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
