//! Numbered migrations under `PRAGMA user_version`. Migration N is `migrations/000N_*.sql`; a file
//! written by an older cueapi is brought forward on open, one written by a newer one is refused.

use rusqlite::Connection;

use crate::error::{Error, Result};

const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_cues_executions.sql"),
    include_str!("migrations/0002_attempts_evidence.sql"),
    include_str!("migrations/0003_server.sql"),
    include_str!("migrations/0004_workers.sql"),
    include_str!("migrations/0005_alerts.sql"),
    include_str!("migrations/0006_worker_offline.sql"),
    include_str!("migrations/0007_claim_order.sql"),
    include_str!("migrations/0008_chains_failures.sql"),
    include_str!("migrations/0009_waiting_by_task.sql"),
    include_str!("migrations/0010_health_probe.sql"),
    include_str!("migrations/0011_email_verified.sql"),
    include_str!("migrations/0012_chain_parent_index.sql"),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Applies every migration above the file's version up to `target`, each in its own transaction.
pub fn migrate(conn: &mut Connection, target: i64) -> Result<()> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            // Named by the caller, who knows the file (`store::open_error`).
            path: String::new(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .take(target as usize)
        .skip(found as usize)
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_file_is_migrated_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let mut c = Connection::open(&path).unwrap();
            migrate(&mut c, 1).unwrap();
            c.execute(
                "INSERT INTO cues (id, name, status, transport, schedule_type, schedule_cron, created_at, updated_at)
                 VALUES ('cue_old', 'legacy', 'active', 'local', 'recurring', '* * * * *', 1, 1)",
                [],
            )
            .unwrap();
        }
        let mut c = Connection::open(&path).unwrap();
        migrate(&mut c, SCHEMA_VERSION).unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let (name, mode): (String, Option<String>) = c
            .query_row(
                "SELECT name, verification_mode FROM cues WHERE id = 'cue_old'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((name.as_str(), mode), ("legacy", None));
        let tables: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'attempts'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 1, "migration 2 adds the attempts table");
    }

    #[test]
    fn a_newer_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Connection::open(dir.path().join("new.db")).unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        assert!(matches!(
            migrate(&mut c, SCHEMA_VERSION),
            Err(Error::SchemaTooNew { .. })
        ));
    }
}
