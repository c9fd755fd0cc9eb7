//! A PostgreSQL transaction as the store's units of work see it: every statement is a round
//! trip made synchronously on the calling thread, a blocking thread of the runtime (never one
//! of its workers, which would stall everything else on them).

use std::future::Future;

use tokio::runtime::Handle;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, Statement};

use crate::error::Result;

/// Outcome states recorded since the store opened (committed ones only), by state.
pub(crate) type OutcomeCounts = parking_lot::Mutex<std::collections::BTreeMap<String, u64>>;

/// A transaction in progress on one pooled connection.
pub struct Tx<'a> {
    tx: deadpool_postgres::Transaction<'a>,
    rt: Handle,
    counts: &'a OutcomeCounts,
}

impl<'a> Tx<'a> {
    pub(crate) fn new(
        tx: deadpool_postgres::Transaction<'a>,
        rt: Handle,
        counts: &'a OutcomeCounts,
    ) -> Tx<'a> {
        Tx { tx, rt, counts }
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
        self.block(self.tx.prepare_typed_cached(sql, types))
            .map_err(|e| {
                if std::env::var_os("CUEAPI_SQL_DEBUG").is_some() {
                    eprintln!(
                        "PostgreSQL refused a statement: {:?}\n{sql}",
                        e.as_db_error().map(|d| d.message())
                    );
                }
                e.into()
            })
    }

    /// The first row, if any.
    pub(crate) fn query_opt(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        Ok(self.block(self.tx.query(stmt, params))?.into_iter().next())
    }

    pub(crate) fn query(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        Ok(self.block(self.tx.query(stmt, params))?)
    }

    pub(crate) fn execute(&self, stmt: &Statement, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        Ok(self.block(self.tx.execute(stmt, params))?)
    }

    pub(crate) fn batch(&self, sql: &str) -> Result<()> {
        Ok(self.block(self.tx.batch_execute(sql))?)
    }

    /// Commits, on the calling thread, and counts the outcome states it recorded.
    pub(crate) fn commit(self) -> Result<()> {
        let Tx { tx, rt, counts } = self;
        let noted: Option<String> = rt
            .block_on(tx.query_one("SELECT current_setting('cueapi.outcomes', true)", &[]))?
            .get(0);
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
