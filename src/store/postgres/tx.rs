//! A PostgreSQL transaction as the store's units of work see it: every statement is a round
//! trip made synchronously on the calling thread, a blocking thread of the runtime (never one
//! of its workers, which would stall everything else on them).

use std::future::Future;

use tokio::runtime::Handle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use crate::error::Result;

/// A transaction in progress on one pooled connection.
pub struct Tx<'a> {
    tx: deadpool_postgres::Transaction<'a>,
    rt: Handle,
}

impl<'a> Tx<'a> {
    pub(crate) fn new(tx: deadpool_postgres::Transaction<'a>, rt: Handle) -> Tx<'a> {
        Tx { tx, rt }
    }

    fn block<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// `sql` (in PostgreSQL's `$N` form) prepared, or taken from the connection's cache.
    pub(crate) fn prepare(&self, sql: &str) -> Result<Statement> {
        Ok(self.block(self.tx.prepare_cached(sql))?)
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

    /// Commits, on the calling thread.
    pub(crate) fn commit(self) -> Result<()> {
        let Tx { tx, rt } = self;
        Ok(rt.block_on(tx.commit())?)
    }
}
