//! Read-only queries for the operations endpoints (`/health`, `/metrics`, `/v1/usage`).

use crate::store::sql::{params, Db};

use crate::clock::Millis;
use crate::error::Result;

/// Executions still in flight, by their cue's transport and status: `(transport, status, n)` for
/// every pair that has any. Reads only the small `executions_open` index's rows.
pub fn open_executions(conn: &Db<'_>) -> Result<Vec<(String, String, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.transport, e.status, count(*) FROM executions e JOIN cues c ON c.id = e.cue_id
         WHERE e.status IN ('pending', 'delivering', 'retrying')
         GROUP BY c.transport, e.status ORDER BY c.transport, e.status",
    )?;
    let rows = stmt.query_map(params![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows)
}

/// A user's counts for `/v1/usage`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Cues by status: active, paused, and all (with completed and failed ones).
    pub active_cues: i64,
    pub paused_cues: i64,
    pub all_cues: i64,
    /// Executions created since the instant asked for.
    pub executions: i64,
    /// Of those: with a reported outcome, reported successes.
    pub reported: i64,
    pub succeeded: i64,
    /// Reported failures, and executions that failed or were missed without an outcome.
    pub failed: i64,
    /// Executions whose outcome deadline passed without a report.
    pub timed_out: i64,
}

/// A user's cues and the executions (with their outcomes) created at or after `since`.
pub fn usage(conn: &Db<'_>, user_id: &str, since: Millis) -> Result<Usage> {
    let mut u = Usage::default();
    (u.active_cues, u.paused_cues, u.all_cues) = conn.query_row(
        "SELECT count(*) FILTER (WHERE status = 'active'), count(*) FILTER (WHERE status = 'paused'),
                count(*)
         FROM cues WHERE owner = ?1",
        params![user_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    (u.executions, u.reported, u.succeeded, u.failed, u.timed_out) = conn.query_row(
        "SELECT
             count(*),
             count(*) FILTER (WHERE e.outcome_recorded_at IS NOT NULL),
             count(*) FILTER (WHERE e.outcome_recorded_at IS NOT NULL AND e.outcome_success),
             count(*) FILTER (WHERE (e.outcome_recorded_at IS NOT NULL AND NOT e.outcome_success)
                                 OR (e.outcome_recorded_at IS NULL AND e.status IN ('failed', 'missed'))),
             count(*) FILTER (WHERE e.outcome_state = 'outcome_timeout')
         FROM executions e JOIN cues c ON c.id = e.cue_id
         WHERE c.owner = ?1 AND e.created_at >= ?2",
        params![user_id, since],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )?;
    Ok(u)
}

/// Alerts raised so far by kind (a de-duplicated repeat is not a new alert), and notifications
/// by channel and status: `(kinds, notifications)`.
pub type AlertCounts = (Vec<(String, i64)>, Vec<(String, String, i64)>);

/// Counts alerts and notifications, for `/metrics`.
pub fn alert_counts(conn: &Db<'_>) -> Result<AlertCounts> {
    let mut stmt = conn.prepare_cached(
        "SELECT alert_type, count(*) FROM alerts GROUP BY alert_type ORDER BY alert_type",
    )?;
    let kinds = stmt.query_map(params![], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut stmt = conn.prepare_cached(
        "SELECT channel, status, count(*) FROM notifications GROUP BY channel, status
         ORDER BY channel, status",
    )?;
    let sent = stmt.query_map(params![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok((kinds, sent))
}
