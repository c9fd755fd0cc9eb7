//! The outcome counter of `/metrics`, on the writer's connection.

use rusqlite::Connection;

use crate::error::Result;

// Outcome states recorded since the store opened: six functions set `outcome_state`, each inside
// a savepoint of the writer's batch that may still be rolled back. A temporary trigger on the
// writer's connection counts every change of the column into a temporary table, which savepoints
// and rollbacks undo together with the change itself, so the count is exactly what was
// committed, with no hook in the queries.

/// Creates the outcome counter on the writer's connection (its temporary objects are that
/// connection's alone). Run once on the writer's connection when the store opens.
pub(crate) fn install_outcome_counter(c: &Connection) -> Result<()> {
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
pub(crate) fn outcome_counts(c: &Connection) -> Result<Vec<(String, u64)>> {
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
