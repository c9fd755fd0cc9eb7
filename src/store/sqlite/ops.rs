//! Read-only queries for the operations endpoints (`/health`, `/metrics`, `/v1/usage`).

use rusqlite::{params, Connection};

use crate::clock::Millis;
use crate::error::Result;

/// Executions still in flight, by their cue's transport and status: `(transport, status, n)` for
/// every pair that has any. Reads only the small `executions_open` index's rows.
pub fn open_executions(conn: &Connection) -> Result<Vec<(String, String, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.transport, e.status, count(*) FROM executions e JOIN cues c ON c.id = e.cue_id
         WHERE e.status IN ('pending', 'delivering', 'retrying')
         GROUP BY c.transport, e.status ORDER BY c.transport, e.status",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
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
pub fn usage(conn: &Connection, user_id: &str, since: Millis) -> Result<Usage> {
    let mut u = Usage::default();
    (u.active_cues, u.paused_cues, u.all_cues) = conn.query_row(
        "SELECT count(*) FILTER (WHERE status = 'active'), count(*) FILTER (WHERE status = 'paused'),
                count(*)
         FROM cues WHERE owner = ?1",
        [user_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    (u.executions, u.reported, u.succeeded, u.failed, u.timed_out) = conn.query_row(
        "SELECT
             count(*),
             count(*) FILTER (WHERE e.outcome_recorded_at IS NOT NULL),
             count(*) FILTER (WHERE e.outcome_recorded_at IS NOT NULL AND e.outcome_success = 1),
             count(*) FILTER (WHERE (e.outcome_recorded_at IS NOT NULL AND e.outcome_success = 0)
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
pub fn alert_counts(conn: &Connection) -> Result<AlertCounts> {
    let mut stmt = conn.prepare_cached(
        "SELECT alert_type, count(*) FROM alerts GROUP BY alert_type ORDER BY alert_type",
    )?;
    let kinds = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT channel, status, count(*) FROM notifications GROUP BY channel, status
         ORDER BY channel, status",
    )?;
    let sent = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok((kinds, sent))
}

// Outcome states recorded since the store opened: six functions set `outcome_state`, each inside
// a savepoint of the writer's batch that may still be rolled back. A temporary trigger on the
// writer's connection counts every change of the column into a temporary table, which savepoints
// and rollbacks undo together with the change itself, so the count is exactly what was
// committed, with no hook in the queries.

/// Creates the outcome counter on the writer's connection (its temporary objects are that
/// connection's alone). Run once on the writer's connection when the store opens.
pub(super) fn install_outcome_counter(c: &Connection) -> Result<()> {
    c.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS outcome_counts (
             state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
         CREATE TEMP TRIGGER IF NOT EXISTS count_outcome_states
             AFTER UPDATE OF outcome_state ON main.executions
             WHEN NEW.outcome_state IS NOT NULL AND NEW.outcome_state IS NOT OLD.outcome_state
         BEGIN
             INSERT OR IGNORE INTO outcome_counts (state, n) VALUES (NEW.outcome_state, 0);
             UPDATE outcome_counts SET n = n + 1 WHERE state = NEW.outcome_state;
         END;",
    )?;
    for state in crate::model::OUTCOME_STATES {
        c.execute(
            "INSERT OR IGNORE INTO outcome_counts (state, n) VALUES (?1, 0)",
            [state],
        )?;
    }
    Ok(())
}

/// Outcome states recorded since the store opened, by state. Must run on the writer.
pub fn outcome_counts(c: &Connection) -> Result<Vec<(String, u64)>> {
    let mut stmt = c.prepare_cached("SELECT state, n FROM temp.outcome_counts ORDER BY state")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod outcome_counter_tests {
    use super::*;

    #[test]
    fn the_trigger_counts_committed_changes_only() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE executions (id TEXT PRIMARY KEY, outcome_state TEXT)")
            .unwrap();
        install_outcome_counter(&c).unwrap();
        c.execute_batch(
            "INSERT INTO executions VALUES ('a', NULL), ('b', NULL);
             UPDATE executions SET outcome_state = 'reported_success' WHERE id = 'a';
             UPDATE executions SET outcome_state = 'reported_success' WHERE id = 'a';
             SAVEPOINT op;
             UPDATE executions SET outcome_state = 'reported_failure' WHERE id = 'b';
             ROLLBACK TO op; RELEASE op;
             UPDATE executions SET outcome_state = 'verified_success' WHERE id = 'a';",
        )
        .unwrap();
        let counts: std::collections::HashMap<_, _> =
            outcome_counts(&c).unwrap().into_iter().collect();
        assert_eq!(counts["reported_success"], 1);
        assert_eq!(counts["verified_success"], 1);
        assert_eq!(counts["reported_failure"], 0);
        assert_eq!(counts.len(), crate::model::OUTCOME_STATES.len());
    }
}
