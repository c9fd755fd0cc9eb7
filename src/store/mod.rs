//! The store: the single source of truth, behind one boundary.
//!
//! Callers (the engine, and through it the API and the Python bindings) see a [`Store`] and two
//! traits: [`Reads`], the queries, and [`Writes`], the engine's units of work (fire a due tick,
//! claim an execution, record a delivery, report an outcome, …) on typed records. A write runs
//! as a closure over `&dyn Writes` inside one transaction, committed before the caller learns
//! its result; a read runs over `&dyn Reads` on a connection that never waits for the writer.
//!
//! A write closure is `Fn`, not `FnOnce`: a backend whose transactions run concurrently may
//! find one in conflict with another (a serialization failure), roll it back and run it again.
//! So a closure has no effect outside the store except through what it returns.
//! No SQL, no connection type and no backend error leaves the store: each backend lives in its
//! own module ([`sqlite`]) and implements both traits there.
//!
//! Rules that are not SQL (the catch-up split, backoff, outcome states, the walk over missed
//! ticks, validation of reported outcomes) are shared by the backends rather than written twice.

pub mod alerts;
mod boundary;
pub mod cluster;
pub mod cues;
pub mod executions;
pub mod ops;
pub mod postgres;
pub mod sql;
pub mod sqlite;
pub mod users;
pub mod workers;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::clock::Millis;
use crate::delivery::Attempt;
use crate::error::{Error, Result};

pub use cues::{catch_up_name, CueRow, CueSpec, RetrySpec, Target, LOCAL_OWNER};
pub use executions::{
    check_outcome, conflict, Chained, Claimed, Evidence, ExecutionFilter, Finished, FireKey,
    FireResult, Fired, Recovered, ReportedOutcome,
};
pub use sqlite::{WriteFailure, SCHEMA_VERSION};

use alerts::{AlertFilter, Due, Sent};
use users::User;
use workers::{ClaimFilter, LeaseCheck, Silence, WorkerClaim, WorkerOutcome};

/// The queries.
pub trait Reads {
    // -- cues --
    /// A cue as JSON (any owner's).
    fn cue_json(&self, id: &str) -> Result<Value>;
    /// An owner's cue ids, oldest first.
    fn cue_ids(&self, owner: &str) -> Result<Vec<String>>;
    /// One page of an owner's cue ids (optionally of one status), and how many there are.
    fn cue_page(
        &self,
        owner: &str,
        status: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<String>, i64)>;
    /// The id of the owner's cue named by id or by name.
    fn resolve_cue(&self, owner: &str, id_or_name: &str) -> Result<String>;
    /// The definition of the owner's cue, as it would be sent to change it.
    fn cue_spec(&self, owner: &str, id: &str) -> Result<CueSpec>;
    /// Names of the owner's active local cues not in `handled`, at most `limit`.
    fn unhandled_cue_names(
        &self,
        owner: &str,
        handled: &[String],
        limit: usize,
    ) -> Result<Vec<String>>;
    /// Every active cue's next tick.
    fn due_index(&self) -> Result<Vec<(Millis, String)>>;
    /// The next tick of each of these cues that is active and has one.
    fn next_runs(&self, ids: &[String]) -> Result<Vec<(Millis, String)>>;
    /// Where a cue's webhooks go, when it has a callback.
    fn cue_target(&self, cue_id: &str) -> Result<Option<Target>>;

    // -- executions --
    /// The cue of an execution still waiting to be sent.
    fn pending_cue(&self, execution_id: &str) -> Result<Option<String>>;
    /// The transport of an execution's cue.
    fn execution_transport(&self, execution_id: &str) -> Result<String>;
    fn list_executions(&self, owner: &str, filter: &ExecutionFilter) -> Result<Vec<Value>>;
    fn count_executions(&self, owner: &str, filter: &ExecutionFilter) -> Result<i64>;
    /// One execution of the owner's, with its attempts.
    fn execution(&self, owner: &str, id: &str) -> Result<Value>;
    /// A cue's figures since an instant.
    fn cue_stats(&self, cue_id: &str, since: Millis) -> Result<Value>;
    /// Executions in flight by (transport, status).
    fn open_executions(&self) -> Result<Vec<(String, String, i64)>>;

    // -- workers --
    /// (owner, worker) of every worker whose silence is watched.
    fn watched_workers(&self) -> Result<Vec<(String, String)>>;
    fn workers(&self, owner: &str, now: Millis, timeout_ms: i64) -> Result<Vec<Value>>;
    /// Executions an owner's workers may claim.
    fn claimable(&self, owner: &str, filter: &ClaimFilter, now: Millis) -> Result<Vec<Value>>;
    /// When each execution's claim window ends.
    fn claim_deadlines(&self, ids: &[String]) -> Result<Vec<(Millis, String)>>;

