//! The store over PostgreSQL: each unit of work is one SERIALIZABLE transaction on a pooled
//! connection, run on a blocking thread of the runtime. PostgreSQL may refuse to commit one that
//! ran concurrently with another it conflicts with (a serialization failure, or a deadlock); it
//! is then run again from the start, which the store boundary allows (write closures are `Fn`
//! and act only through the store).
//!
//! Several nodes may open one database: which work is whose is decided by partition leases
//! (`store::cluster`, driven by the engine), not by this store, which holds no lock.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio_postgres::error::SqlState;
use tokio_postgres::IsolationLevel;

use super::tx::OutcomeCounts;
use super::{Pg, PgSettings, Tx};
use crate::error::{Error, Result};
use crate::store::sql::Db;
use crate::store::WriteFailure;

/// How many times a unit of work is run again after a serialization failure or a deadlock, each
/// after a pause drawn at random up to twice the last (from 1 ms, at most 50 ms), so that units
/// racing for the same rows (workers claiming the oldest waiting execution) spread out instead
/// of colliding again: about 10 s in the worst case.
const MAX_RETRIES: u32 = 200;

type NotifyHook = OnceLock<Box<dyn Fn() + Send + Sync>>;

struct Shared {
    pg: Pg,
    rt: Handle,
    on_notify: NotifyHook,
    last_failure: Mutex<Option<WriteFailure>>,
    /// Whether the store is open.
    open: std::sync::atomic::AtomicBool,
    counts: OutcomeCounts,
}

/// The store over one PostgreSQL database.
pub struct PgStore {
    shared: Arc<Shared>,
}

/// Whether `e` says the transaction lost a race and may simply be run again.
fn retryable(e: &Error) -> bool {
    match e {
        Error::Postgres(p) => p
            .as_db_error()
            .is_some_and(|db| lost_a_race(db.code(), db.message())),
        _ => false,
    }
}

/// Whether a server error (its code and what it said) means the transaction lost a race: a
/// serialization failure or a deadlock, or the internal error PostgreSQL 15 raises, rarely, when
/// concurrent updates and foreign-key checks meet on one row (`new multixact has more than one
/// updating member`; seen under outcome load from three nodes). Each ends the transaction with
/// nothing written, so the unit of work is simply run again.
fn lost_a_race(code: &SqlState, message: &str) -> bool {
    *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || (*code == SqlState::INTERNAL_ERROR
            && message.starts_with("new multixact has more than one updating member"))
}

/// Runs `f` on this thread, which may be a worker of the runtime (then given up to blocking
/// work while `f` runs), a blocking thread of it, or a thread of its own.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl PgStore {
    /// Connects to `url` and migrates it. Other nodes may have it open too.
    pub fn open(url: &str, settings: PgSettings, rt: &Handle) -> Result<PgStore> {
        Ok(PgStore::over(Pg::open_blocking(rt, url, settings)?, rt))
    }

    /// A store over the pool `pg`, whose connections `rt` drives.
    fn over(pg: Pg, rt: &Handle) -> PgStore {
        PgStore {
            shared: Arc::new(Shared {
                pg,
                rt: rt.clone(),
                on_notify: OnceLock::new(),
                last_failure: Mutex::new(None),
                open: std::sync::atomic::AtomicBool::new(true),
                counts: Mutex::new(
                    crate::model::OUTCOME_STATES
                        .iter()
                        .map(|s| (s.to_string(), 0))
                        .collect(),
                ),
            }),
        }
    }

    /// A store of its own over the same database, with a pool of two connections driven by the
    /// runtime `rt`: a node's heartbeats go through it, so that they never wait behind the
    /// engine's units of work for a connection or for a thread.
    pub fn sibling(&self, rt: &Handle) -> Result<PgStore> {
        let settings = PgSettings {
            pool_size: 2,
            ..PgSettings::default()
        };
        Ok(PgStore::over(
            rt.block_on(self.shared.pg.sibling(settings))?,
            rt,
        ))
    }

    /// The database's URL, with any password hidden.
    pub fn shown(&self) -> &str {
        self.shared.pg.shown()
    }

    /// Sets what to call after a commit that queued notifications (the first call wins).
    pub fn on_notify(&self, f: impl Fn() + Send + Sync + 'static) {
        let _ = self.shared.on_notify.set(Box::new(f));
    }

    /// The latest failure to write, if it happened within `within`.
    pub fn write_failed_within(&self, within: Duration) -> Option<WriteFailure> {
        self.shared
            .last_failure
            .lock()
            .clone()
            .filter(|f| f.at.elapsed() <= within)
    }

    /// Runs `f` as one unit of work on this thread, committed before it returns.
    pub fn write<R>(&self, f: impl Fn(&Db<'_>) -> Result<R>) -> Result<R> {
        let shared = &self.shared;
        let out = blocking(|| shared.run(&f, IsolationLevel::Serializable, true));
        if let Err(e) = &out {
            if matches!(e, Error::Postgres(_) | Error::Open { .. }) && !retryable(e) {
                *shared.last_failure.lock() = Some(WriteFailure {
                    at: Instant::now(),
                    error: e.to_string(),
                });
            }
        }
        out
    }

    /// [`PgStore::write`] on a blocking thread of the runtime.
    pub async fn write_async<R: Send + 'static>(
        &self,
        f: impl Fn(&Db<'_>) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let me = PgStore {
            shared: Arc::clone(&self.shared),
        };
        tokio::task::spawn_blocking(move || me.write(f))
            .await
            .map_err(|_| Error::Closed)?
    }

    /// Runs `f` in a read-only transaction.
    pub fn read<R>(&self, f: impl FnOnce(&Db<'_>) -> Result<R>) -> Result<R> {
        let f = Mutex::new(Some(f));
        blocking(|| {
            self.shared.run(
                &|db: &Db<'_>| match f.lock().take() {
                    Some(f) => f(db),
                    None => Err(Error::Closed),
                },
                IsolationLevel::ReadCommitted,
                false,
            )
        })
    }

    /// How to open a connection of its own to the database (to `LISTEN` on).
    pub fn listen_config(&self) -> tokio_postgres::Config {
        self.shared.pg.config().clone()
    }

    /// Closes the pool. Idempotent.
    pub fn close(&self) {
        self.shared
            .open
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.shared.pg.close();
    }
}

