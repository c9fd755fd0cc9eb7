//! A PostgreSQL transaction as the store's units of work see it: every statement is a round
//! trip made synchronously on the calling thread, a blocking thread of the runtime (never one
//! of its workers, which would stall everything else on them).
//!
//! A statement PostgreSQL refuses ends the transaction there (SQLite's goes on, and some units
//! of work take a refused item's error and carry on with the next). So the first error the
//! server gives is kept: every later statement fails at once without being sent, and the store
//! rolls the unit back and reports that first error (or runs the unit again, when it was a
//! serialization failure) whatever the unit made of it — it is never committed.

use std::future::Future;

use tokio::runtime::Handle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, Statement};

use crate::error::{Error, Result};

/// Outcome states recorded since the store opened (committed ones only), by state.
pub(crate) type OutcomeCounts = parking_lot::Mutex<std::collections::BTreeMap<String, u64>>;

/// A transaction in progress on one pooled connection.
pub struct Tx<'a> {
    tx: deadpool_postgres::Transaction<'a>,
    rt: Handle,
    counts: &'a OutcomeCounts,
    /// The first error the server gave in this transaction: its code and what it said.
    failed: parking_lot::Mutex<Option<(Option<SqlState>, String)>>,
}

impl<'a> Tx<'a> {
    pub(crate) fn new(
        tx: deadpool_postgres::Transaction<'a>,
        rt: Handle,
        counts: &'a OutcomeCounts,
    ) -> Tx<'a> {
        Tx {
            tx,
            rt,
            counts,
            failed: parking_lot::Mutex::new(None),
        }
    }

    /// The first error the server gave in this transaction, if it gave one: its code and text.
    pub(crate) fn take_failure(&self) -> Option<(Option<SqlState>, String)> {
        self.failed.lock().take()
    }

    /// Runs one statement's round trip, unless the transaction already failed.
    fn run<T>(
        &self,
        f: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        if self.failed.lock().is_some() {
            return Err(aborted());
        }
        self.block(f).map_err(|e| {
            if let Some(db) = e.as_db_error() {
                let mut first = self.failed.lock();
                if first.is_none() {
                    let text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
                    *first = Some((Some(db.code().clone()), text));
                }
            }
            Error::Postgres(e)
        })
    }

    /// The store's outcome counts so far.
    pub(crate) fn outcome_counts(&self) -> Vec<(String, u64)> {
        self.counts
            .lock()
            .iter()
            .map(|(s, n)| (s.clone(), *n))
            .collect()
    }

    fn block<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// `sql` (in PostgreSQL's `$N` form) prepared for parameters of `types`, or taken from the
    /// connection's cache.
    pub(crate) fn prepare(&self, sql: &str, types: &[Type]) -> Result<Statement> {
        self.run(self.tx.prepare_typed_cached(sql, types))
    }

    /// The first row, if any.
    pub(crate) fn query_opt(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        Ok(self.run(self.tx.query(stmt, params))?.into_iter().next())
    }

    pub(crate) fn query(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        self.run(self.tx.query(stmt, params))
    }

    pub(crate) fn execute(&self, stmt: &Statement, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        self.run(self.tx.execute(stmt, params))
    }

    /// Commits, on the calling thread, and counts the outcome states a transaction that `wrote`
    /// recorded (a read-only one cannot have: no round trip to ask).
    pub(crate) fn commit(self, wrote: bool) -> Result<()> {
        let Tx { tx, rt, counts, .. } = self;
        let noted: Option<String> = if wrote {
            rt.block_on(tx.query_one("SELECT current_setting('cueapi.outcomes', true)", &[]))?
                .get(0)
        } else {
            None
        };
        rt.block_on(tx.commit())?;
        let noted = noted.unwrap_or_default();
        if !noted.is_empty() {
            let mut counts = counts.lock();
            for state in noted.split(',').filter(|s| !s.is_empty()) {
                *counts.entry(state.to_string()).or_default() += 1;
            }
        }
        Ok(())
    }
}

/// What a statement gets once its transaction failed.
fn aborted() -> Error {
    Error::Io(std::io::Error::other(
        "an earlier statement of this transaction failed; it will be rolled back",
    ))
}