    // -- alerts and notifications --
    fn alerts(&self, owner: &str, filter: &AlertFilter) -> Result<(Vec<Value>, i64)>;
    fn alert(&self, owner: &str, id: &str) -> Result<Value>;
    /// Notifications due to be sent (at most `limit`), and when the next one falls due.
    fn due_notifications(&self, now: Millis, limit: i64) -> Result<(Vec<Due>, Option<Millis>)>;
    fn alert_counts(&self) -> Result<ops::AlertCounts>;

    // -- users --
    fn user_by_key(&self, key: &str) -> Result<Option<User>>;
    fn user_count(&self) -> Result<i64>;
    /// Every owner with its email (none for the embedded owner).
    fn owners(&self) -> Result<Vec<(String, Option<String>)>>;
    /// (cues, executions this month, outcomes this month) of a user.
    fn user_usage(&self, user_id: &str, since: Millis) -> Result<(i64, i64, i64)>;
    fn usage(&self, user_id: &str, since: Millis) -> Result<ops::Usage>;
    fn alert_webhook_url(&self, user_id: &str) -> Result<Option<String>>;
}

/// The units of work; every write goes through one of these, inside the caller's transaction.
pub trait Writes: Reads {
    // -- cues --
    fn upsert_cue(&self, owner: &str, spec: &CueSpec, now: Millis) -> Result<cues::Upserted>;
    fn update_cue(
        &self,
        owner: &str,
        id: &str,
        spec: &CueSpec,
        now: Millis,
    ) -> Result<cues::Upserted>;
    /// New cues; returns each id with its first tick.
    fn insert_cues(
        &self,
        owner: &str,
        specs: &[CueSpec],
        now: Millis,
    ) -> Result<Vec<(String, Option<Millis>)>>;
    /// Deletes a cue with its history.
    fn delete_cue(&self, id: &str) -> Result<()>;
    fn pause(&self, cue_id: &str, now: Millis) -> Result<()>;
    /// Resumes a cue; returns its next tick.
    fn resume(&self, cue_id: &str, now: Millis) -> Result<Option<Millis>>;

    // -- firing and delivery --
    /// Closes the attempts in `scope` whose process is gone (every attempt in flight, when one
    /// process owns the database) and says what of the scope's work to put back on the timer.
    fn recover(&self, now: Millis, scope: &cluster::Scope) -> Result<Recovered>;
    fn fire_due(&self, cue_id: &str, now: Millis, grace_ms: i64) -> Result<Option<FireResult>>;
    fn fire_at(
        &self,
        cue_id: &str,
        payload: Option<&Value>,
        send_at: Option<Millis>,
        fire_key: Option<FireKey<'_>>,
        now: Millis,
    ) -> Result<Fired>;
    /// A new execution re-running `execution_id`; returns its id.
    fn replay(&self, execution_id: &str, now: Millis) -> Result<String>;
    /// A retry whose time came: the transport to send it by, if it is still due.
    fn retry_due(&self, execution_id: &str, now: Millis) -> Result<Option<String>>;
    /// An outcome deadline reached; whether it passed without an outcome.
    fn deadline_due(&self, execution_id: &str, now: Millis) -> Result<bool>;
    fn claim(
        &self,
        execution_id: &str,
        worker: &str,
        now: Millis,
        lease_ms: i64,
        start_deadline: bool,
    ) -> Result<Option<Claimed>>;
    /// Gives back a claim whose request never went out; whether it was still so.
    fn unclaim(
        &self,
        execution_id: &str,
        attempt: i64,
        claimed_by: &str,
        now: Millis,
    ) -> Result<bool>;
    fn complete(
        &self,
        execution_id: &str,
        attempt: i64,
        outcome: &ReportedOutcome,
        now: Millis,
    ) -> Result<Finished>;
    fn delivered(
        &self,
        execution_id: &str,
        attempt: i64,
        how: &Attempt,
        now: Millis,
    ) -> Result<Finished>;