impl Shared {
    fn run<R>(
        &self,
        f: &dyn Fn(&Db<'_>) -> Result<R>,
        isolation: IsolationLevel,
        write: bool,
    ) -> Result<R> {
        if !self.open.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        let mut client = self.rt.block_on(self.pg.client())?;
        let mut tries = 0;
        loop {
            tries += 1;
            // What an earlier, rolled-back try queued is gone with it.
            crate::store::alerts::take_queued();
            let tx = self.rt.block_on(
                client
                    .build_transaction()
                    .isolation_level(isolation)
                    .read_only(!write)
                    .start(),
            )?;
            let tx = Tx::new(tx, self.rt.clone(), &self.counts);
            let done = f(&Db::Postgres(&tx));
            // A statement the server refused ended the transaction: never commit it (PostgreSQL
            // would roll it back and say nothing), whatever the unit made of the error.
            let (done, lost_race) = match (tx.take_failure(), done) {
                (Some((code, text)), _) if code.as_ref().is_some_and(|c| lost_a_race(c, &text)) => {
                    (
                        Err(Error::Io(std::io::Error::other(format!(
                            "storage error: {text}"
                        )))),
                        true,
                    )
                }
                // The unit's own account of the failure (a duplicate name is a conflict).
                (Some(_), Err(e)) => (Err(e), false),
                (Some((_, text)), Ok(_)) => (
                    Err(Error::Io(std::io::Error::other(format!(
                        "storage error: {text}"
                    )))),
                    false,
                ),
                (None, Ok(v)) => {
                    let committed = tx.commit(write).map(|()| v);
                    let lost = committed.as_ref().err().is_some_and(retryable);
                    (committed, lost)
                }
                (None, Err(e)) => {
                    let lost = retryable(&e);
                    (Err(e), lost)
                }
            };
            match done {
                Err(_) if lost_race && tries <= MAX_RETRIES => {
                    let cap = (1u64 << tries.min(6)).min(50);
                    std::thread::sleep(Duration::from_micros(rand::random_range(0..cap * 1000)));
                    continue;
                }
                Err(e) => {
                    tracing::debug!("a PostgreSQL unit of work failed after {tries} tries: {e}");
                    return Err(e);
                }
                Ok(v) => {
                    if crate::store::alerts::take_queued() {
                        if let Some(wake) = self.on_notify.get() {
                            wake();
                        }
                    }
                    return Ok(v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn races_lost_are_run_again_and_other_errors_are_not() {
        let multixact =
            "new multixact has more than one updating member: 0 3[17 (nokeyupd), 18 (nokeyupd)]";
        assert!(lost_a_race(
            &SqlState::T_R_SERIALIZATION_FAILURE,
            "could not serialize access"
        ));
        assert!(lost_a_race(
            &SqlState::T_R_DEADLOCK_DETECTED,
            "deadlock detected"
        ));
        assert!(lost_a_race(&SqlState::INTERNAL_ERROR, multixact));
        assert!(!lost_a_race(
            &SqlState::INTERNAL_ERROR,
            "could not open file"
        ));
        assert!(!lost_a_race(&SqlState::UNIQUE_VIOLATION, multixact));
    }
}