    // -- outcomes --
    /// An outcome reported over the API; returns the outcome state and any chained execution.
    fn report_outcome(
        &self,
        owner: &str,
        id: &str,
        outcome: &ReportedOutcome,
        now: Millis,
    ) -> Result<(String, Option<Chained>)>;
    fn append_evidence(
        &self,
        owner: &str,
        id: &str,
        evidence: &Evidence,
        now: Millis,
    ) -> Result<String>;
    fn verify(
        &self,
        owner: &str,
        id: &str,
        valid: bool,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<(String, Option<Chained>)>;
    fn verification_pending(&self, owner: &str, id: &str, now: Millis) -> Result<()>;
    /// Outcome states recorded since the store opened, by state.
    fn outcome_counts(&self) -> Result<Vec<(String, u64)>>;

    // -- workers --
    /// Records a heartbeat; whether the worker's silence is to be watched from now on.
    fn heartbeat(
        &self,
        owner: &str,
        worker_id: &str,
        handlers: Option<&[String]>,
        now: Millis,
    ) -> Result<bool>;
    fn silence_due(
        &self,
        owner: &str,
        worker_id: &str,
        now: Millis,
        timeout_ms: i64,
        alive_since: Millis,
    ) -> Result<Silence>;
    /// Forgets a worker; returns the executions it held, claimable again.
    fn delete_worker(&self, owner: &str, worker_id: &str, now: Millis) -> Result<Vec<String>>;
    #[allow(clippy::too_many_arguments)]
    fn claim_for_worker(
        &self,
        owner: &str,
        execution_id: Option<&str>,
        worker_id: &str,
        task: Option<&str>,
        now: Millis,
        lease_ms: i64,
    ) -> Result<Option<WorkerClaim>>;
    fn extend_lease(
        &self,
        owner: &str,
        id: &str,
        worker_id: Option<&str>,
        now: Millis,
        lease_ms: i64,
    ) -> Result<Millis>;
    fn lease_due(
        &self,
        id: &str,
        now: Millis,
        timeout_ms: i64,
        alive_since: Millis,
    ) -> Result<LeaseCheck>;
    fn claim_window_due(&self, id: &str, now: Millis) -> Result<bool>;
    /// A worker's report on its claim, if it holds one.
    fn worker_report(
        &self,
        owner: &str,
        id: &str,
        outcome: &ReportedOutcome,
        now: Millis,
    ) -> Result<Option<WorkerOutcome>>;

    // -- alerts and notifications --
    fn set_realert_ms(&self, ms: i64) -> Result<()>;
    fn acknowledge_alert(&self, owner: &str, id: &str, now: Millis) -> Result<Value>;
    fn record_sent(&self, id: &str, sent: &Sent, now: Millis) -> Result<()>;
    fn set_alert_webhook(&self, owner: &str, url: Option<&str>, now: Millis) -> Result<()>;
    /// The owner's alert webhook and its signing secret (made when missing).
    fn alert_webhook(&self, owner: &str, now: Millis) -> Result<(Option<String>, String)>;
    fn regenerate_alert_secret(&self, owner: &str, now: Millis) -> Result<String>;

    // -- users --
    /// A new user; returns it with its API key (shown once).
    fn create_user(&self, email: &str, now: Millis) -> Result<(User, String)>;
    fn mark_unverified(&self, user_id: &str) -> Result<()>;
    fn regenerate_key(&self, user_id: &str, now: Millis) -> Result<String>;
    fn regenerate_secret(&self, user_id: &str, now: Millis) -> Result<String>;

    /// Takes the notifications among `ids` that are still due at `now` for this node to send,
    /// holding them from the other nodes until `now + hold_ms` (when they are due again, should
    /// this node die before it records how the sending went). Returns those taken.
    fn take_notifications(&self, ids: &[String], now: Millis, hold_ms: i64) -> Result<Vec<String>>;

    // -- nodes (several processes on one PostgreSQL database) --
    /// Says `node` is alive, renews its partition leases and evens out the shares.
    fn beat(&self, node: &str, info: &str, lease_ms: i64) -> Result<cluster::Membership>;
    /// Frees a node's partitions and forgets it (it is closing).
    fn leave(&self, node: &str) -> Result<()>;
    /// Tells the nodes listening that `node` created or changed these cues (on commit).
    fn announce(&self, node: &str, cue_ids: &[String]) -> Result<()>;

    // -- health --
    /// A write that touches the database and nothing else: the health check's probe.
    fn probe(&self, now: Millis) -> Result<()>;
}

/// The store over one of its backends.
pub enum Store {
    /// One SQLite file, owned by this process.
    Sqlite(sqlite::SqliteStore),
    /// A PostgreSQL database.
    Postgres(postgres::PgStore),
}

/// Whether `location` names a PostgreSQL database (`postgresql://…` or `postgres://…`) rather
/// than a SQLite file.
pub fn is_postgres_url(location: &str) -> bool {
    let l = location.trim_start().to_ascii_lowercase();
    l.starts_with("postgresql://") || l.starts_with("postgres://")
}

impl Store {
    /// Opens the database at `location`: a PostgreSQL URL, or the path of a SQLite file
    /// (created if needed). Either is migrated to the current schema. A database that cannot be
    /// used (unreachable, refused, read-only, not a database, damaged) is refused here,
    /// unchanged, with an [`Error::Open`] that names it.
    pub fn open(location: impl AsRef<Path>) -> Result<Store> {
        let location = location.as_ref();
        if location.as_os_str().is_empty() {
            return Err(Error::invalid(
                "db",
                "is empty: give the path of a SQLite file or a postgresql:// URL",
            ));
        }
        if let Some(url) = location.to_str().filter(|l| is_postgres_url(l)) {
            let rt = crate::engine::Engine::shared_runtime()?;
            let settings = postgres::PgSettings::default();
            return Ok(Store::Postgres(postgres::PgStore::open(
                url.trim(),
                settings,
                rt.handle(),
            )?));
        }
        Ok(Store::Sqlite(sqlite::SqliteStore::open(location)?))
    }

    /// Runs `f` as one unit of work and waits (blocking) until it is committed (`f` may run
    /// more than once before that: see the module docs). Must not be called from inside the
    /// tokio runtime.
    pub fn write<R: Send + 'static>(
        &self,
        f: impl Fn(&dyn Writes) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        match self {
            Store::Sqlite(s) => s.write(move |c| f(&sql::Db::Sqlite(c))),
            Store::Postgres(p) => p.write(move |c| f(c)),
        }
    }

    /// Runs `f` as one unit of work; resolves once it is committed.
    pub async fn write_async<R: Send + 'static>(
        &self,
        f: impl Fn(&dyn Writes) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        match self {
            Store::Sqlite(s) => s.write_async(move |c| f(&sql::Db::Sqlite(c))).await,
            Store::Postgres(p) => p.write_async(move |c| f(c)).await,
        }
    }

    /// Runs `f` over a read-only view that never waits for the writer.
    pub fn read<R>(&self, f: impl FnOnce(&dyn Reads) -> Result<R>) -> Result<R> {
        match self {
            Store::Sqlite(s) => s.read(|c| f(&sql::Db::Sqlite(c))),
            Store::Postgres(p) => p.read(|c| f(c)),
        }
    }

    /// The writer's latest failure to write, if it happened within `within`.
    pub fn write_failed_within(&self, within: Duration) -> Option<WriteFailure> {
        match self {
            Store::Sqlite(s) => s.write_failed_within(within),
            Store::Postgres(p) => p.write_failed_within(within),
        }
    }

    /// Sets what to call after a commit that queued notifications (the first call wins).
    pub fn on_notify(&self, f: impl Fn() + Send + Sync + 'static) {
        match self {
            Store::Sqlite(s) => s.on_notify(f),
            Store::Postgres(p) => p.on_notify(f),
        }
    }

    /// Whether other processes may share the database (PostgreSQL), so that this one must hold
    /// partitions to fire their ticks, rather than own it (SQLite).
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// How to open a connection of its own to listen for other nodes' changes (PostgreSQL).
    pub fn listen_config(&self) -> Option<tokio_postgres::Config> {
        match self {
            Store::Sqlite(_) => None,
            Store::Postgres(p) => Some(p.listen_config()),
        }
    }

    /// Why opening failed, said for the person who can fix it (naming the database).
    pub fn open_error(&self, e: Error) -> Error {
        match self {
            Store::Sqlite(s) => sqlite::open_error(s.path(), e),
            Store::Postgres(p) => match e {
                Error::Postgres(pe) => Error::Open {
                    path: p.shown().to_string(),
                    reason: pe.to_string(),
                },
                other => other,
            },
        }
    }

    /// Stops the writer after it has committed everything already sent. Idempotent.
    pub fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close(),
            Store::Postgres(p) => p.close(),
        }
    }
}

/// Whether an error says the store cannot be written now (no space, an I/O error, a read-only
/// file) rather than that one operation was refused.
pub fn is_unwritable(e: &Error) -> bool {
    match e {
        Error::Storage(s) => sqlite::is_unwritable(s),
        Error::Postgres(p) => postgres::is_unwritable(p),
        // No connection to the database can be made now (PostgreSQL unreachable).
        Error::Open { .. } => true,
        _ => false,
    }
}
