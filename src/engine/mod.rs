//! The engine: owns the store, the timer and the queue of claimable work.
//!
//! One tokio task sleeps until the earliest entry of an in-memory min-heap (cue ticks, retries,
//! outcome deadlines) and then acts on every entry that is due in one store transaction. Nothing is
//! polled: new or changed entries wake the task. Executions for the local transport go into a queue
//! that handler threads *pull* from ([`Engine::claim`], blocking without the GIL), run, and report
//! back ([`Engine::complete`]). The heap and the queue are rebuilt from the store when it opens.

mod actions;
pub mod cluster;
mod fair;
pub mod metrics;
mod notify;
mod timer;
mod webhook;

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde_json::Value;
use tokio::runtime::Runtime;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::clock::{Clock, Millis};
use crate::delivery::{Deliverer, Policy};
use crate::error::{Error, Result};
use crate::limits;
use crate::model::new_id;
use crate::store::workers::{self, LeaseCheck};
use crate::store::Recovered;
use crate::store::{
    self, Claimed, CueSpec, ExecutionFilter, Finished, Fired, Reads, ReportedOutcome, Store, Writes,
};
pub use actions::{Credential, FireRequest, SetStatus};
pub use fair::DeliveryLimits;
use timer::{Timer, TimerKind, Timers};

/// What an outcome reported over the API did.
#[derive(Debug, Clone)]
pub enum Reported {
    /// Written onto its execution, with this outcome state.
    Recorded(String),
    /// Completed (or failed, to be retried) a worker's claim.
    Worker(workers::WorkerOutcome),
}

/// What [`Engine::delete_cues`] did, each list in the order the ids were given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletedCues {
    pub deleted: Vec<String>,
    /// Not found, another owner's, or named again.
    pub skipped: Vec<String>,
}

/// An execution ready to go out, with its cue's transport.
pub type Ready = (String, String);

/// What [`Engine::finish_many`] returns: reports the store refused (execution id, why), and the
/// next batch of claimed jobs.
pub type Finish = (Vec<(String, Error)>, Vec<Claimed>);

/// Engine settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// A tick later than this when it is fired counts as missed and follows the catch-up policy.
    pub grace_ms: i64,
    /// How long a claim is held before it counts as abandoned.
    pub lease_ms: i64,
    /// How many webhook deliveries are in flight at once, and how long one may take.
    pub delivery: DeliveryLimits,
    /// Cue ticks and retries are committed up to this long before their instant and released
    /// at the instant itself, so the store's work is not part of the fire lag. A pause or change
    /// made inside this window applies from the following tick.
    pub fire_ahead_ms: i64,
    /// How long a remote worker's claim lasts unless extended.
    pub worker_lease_ms: i64,
    /// How long a remote worker may stay silent before it is reported offline and its expired
    /// claims are released; workers known when the engine opens get this long from then.
    pub worker_timeout_ms: i64,
    /// On a database shared with other nodes (PostgreSQL): how long a node's leases on its
    /// partitions last unless renewed. A node silent this long (dead, or cut off from the
    /// database) has its cues taken over by the others.
    pub node_lease_ms: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grace_ms: 60_000,
            lease_ms: 300_000,
            delivery: DeliveryLimits::default(),
            fire_ahead_ms: 25,
            worker_lease_ms: DEFAULT_WORKER_LEASE_MS,
            worker_timeout_ms: DEFAULT_WORKER_TIMEOUT_MS,
            node_lease_ms: limits::NODE_LEASE_MS,
        }
    }
}

fn runtime() -> Result<&'static Runtime> {
    static RT: OnceLock<Runtime> = OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cueapi-rt")
        .enable_time()
        .enable_io()
        .build()?;
    Ok(RT.get_or_init(|| rt))
}

struct Inner {
    store: Store,
    clock: Clock,
    config: Config,
    instance: String,
    timers: Mutex<Timers>,
    wake: Notify,
    ready: Mutex<VecDeque<String>>,
    ready_cv: Condvar,
    /// Problems the engine met on its own threads, for the embedding program to report.
    problems: Mutex<VecDeque<String>>,
    problems_cv: Condvar,
    /// When each kind of problem was last told, and how many like it were held back since.
    told: Mutex<HashMap<String, (Instant, u64)>>,
    claims_open: AtomicBool,
    closed: AtomicBool,
    /// Wakes work held for a later instant when the engine closes.
    closing: Notify,
    /// The SSRF guard every outbound request goes through.
    policy: Arc<Policy>,
    deliverer: OnceLock<std::result::Result<Deliverer, String>>,
    /// Slots of deliveries in flight, and the limits they were made with (replaced whole when
    /// the limits change; deliveries keep the slots they hold).
    lanes: parking_lot::RwLock<(Arc<fair::Lanes>, DeliveryLimits)>,
    /// Webhook deliveries started and not yet recorded; `close` waits for them.
    deliveries: AtomicUsize,
    deliveries_done: Condvar,
    deliveries_lock: Mutex<()>,
    /// Webhook executions found pending on open, dispatched once the engine starts.
    held: Mutex<Vec<Ready>>,
    /// Finished webhook attempts on their way to the store.
    recorder: OnceLock<tokio::sync::mpsc::UnboundedSender<webhook::Finished>>,
    /// Remote workers: how long a claim's lease runs, and how long a worker may stay silent.
    worker_lease_ms: AtomicI64,
    worker_timeout_ms: AtomicI64,
    /// Workers known when the store opened: their silence is watched from [`Engine::start`],
    /// with the worker timeout then in force.
    watched_on_open: Mutex<Vec<(String, String)>>,
    /// When this engine opened the store: workers are not blamed for silence before it.
    opened_at: Millis,
    /// Wakes the notifier (the writer calls it after committing a notification).
    notify_wake: Arc<Notify>,
    /// Whether "email is not configured" was said already.
    email_unconfigured_said: AtomicBool,
    /// The SMTP relay alert emails go through (set when a server starts with SMTP configured).
    mailer: OnceLock<crate::alerts::email::Mailer>,
    /// The server's public base URL, for links in alert emails.
    public_url: OnceLock<String>,
    metrics: metrics::Metrics,
    /// The partitions whose ticks this node fires: all of them on a database it owns (SQLite);
    /// on a shared one, those it holds leases on now.
    parts: AtomicU64,
    /// The cluster as this node saw it at its last beat (shared databases only).
    view: Mutex<Option<store::cluster::Membership>>,
    /// Set when the held partitions' work must be read again (a missed notification).
    resync: AtomicBool,
    /// When the last successful beat started, in ms from `opened_instant` (0: none yet).
    beat_at: AtomicU64,
    opened_instant: Instant,
}

/// The scheduling engine over one database file.
pub struct Engine {
    inner: Arc<Inner>,
    loop_task: Mutex<Option<JoinHandle<()>>>,
    /// The beat thread of a node on a shared database (it leaves the cluster when it ends).
    beat_task: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Attempts a previous process left running, closed as interrupted when this engine opened.
    pub interrupted_on_open: usize,
}

impl Engine {
    /// Opens the database, recovers work a previous process left in flight and rebuilds the timer.
    /// Nothing fires until [`Engine::start`].
    pub fn open(path: impl AsRef<Path>, clock: Clock, config: Config) -> Result<Engine> {
        config.delivery.validate()?;
        if config.worker_lease_ms <= 0 || config.worker_timeout_ms <= 0 {
            return Err(Error::invalid(
                "config",
                "the worker lease and worker timeout must be positive",
            ));
        }
        if !(limits::MIN_NODE_LEASE_MS..=limits::MAX_NODE_LEASE_MS).contains(&config.node_lease_ms)
        {
            return Err(Error::invalid(
                "node_lease",
                format!(
                    "must be between {} and {} seconds",
                    limits::MIN_NODE_LEASE_MS as f64 / 1000.0,
                    limits::MAX_NODE_LEASE_MS / 1000
                ),
            ));
        }
        let store = Store::open(path.as_ref())?;
        let now = clock.now();
        let shared = store.is_shared();
        // A file damaged past its first pages shows here, in the first reads of its rows. On a
        // shared database, work is recovered and timed by partition, once the node holds some.
        let opening = || -> Result<_> {
            let (recovered, due) = if shared {
                (Recovered::default(), Vec::new())
            } else {
                let everything = store::cluster::Scope::everything();
                let recovered = store.write(move |c| c.recover(now, &everything))?;
                (recovered, store.read(|c| c.due_index())?)
            };
            let watched = store.read(|c| c.watched_workers())?;
            Ok((recovered, due, watched))
        };
        let (recovered, due, watched_workers) = opening().map_err(|e| store.open_error(e))?;
        let mut timers =
            Timers::with_capacity(due.len() + recovered.retries.len() + recovered.deadlines.len());
        for (at, id) in due {
            timers.push(Timer {
                at,
                kind: TimerKind::Cue,
                id,
            });
        }
        for (at, id) in recovered.retries {
            timers.push(Timer {
                at,
                kind: TimerKind::Retry,
                id,
            });
        }
        let watched = [
            (recovered.deadlines, TimerKind::Deadline),
            (recovered.leases, TimerKind::Lease),
            (recovered.claim_windows, TimerKind::Claim),
        ];
        for (entries, kind) in watched {
            for (at, id) in entries {
                timers.push(Timer { at, kind, id });
            }
        }
        let lanes = Arc::new(fair::Lanes::new(config.delivery.caps()));
        let limits = config.delivery;
        let (worker_lease_ms, worker_timeout_ms) =
            (config.worker_lease_ms, config.worker_timeout_ms);
        let notify_wake = Arc::new(Notify::new());
        let wake = Arc::clone(&notify_wake);
        store.on_notify(move || wake.notify_one());
        let (local, held): (Vec<Ready>, Vec<Ready>) = recovered
            .pending
            .into_iter()
            .partition(|(_, transport)| transport == "local");
        let inner = Arc::new(Inner {
            store,
            clock,
            config,
            instance: new_id("engine", now),
            timers: Mutex::new(timers),
            wake: Notify::new(),
            ready: Mutex::new(local.into_iter().map(|(id, _)| id).collect()),
            held: Mutex::new(held),
            recorder: OnceLock::new(),
            ready_cv: Condvar::new(),
            problems: Mutex::new(VecDeque::new()),
            problems_cv: Condvar::new(),
            told: Mutex::new(HashMap::new()),
            claims_open: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            closing: Notify::new(),
            policy: Arc::new(Policy::new(false)),
            deliverer: OnceLock::new(),
            lanes: parking_lot::RwLock::new((lanes, limits)),
            deliveries: AtomicUsize::new(0),
            deliveries_done: Condvar::new(),
            deliveries_lock: Mutex::new(()),
            worker_lease_ms: AtomicI64::new(worker_lease_ms.max(1)),
            worker_timeout_ms: AtomicI64::new(worker_timeout_ms.max(1)),
            watched_on_open: Mutex::new(watched_workers),
            opened_at: now,
            notify_wake,
            email_unconfigured_said: AtomicBool::new(false),
            mailer: OnceLock::new(),
            public_url: OnceLock::new(),
            metrics: metrics::Metrics::default(),
            parts: AtomicU64::new(if shared { 0 } else { store::cluster::ALL }),
            view: Mutex::new(None),
            resync: AtomicBool::new(false),
            beat_at: AtomicU64::new(0),
            opened_instant: Instant::now(),
        });
        Ok(Engine {
            inner,
            loop_task: Mutex::new(None),
            beat_task: Mutex::new(None),
            interrupted_on_open: recovered.interrupted,
        })
    }

    /// Starts firing. Idempotent.
    pub fn start(&self) -> Result<()> {
        self.check_open()?;
        let mut task = self.loop_task.lock();
        if task.is_none() {
            let inner = Arc::clone(&self.inner);
            let rt = runtime()?;
            *task = Some(rt.spawn(async move { inner.run_timer().await }));
            let notifier = Arc::clone(&self.inner);
            rt.spawn(async move { notifier.run_notifier().await });
            if self.inner.store.is_shared() {
                *self.beat_task.lock() = Some(self.inner.spawn_beats()?);
                let listener = Arc::clone(&self.inner);
                rt.spawn(async move { listener.run_listener().await });
            }
            // Workers known at open get a whole timeout from then to be heard from.
            let timeout = self.inner.worker_timeout_ms.load(Ordering::Relaxed);
            let at = self.inner.opened_at + timeout;
            let watched = std::mem::take(&mut *self.inner.watched_on_open.lock());
            self.inner
                .add_timers(watched.into_iter().map(|(owner, worker)| Timer {
                    at,
                    kind: TimerKind::Silence,
                    id: silence_id(&owner, &worker),
                }));
            let held = std::mem::take(&mut *self.inner.held.lock());
            let _guard = rt.enter();
            self.inner.dispatch(held);
        }
        Ok(())
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::SeqCst) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// Runs `f` over the store's queries. Writes go through the engine's own methods, which
    /// commit and then do what follows (the timer, dispatch) in one place.
    pub fn read<R>(&self, f: impl FnOnce(&dyn Reads) -> Result<R>) -> Result<R> {
        self.inner.store.read(f)
    }

    /// The store's latest failure to write, if it happened within `within`.
    pub fn write_failed_within(&self, within: Duration) -> Option<store::WriteFailure> {
        self.inner.store.write_failed_within(within)
    }

    /// The engine's clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    fn schedule(&self, timer: Timer) {
        self.inner.add_timers(std::iter::once(timer));
    }

    /// Creates or updates a cue from its definition. Returns the cue id.
    pub fn upsert_cue(&self, owner: &str, spec: CueSpec) -> Result<String> {
        self.check_open()?;
        let now = self.inner.clock.now();
        let owner = owner.to_string();
        let teller = self.inner.teller();
        let up = self.inner.store.write(move |c| {
            let up = c.upsert_cue(&owner, &spec, now)?;
            if up.changed {
                teller.tell(c, [up.id.as_str()])?;
            }
            Ok(up)
        })?;
        if let (true, Some(at)) = (up.changed, up.next_run) {
            self.schedule(Timer {
                at,
                kind: TimerKind::Cue,
                id: up.id.clone(),
            });
        }
        Ok(up.id)
    }

    /// Creates many new cues in one transaction (for bulk loads). Returns their ids.
    pub fn create_cues(&self, owner: &str, specs: Vec<CueSpec>) -> Result<Vec<String>> {
        self.check_open()?;
        let now = self.inner.clock.now();
        let owner = owner.to_string();
        let teller = self.inner.teller();
        let rows = self.inner.store.write(move |c| {
            let rows = c.insert_cues(&owner, &specs, now)?;
            teller.tell(c, rows.iter().map(|(id, _)| id.as_str()))?;
            Ok(rows)
        })?;
        self.inner.add_timers(rows.iter().filter_map(|(id, next)| {
            next.map(|at| Timer {
                at,
                kind: TimerKind::Cue,
                id: id.clone(),
            })
        }));
        Ok(rows.into_iter().map(|(id, _)| id).collect())
    }

    /// Resolves an id or name to a cue id.
    pub fn resolve_cue(&self, owner: &str, id_or_name: &str) -> Result<String> {
        self.inner.store.read(|c| c.resolve_cue(owner, id_or_name))
    }

    /// A cue as JSON.
    pub fn cue(&self, id: &str) -> Result<Value> {
        self.inner.store.read(|c| c.cue_json(id))
    }

    /// All of an owner's cues as JSON.
    pub fn cues(&self, owner: &str) -> Result<Vec<Value>> {
        self.inner
            .store
            .read(|c| c.cue_ids(owner)?.iter().map(|id| c.cue_json(id)).collect())
    }

    /// Names of the owner's active local cues not in `handled`, at most `limit`.
    pub fn unhandled_cues(
        &self,
        owner: &str,
        handled: &[String],
        limit: usize,
    ) -> Result<Vec<String>> {
        self.inner
            .store
            .read(|c| c.unhandled_cue_names(owner, handled, limit))
    }

    /// Pauses a cue: its ticks are recorded as missed until it is resumed.
    pub fn pause(&self, cue_id: &str) -> Result<()> {
        let (id, now) = (cue_id.to_string(), self.inner.clock.now());
        self.inner.store.write(move |c| c.pause(&id, now))
    }

    /// Resumes a paused cue from now; ticks missed while paused are recorded.
    pub fn resume(&self, cue_id: &str) -> Result<()> {
        let (id, now) = (cue_id.to_string(), self.inner.clock.now());
        let teller = self.inner.teller();
        let next = self.inner.store.write(move |c| {
            let next = c.resume(&id, now)?;
            teller.tell(c, [id.as_str()])?;
            Ok(next)
        })?;
        if let Some(at) = next {
            self.schedule(Timer {
                at,
                kind: TimerKind::Cue,
                id: cue_id.to_string(),
            });
        }
        Ok(())
    }

    /// Deletes a cue and its history.
    pub fn delete(&self, cue_id: &str) -> Result<()> {
        let id = cue_id.to_string();
        self.inner.store.write(move |c| c.delete_cue(&id))?;
        self.inner.timers.lock().forget_cues(&[cue_id.to_string()]);
        Ok(())
    }

    /// Deletes `owner`'s cues among `ids`, each with its history as [`Engine::delete`] does, in
    /// one transaction, and drops their ticks from the timer. Returns the ids deleted and those
    /// skipped (not found, another owner's, or named again), each in the order given.
    pub async fn delete_cues(&self, owner: &str, ids: Vec<String>) -> Result<DeletedCues> {
        self.check_open()?;
        let owner = owner.to_string();
        let done = self
            .inner
            .store
            .write_async(move |c| {
                let mut out = DeletedCues::default();
                for id in &ids {
                    let mine = match c.cue_json(id) {
                        Ok(v) => v.get("owner").and_then(Value::as_str) == Some(owner.as_str()),
                        Err(Error::CueNotFound(_)) => false,
                        Err(e) => return Err(e),
                    };
                    if mine {
                        c.delete_cue(id)?;
                        out.deleted.push(id.clone());
                    } else {
                        out.skipped.push(id.clone());
                    }
                }
                Ok(out)
            })
            .await?;
        self.inner.timers.lock().forget_cues(&done.deleted);
        Ok(done)
    }

    /// Runs a cue now, outside its schedule. Returns the execution id.
    pub fn fire(&self, cue_id: &str, payload: Option<Value>) -> Result<String> {
        self.check_open()?;
        let (id, now) = (cue_id.to_string(), self.inner.clock.now());
        let fired = self
            .inner
            .store
            .write(move |c| c.fire_at(&id, payload.as_ref(), None, None, now))?;
        self.fired(&fired);
        Ok(fired.id)
    }

    /// Puts a manual fire on its way: dispatched now, or at its later time.
    pub fn fired(&self, fired: &Fired) {
        if !fired.created {
            return;
        }
        match fired.later {
            Some(at) => self.schedule(Timer {
                at,
                kind: TimerKind::Retry,
                id: fired.id.clone(),
            }),
            None => self.dispatch(vec![(fired.id.clone(), fired.transport.clone())]),
        }
    }

    /// Hands executions to their transport: the local queue, or the webhook sender.
    pub fn dispatch(&self, ready: Vec<Ready>) {
        self.inner.dispatch_anywhere(ready);
    }

    /// Runs an execution again as a new one. Returns the new execution id.
    pub fn replay(&self, execution_id: &str) -> Result<String> {
        self.check_open()?;
        let (id, now) = (execution_id.to_string(), self.inner.clock.now());
        let (exec, transport) = self.inner.store.write(move |c| {
            let exec = c.replay(&id, now)?;
            let transport = c.execution_transport(&exec)?;
            Ok((exec, transport))
        })?;
        self.dispatch(vec![(exec.clone(), transport)]);
        Ok(exec)
    }

    /// Lets webhook deliveries reach loopback and private networks (development and tests), or
    /// stops them again.
    pub fn set_allow_private_targets(&self, allow: bool) {
        self.inner.policy.set_allow_private(allow);
    }

    /// Sets how long a remote worker's claim lasts before it must be extended, and how long a
    /// worker may stay silent before its expired claims are released (as [`Config`] does at
    /// open). Set before [`Engine::start`], the timeout also applies to the workers known when
    /// the store opened; later, to workers heard from after the change.
    pub fn set_worker_timing(&self, lease_ms: i64, timeout_ms: i64) {
        self.inner
            .worker_lease_ms
            .store(lease_ms.max(1), Ordering::Relaxed);
        self.inner
            .worker_timeout_ms
            .store(timeout_ms.max(1), Ordering::Relaxed);
    }

    /// Sends alert emails through `mailer` from now on (the first call wins).
    pub fn set_mailer(&self, mailer: crate::alerts::email::Mailer) {
        let _ = self.inner.mailer.set(mailer);
    }

    /// The base URL links in alert emails start with (the first call wins).
    pub fn set_public_url(&self, url: String) {
        let _ = self
            .inner
            .public_url
            .set(url.trim_end_matches('/').to_string());
    }

    /// (lease, worker timeout) in milliseconds.
    pub fn worker_timing(&self) -> (i64, i64) {
        (
            self.inner.worker_lease_ms.load(Ordering::Relaxed),
            self.inner.worker_timeout_ms.load(Ordering::Relaxed),
        )
    }

    /// Claims an execution of `owner` for the remote worker `worker_id`: the one named, or the
    /// oldest it can handle (of `task`, when given). Its lease and outcome deadline go on the timer.
    pub async fn claim_for_worker(
        &self,
        owner: &str,
        execution_id: Option<&str>,
        worker_id: &str,
        task: Option<&str>,
    ) -> Result<Option<workers::WorkerClaim>> {
        self.check_open()?;
        let (lease, _) = self.worker_timing();
        let now = self.inner.clock.now();
        let (o, e, w, t) = (
            owner.to_string(),
            execution_id.map(str::to_string),
            worker_id.to_string(),
            task.map(str::to_string),
        );
        let got = self
            .inner
            .store
            .write_async(move |c| {
                c.claim_for_worker(&o, e.as_deref(), &w, t.as_deref(), now, lease)
            })
            .await?;
        if let Some(claim) = &got {
            let id = &claim.job.execution_id;
            let mut timers = vec![Timer {
                at: claim.lease_expires_at,
                kind: TimerKind::Lease,
                id: id.clone(),
            }];
            if let Some(at) = claim.job.outcome_deadline_at {
                timers.push(Timer {
                    at,
                    kind: TimerKind::Deadline,
                    id: id.clone(),
                });
            }
            self.inner.add_timers(timers);
        }
        Ok(got)
    }

    /// Records an outcome reported over the API: a worker's completes its claim (a failure's
    /// retry goes on the timer); any other is written once onto its execution.
    pub async fn report_outcome(
        &self,
        owner: &str,
        execution_id: &str,
        outcome: ReportedOutcome,
    ) -> Result<Reported> {
        self.check_open()?;
        let now = self.inner.clock.now();
        let (o, id) = (owner.to_string(), execution_id.to_string());
        let done = self
            .inner
            .store
            .write_async(move |c| match c.worker_report(&o, &id, &outcome, now)? {
                Some(w) => Ok((Reported::Worker(w), None)),
                None => {
                    let (state, chained) = c.report_outcome(&o, &id, &outcome, now)?;
                    Ok((Reported::Recorded(state), chained))
                }
            })
            .await?;
        let (done, chained) = done;
        if let Reported::Worker(w) = &done {
            self.inner.finished(execution_id, w.finished.clone());
        }
        self.chained(chained);
        Ok(done)
    }

    /// Settles a reported outcome's verification (`valid` or not, with a reason); a success that
    /// was waiting for its verdict fires the cue it chains to. Returns the outcome state.
    pub async fn verify(
        &self,
        owner: &str,
        execution_id: &str,
        valid: bool,
        reason: Option<String>,
    ) -> Result<String> {
        self.check_open()?;
        let now = self.inner.clock.now();
        let (o, id) = (owner.to_string(), execution_id.to_string());
        let (state, chained) = self
            .inner
            .store
            .write_async(move |c| c.verify(&o, &id, valid, reason.as_deref(), now))
            .await?;
        self.chained(chained);
        Ok(state)
    }

    /// Puts a chained execution (`on_success_fire`) on its way, once its transaction committed.
    fn chained(&self, chained: Option<store::Chained>) {
        if let Some(c) = chained {
            self.dispatch(vec![(c.id, c.transport)]);
        }
    }

    /// Records a worker's heartbeat; a new worker, or one back from being reported offline, has
    /// its silence watched from now on.
    pub async fn worker_heartbeat(
        &self,
        owner: &str,
        worker_id: &str,
        handlers: Option<Vec<String>>,
    ) -> Result<Millis> {
        self.check_open()?;
        let now = self.inner.clock.now();
        let (o, w) = (owner.to_string(), worker_id.to_string());
        let watch = self
            .inner
            .store
            .write_async(move |c| c.heartbeat(&o, &w, handlers.as_deref(), now))
            .await?;
        if watch {
            let (_, timeout) = self.worker_timing();
            self.inner.add_timers([Timer {
                at: now + timeout,
                kind: TimerKind::Silence,
                id: silence_id(owner, worker_id),
            }]);
        }
        Ok(now)
    }

    /// Forgets a worker of `owner`; the claims it held wait for a claim again.
    pub async fn delete_worker(&self, owner: &str, worker_id: &str) -> Result<()> {
        self.check_open()?;
        let now = self.inner.clock.now();
        let (o, w) = (owner.to_string(), worker_id.to_string());
        let again = self
            .inner
            .store
            .write_async(move |c| c.delete_worker(&o, &w, now))
            .await?;
        self.dispatch(again.into_iter().map(|id| (id, "worker".into())).collect());
        Ok(())
    }

    /// The SSRF guard outbound requests go through.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.inner.policy
    }

    /// The engine's tokio runtime (shared by the process).
    pub fn runtime(&self) -> Result<&'static Runtime> {
        runtime()
    }

    /// The process's tokio runtime, which every engine shares.
    pub fn shared_runtime() -> Result<&'static Runtime> {
        runtime()
    }

    /// Waits up to `timeout` for work and claims it. `None` on timeout or once claims are stopped.
    /// Blocks the calling thread: never call it on the runtime.
    pub fn claim(&self, timeout: Duration) -> Result<Option<Claimed>> {
        Ok(self.claim_many(1, timeout)?.into_iter().next())
    }

    /// Reports how attempt `attempt` of an execution ended.
    pub fn complete(
        &self,
        execution_id: &str,
        attempt: i64,
        outcome: ReportedOutcome,
    ) -> Result<()> {
        let (id, now) = (execution_id.to_string(), self.inner.clock.now());
        let finished = self
            .inner
            .store
            .write(move |c| c.complete(&id, attempt, &outcome, now))?;
        self.inner.finished(execution_id, finished);
        Ok(())
    }

    /// Takes up to `max` queued ids (the caller sizes batches: it knows how many threads share
    /// the queue).
    fn take_batch(&self, max: usize) -> Vec<String> {
        if !self.inner.claims_open.load(Ordering::SeqCst) {
            return Vec::new();
        }
        let mut q = self.inner.ready.lock();
        let n = max.min(q.len());
        q.drain(..n).collect()
    }

    fn claimed(&self, jobs: &[Claimed]) {
        self.inner.add_timers(jobs.iter().filter_map(|j| {
            j.outcome_deadline_at.map(|at| Timer {
                at,
                kind: TimerKind::Deadline,
                id: j.execution_id.clone(),
            })
        }));
    }

    /// Waits up to `timeout` for work and claims a batch of up to `max` jobs in one transaction
    /// Empty on timeout or once claims are stopped.
    pub fn claim_many(&self, max: usize, timeout: Duration) -> Result<Vec<Claimed>> {
        let until = Instant::now() + timeout;
        loop {
            {
                let mut q = self.inner.ready.lock();
                while q.is_empty() {
                    if !self.inner.claims_open.load(Ordering::SeqCst)
                        || self.inner.ready_cv.wait_until(&mut q, until).timed_out()
                    {
                        return Ok(Vec::new());
                    }
                }
            }
            let ids = self.take_batch(max);
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let (me, now) = (Arc::clone(&self.inner), self.inner.clock.now());
            let jobs = self
                .inner
                .store
                .write(move |c| me.claim_ids(c, &ids, now))?;
            if !jobs.is_empty() {
                self.claimed(&jobs);
                return Ok(jobs);
            }
        }
    }

    /// Reports finished attempts and, in the same transaction, claims the next batch of up to
    /// `max` queued jobs: one store round trip per batch while there is a backlog. An outcome that
    /// fails validation is recorded as a failure that says why; a report the store refuses (the
    /// attempt is no longer running, the execution was deleted) does not stop the others and
    /// comes back with its execution id. With nothing queued it waits up to `timeout` for work.
    pub fn finish_many(
        &self,
        reports: Vec<(String, i64, ReportedOutcome)>,
        max: usize,
        timeout: Duration,
    ) -> Result<Finish> {
        let reports: Vec<_> = reports
            .into_iter()
            .map(|(id, attempt, o)| match store::check_outcome(&o) {
                Ok(()) => (id, attempt, o),
                Err(e) => {
                    let error = Some(format!("the handler's outcome was rejected: {e}"));
                    (
                        id,
                        attempt,
                        ReportedOutcome {
                            success: false,
                            error,
                            started_at: o.started_at,
                            ..Default::default()
                        },
                    )
                }
            })
            .collect();
        let ids = self.take_batch(max);
        let (me, now) = (Arc::clone(&self.inner), self.inner.clock.now());
        let popped = ids.clone();
        let (results, jobs) = self
            .inner
            .store
            .write(move |c| {
                let mut results = Vec::with_capacity(reports.len());
                for (id, attempt, o) in &reports {
                    // complete() checks everything before it writes: a refusal leaves no trace.
                    let r = c.complete(id, *attempt, o, now);
                    results.push((id.clone(), r));
                }
                Ok((results, me.claim_ids(c, &ids, now)?))
            })
            .inspect_err(|_| {
                let mut q = self.inner.ready.lock();
                for id in popped.into_iter().rev() {
                    q.push_front(id);
                }
            })?;
        let mut refused = Vec::new();
        let mut retries = Vec::new();
        let mut chained = Vec::new();
        for (id, r) in results {
            match r {
                Ok(Finished::RetryAt(at)) => {
                    self.inner.metrics.retry_scheduled();
                    retries.push(Timer {
                        at,
                        kind: TimerKind::Retry,
                        id,
                    })
                }
                Ok(Finished::AwaitOutcome(at)) => retries.push(Timer {
                    at,
                    kind: TimerKind::Deadline,
                    id,
                }),
                Ok(Finished::Done(Some(c))) => chained.push((c.id, c.transport)),
                Ok(Finished::Done(None)) => {}
                Err(e) => refused.push((id, e)),
            }
        }
        self.inner.add_timers(retries);
        if !chained.is_empty() {
            self.dispatch(chained);
        }
        self.claimed(&jobs);
        if jobs.is_empty() && max > 0 && !timeout.is_zero() {
            return Ok((refused, self.claim_many(max, timeout)?));
        }
        Ok((refused, jobs))
    }

    /// Lists executions.
    pub fn executions(&self, owner: &str, filter: &ExecutionFilter) -> Result<Vec<Value>> {
        self.inner.store.read(|c| c.list_executions(owner, filter))
    }

    /// One execution with its attempts.
    pub fn execution(&self, owner: &str, id: &str) -> Result<Value> {
        self.inner.store.read(|c| c.execution(owner, id))
    }

    /// Stats of one cue since an instant.
    pub fn stats(&self, cue_id: &str, since: Millis) -> Result<Value> {
        self.inner.store.read(|c| c.cue_stats(cue_id, since))
    }

    /// How many executions wait for a claim.
    pub fn queued(&self) -> usize {
        self.inner.ready.lock().len()
    }

    /// The engine's counters (fire lag, how webhook attempts ended, retries).
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }

    /// The cluster as this node sees it (one node owning everything on SQLite).
    pub fn cluster(&self) -> cluster::ClusterView {
        self.inner.cluster_view()
    }

    /// The engine's state for health checks; never waits on the store.
    pub fn health(&self) -> metrics::Health {
        let snap = self.inner.metrics.snapshot();
        let (lanes, limits) = self.inner.lanes.read().clone();
        let (slots_busy, slots) = lanes.server_slots();
        let waits = lanes.waits();
        let queue = |q: fair::QueueStats| metrics::QueueHealth {
            waiting: q.waiting,
            oldest_wait_ms: q.oldest.map(|d| d.as_millis().min(i64::MAX as u128) as i64),
        };
        let running = !self.inner.closed.load(Ordering::SeqCst)
            && self
                .loop_task
                .lock()
                .as_ref()
                .is_some_and(|t| !t.is_finished());
        metrics::Health {
            now: self.inner.clock.now(),
            loop_running: running,
            loop_started_at: snap.loop_started_at,
            last_wake: snap.last_wake,
            next_due: self.inner.timers.lock().peek_at(),
            last_fire_lag_ms: snap.last_lag_ms,
            deliveries_in_flight: self.inner.deliveries.load(Ordering::SeqCst),
            delivery_slots: slots,
            delivery_slots_busy: slots_busy,
            tenant_slots: limits.per_tenant,
            destination_slots: limits.per_destination,
            max_delivery_timeout_ms: limits.max_timeout_ms,
            server_queue: queue(waits.server),
            tenant_queue: queue(waits.tenant),
            destination_queue: queue(waits.destination),
            stuck_after_ms: limits.stuck_after_ms(),
            local_queue: self.queued(),
        }
    }

    /// Sets the limits on webhook deliveries (see [`DeliveryLimits`]). Deliveries in flight
    /// keep their slots; new ones queue under the new limits.
    pub fn set_delivery_limits(&self, limits: DeliveryLimits) -> Result<()> {
        limits.validate()?;
        let mut cur = self.inner.lanes.write();
        if cur.1 != limits {
            *cur = (Arc::new(fair::Lanes::new(limits.caps())), limits);
        }
        Ok(())
    }

    /// The limits on webhook deliveries in force.
    pub fn delivery_limits(&self) -> DeliveryLimits {
        self.inner.lanes.read().1
    }

    /// Stops handing out work: blocked and future claims return `None`.
    pub fn stop_claims(&self) {
        self.inner.claims_open.store(false, Ordering::SeqCst);
        let _guard = self.inner.ready.lock();
        self.inner.ready_cv.notify_all();
    }

    /// Waits up to `timeout` for a problem the engine met on its own threads (a timer round that
    /// failed, say) and returns it; `None` on timeout or once the engine is closed and drained.
    /// Blocks: never call it on the runtime.
    pub fn next_problem(&self, timeout: Duration) -> Option<String> {
        let until = Instant::now() + timeout;
        let mut q = self.inner.problems.lock();
        loop {
            if let Some(p) = q.pop_front() {
                return Some(p);
            }
            if self.inner.closed.load(Ordering::SeqCst)
                || self.inner.problems_cv.wait_until(&mut q, until).timed_out()
            {
                return q.pop_front();
            }
        }
    }

    /// How long closing waits for requests and deliveries in flight, together: well inside the
    /// 10 s a container runtime gives a process between SIGTERM and SIGKILL.
    pub const CLOSE_GRACE: Duration = Duration::from_secs(8);

    /// Stops the timer and the writer after everything already sent is committed. Idempotent.
    /// Blocks: never call it on the runtime.
    pub fn close(&self) {
        self.close_by(Instant::now() + Self::CLOSE_GRACE);
    }

    /// [`Engine::close`], waiting for deliveries in flight until `deadline` at most.
    pub fn close_by(&self, deadline: Instant) {
        self.stop_claims();
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            // Closed already (the drop after an explicit close): its grace period is spent.
            return;
        }
        self.inner.wake.notify_one();
        self.inner.closing.notify_waiters();
        self.inner.notify_wake.notify_one();
        let task = self.loop_task.lock().take();
        if let (Some(task), Ok(rt)) = (task, runtime()) {
            let _ = rt.block_on(task);
        }
        let beats = self.beat_task.lock().take();
        if let Some(beats) = beats {
            let _ = beats.join();
        }
        // Deliveries in flight get until the deadline to record how they went; one still running
        // after that is recorded as interrupted on the next open and retried.
        let until = deadline;
        let mut g = self.inner.deliveries_lock.lock();
        while self.inner.deliveries.load(Ordering::SeqCst) > 0 {
            if self
                .inner
                .deliveries_done
                .wait_until(&mut g, until)
                .timed_out()
            {
                break;
            }
        }
        drop(g);
        self.inner.store.close();
        let _guard = self.inner.problems.lock();
        self.inner.problems_cv.notify_all();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.close();
    }
}

/// A remote worker's claim lasts this long unless extended by an execution heartbeat.
pub const DEFAULT_WORKER_LEASE_MS: i64 = limits::WORKER_LEASE_MS;
/// A worker not heard from for this long counts as gone (its expired claims are released).
pub const DEFAULT_WORKER_TIMEOUT_MS: i64 = limits::WORKER_TIMEOUT_MS;

/// Timer entries acted on in the first round after a wait, and at most in any round.
const FIRST_ROUND: usize = 8;
const MAX_ROUND: usize = 256;
/// At most this many in a round on a database shared with other nodes: a transaction that
/// touches fewer rows meets fewer of theirs (PostgreSQL's serializable checks then abort and
/// retry less), and a retry redoes less.
const MAX_SHARED_ROUND: usize = 32;
/// How far ahead of their instant ticks and retries are committed on a shared database (at
/// least; [`Config::fire_ahead_ms`] when larger).
const SHARED_FIRE_AHEAD_MS: i64 = 250;

/// Problems kept for the embedding program; beyond this the oldest are dropped (and counted).
const MAX_PROBLEMS: usize = 1_000;
/// The same kind of problem is told at most this often.
const PROBLEM_EVERY: Duration = Duration::from_secs(60);
/// Kinds of problem remembered at once (beyond this the memory starts afresh).
const MAX_PROBLEM_KINDS: usize = 512;

/// A problem's words with the ids it names masked (`exec_…`, `cue_…`) and digits dropped: what
/// makes two problems the same kind.
fn problem_kind(message: &str) -> String {
    message
        .split_whitespace()
        .map(|w| {
            if ["exec_", "cue_", "alrt_", "alert_", "usr_"]
                .iter()
                .any(|p| {
                    w.trim_matches(|c: char| !c.is_alphanumeric())
                        .starts_with(p)
                })
            {
                "…"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .collect()
}

impl Inner {
    /// The delivery slots in force.
    fn lanes(&self) -> Arc<fair::Lanes> {
        Arc::clone(&self.lanes.read().0)
    }

    /// The longest a delivery may take now.
    fn max_delivery_timeout_ms(&self) -> i64 {
        self.lanes.read().1.max_timeout_ms
    }
    /// Records a problem met on an engine thread and wakes whoever reports them.
    /// Tells the embedding program about a problem. The same kind of problem (the same words,
    /// whatever ids it names) is told at most once a minute, with how many like it were held
    /// back: a full disk fails every write, and one line a minute says so as well as thirty a
    /// second would.
    fn problem(&self, message: String) {
        let now = Instant::now();
        let message = {
            let mut told = self.told.lock();
            if told.len() > MAX_PROBLEM_KINDS {
                told.clear();
            }
            match told.get_mut(&problem_kind(&message)) {
                Some((at, held)) if now.duration_since(*at) < PROBLEM_EVERY => {
                    *held += 1;
                    return;
                }
                Some((at, held)) => {
                    let again = if *held > 0 {
                        format!("{message} ({held} more like it in the last minute)")
                    } else {
                        message
                    };
                    (*at, *held) = (now, 0);
                    again
                }
                None => {
                    told.insert(problem_kind(&message), (now, 0));
                    message
                }
            }
        };
        tracing::error!("{message}");
        let mut q = self.problems.lock();
        if q.len() >= MAX_PROBLEMS {
            q.pop_front();
        }
        q.push_back(message);
        self.problems_cv.notify_all();
    }

    fn claim_ids(&self, c: &dyn Writes, ids: &[String], now: Millis) -> Result<Vec<Claimed>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(c.claim(id, &self.instance, now, self.config.lease_ms, true)?);
        }
        Ok(out)
    }

    fn add_timers(&self, timers: impl IntoIterator<Item = Timer>) {
        let mut heap = self.timers.lock();
        let before = heap.peek_at();
        for t in timers {
            heap.push(t);
        }
        if heap.peek_at() != before {
            self.wake.notify_one();
        }
    }

    fn enqueue(&self, ids: impl IntoIterator<Item = String>) {
        let mut q = self.ready.lock();
        let before = q.len();
        q.extend(ids);
        match q.len() - before {
            0 => {}
            1 => {
                self.ready_cv.notify_one();
            }
            _ => {
                self.ready_cv.notify_all();
            }
        }
    }

    async fn run_timer(self: Arc<Self>) {
        // Rounds start small after a wait, so that the first runs of a burst start while its
        // later ticks are still being fired, and grow while a backlog lasts (fewer commits).
        let mut round = FIRST_ROUND;
        // On PostgreSQL a round of ticks is a series of round trips to the server: committed
        // further ahead of their instant, they still go out on time.
        let ahead = if self.store.is_shared() {
            self.config.fire_ahead_ms.max(SHARED_FIRE_AHEAD_MS)
        } else {
            self.config.fire_ahead_ms.max(0)
        };
        let max_round = if self.store.is_shared() {
            MAX_SHARED_ROUND
        } else {
            MAX_ROUND
        };
        self.metrics.loop_started(self.clock.now());
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            let now = self.clock.now();
            self.metrics.woke(now);
            let next = self.timers.lock().peek();
            let (due, as_of) = match next {
                Some((at, _)) if at <= now => {
                    let due = self.timers.lock().pop_due(now, round);
                    round = (round * 2).min(max_round);
                    (due, now)
                }
                // Close enough: everything due at that instant is committed now and released
                // when the instant comes.
                Some((at, kind)) if kind.may_act_ahead() && at - ahead <= now => {
                    (self.timers.lock().pop_ahead(at, max_round), at)
                }
                Some((at, kind)) => {
                    round = FIRST_ROUND;
                    let wake_at = if kind.may_act_ahead() { at - ahead } else { at };
                    tokio::select! {
                        _ = self.clock.sleep_until(wake_at) => {}
                        _ = self.wake.notified() => {}
                    }
                    continue;
                }
                None => {
                    round = FIRST_ROUND;
                    self.wake.notified().await;
                    continue;
                }
            };
            // On a shared database, ticks of cues in partitions this node no longer holds are
            // the holder's now.
            let due = if self.store.is_shared() {
                let held = if self.beat_is_fresh() {
                    self.parts.load(Ordering::SeqCst)
                } else {
                    0
                };
                due.into_iter()
                    .filter(|t| t.kind != TimerKind::Cue || store::cluster::holds(held, &t.id))
                    .collect()
            } else {
                due
            };
            if due.is_empty() {
                continue;
            }
            if let Err(e) = self.act(due, as_of).await {
                self.problem(format!("timer round failed: {e}"));
                if matches!(e, Error::Closed) {
                    return;
                }
            }
        }
    }

    /// Acts on due timer entries as of `as_of` in one write operation, then schedules what
    /// follows. Should the batch fail, each entry is retried in an operation of its own, and an
    /// entry that still fails is put back a second later: a bad row or a full disk delays work
    /// but never drops it. (One operation for the batch, not a savepoint per entry: savepoints
    /// cost SQLite a copy of every page they touch, which halved firing throughput.)
    async fn act(self: &Arc<Self>, due: Vec<Timer>, as_of: Millis) -> Result<()> {
        let rules = Rules {
            grace_ms: self.config.grace_ms,
            worker_timeout_ms: self.worker_timeout_ms.load(Ordering::Relaxed),
            alive_since: self.opened_at,
        };
        let lease = self.config.lease_ms;
        // Webhook executions fired here are claimed in the same transaction, as many as there
        // are free delivery slots: their requests go out without another trip to the writer.
        let lanes = self.lanes();
        let free = lanes.server_free();
        let instants = metrics::release_instants(&due);
        let batch = due.clone();
        let node = self.instance.clone();
        let whole = self
            .store
            .write_async(move |c| {
                let (ready, later) = act_on_all(c, &batch, as_of, rules)?;
                let (ready, sends) =
                    webhook::claim_ready(c, &node, ready, as_of, lease, free, &lanes)?;
                Ok((ready, later, sends))
            })
            .await;
        let (ready, later, sends) = match whole {
            Ok(done) => done,
            Err(Error::Closed) => return Err(Error::Closed),
            // The database cannot be written at all (gone, full, read-only): each entry alone
            // would only fail the same way, after its own wait on a connection that may not come.
            Err(e) if store::is_unwritable(&e) => {
                self.problem(format!(
                    "firing {} timer entries failed, retrying in 1 s: {e}",
                    due.len()
                ));
                let at = self.clock.now().max(as_of) + 1_000;
                let later = due.into_iter().map(|t| Timer { at, ..t }).collect();
                (Vec::new(), later, Vec::new())
            }
            Err(e) => {
                self.problem(format!(
                    "firing {} timer entries together failed ({e}); trying one by one",
                    due.len()
                ));
                let (mut ready, mut later) = (Vec::new(), Vec::new());
                for t in due {
                    let one = [t.clone()];
                    match self
                        .store
                        .write_async(move |c| act_on_all(c, &one, as_of, rules))
                        .await
                    {
                        Ok((r, l)) => {
                            ready.extend(r);
                            later.extend(l);
                        }
                        Err(Error::Closed) => return Err(Error::Closed),
                        Err(e) => {
                            self.problem(format!(
                                "{:?} {} failed, retrying in 1 s: {e}",
                                t.kind, t.id
                            ));
                            later.push(Timer {
                                at: self.clock.now().max(as_of) + 1_000,
                                ..t
                            });
                        }
                    }
                }
                (ready, later, Vec::new())
            }
        };
        self.add_timers(later);
        if as_of > self.clock.now() {
            self.release_at(as_of, ready, sends, instants);
        } else {
            self.metrics.released(&instants, self.clock.now());
            self.release(ready, sends);
        }
        Ok(())
    }

    /// Sends claimed attempts and routes the other ready executions. Must run inside the
    /// runtime's context.
    fn release(self: &Arc<Self>, ready: Vec<Ready>, sends: Vec<webhook::Send>) {
        for job in sends {
            self.spawn_send(job);
        }
        self.dispatch(ready);
    }

    /// Releases work committed ahead of its instant when the instant comes. Its attempts count
    /// as deliveries in flight, so closing waits for them (at most `fire_ahead_ms` on the system
    /// clock). On a manual clock that has not reached the instant, closing leaves them to be
    /// recovered when the database is next opened, like any attempt a process left running.
    fn release_at(
        self: &Arc<Self>,
        at: Millis,
        ready: Vec<Ready>,
        sends: Vec<webhook::Send>,
        instants: Vec<Millis>,
    ) {
        let held = sends.len();
        self.deliveries.fetch_add(held, Ordering::SeqCst);
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let closing = me.closing.notified();
            tokio::pin!(closing);
            closing.as_mut().enable();
            if !me.closed.load(Ordering::SeqCst) {
                tokio::select! {
                    _ = me.clock.sleep_until(at) => {}
                    _ = &mut closing => {}
                }
            }
            if me.clock.now() < at {
                match me.clock {
                    Clock::System => me.clock.sleep_until(at).await,
                    Clock::Manual(_) => return me.delivery_done(held),
                }
            }
            me.metrics.released(&instants, me.clock.now());
            me.release(ready, sends);
            me.delivery_done(held);
        });
    }

    /// Schedules what follows a recorded attempt.
    fn finished(self: &Arc<Self>, execution_id: &str, finished: Finished) {
        let kind = match finished {
            Finished::RetryAt(at) => {
                self.metrics.retry_scheduled();
                Some((at, TimerKind::Retry))
            }
            Finished::AwaitOutcome(at) => Some((at, TimerKind::Deadline)),
            Finished::Done(chained) => {
                if let Some(c) = chained {
                    self.dispatch_anywhere(vec![(c.id, c.transport)]);
                }
                None
            }
        };
        if let Some((at, kind)) = kind {
            self.add_timers([Timer {
                at,
                kind,
                id: execution_id.to_string(),
            }]);
        }
    }

    /// [`Inner::dispatch`] from any thread (a handler's report comes from a Python thread).
    fn dispatch_anywhere(self: &Arc<Self>, ready: Vec<Ready>) {
        match runtime() {
            Ok(rt) => {
                let _guard = rt.enter();
                self.dispatch(ready);
            }
            Err(e) => self.problem(format!("cannot dispatch: {e}")),
        }
    }

    /// Routes ready executions by transport. Must run inside the runtime's context.
    fn dispatch(self: &Arc<Self>, ready: Vec<Ready>) {
        let (mut local, mut remote) = (Vec::new(), Vec::new());
        for (id, transport) in ready {
            match transport.as_str() {
                "local" => local.push(id),
                "webhook" => self.spawn_delivery(id),
                // Worker executions wait in the store for a remote worker's claim.
                _ => remote.push(id),
            }
        }
        self.enqueue(local);
        self.watch_claim_windows(remote);
    }

    /// Puts the end of each claim window on the timer (read from the store, where it was set
    /// when the execution became claimable). Must run inside the runtime's context.
    fn watch_claim_windows(self: &Arc<Self>, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || match me.store.read(|c| c.claim_deadlines(&ids)) {
            Ok(ends) => me.add_timers(ends.into_iter().map(|(at, id)| Timer {
                at,
                kind: TimerKind::Claim,
                id,
            })),
            Err(e) => {
                if !me.closed.load(Ordering::SeqCst) {
                    me.problem(format!("reading claim windows failed: {e}"));
                }
            }
        });
    }
}

/// Separates owner and worker id in the id of a [`TimerKind::Silence`] entry.
const SILENCE_SEP: char = '\u{1f}';

fn silence_id(owner: &str, worker_id: &str) -> String {
    format!("{owner}{SILENCE_SEP}{worker_id}")
}

/// What acting on a timer entry needs to know besides the entry.
#[derive(Clone, Copy)]
struct Rules {
    grace_ms: i64,
    worker_timeout_ms: i64,
    alive_since: Millis,
}

/// Acts on timer entries in the current operation: executions to dispatch, entries that follow.
fn act_on_all(
    c: &dyn Writes,
    due: &[Timer],
    now: Millis,
    rules: Rules,
) -> Result<(Vec<Ready>, Vec<Timer>)> {
    let (mut ready, mut later) = (Vec::new(), Vec::new());
    for t in due {
        let (r, next) = act_on(c, t, now, rules)?;
        ready.extend(r);
        later.extend(next);
    }
    Ok((ready, later))
}

/// One due timer entry: returns executions to dispatch and the entry that follows it.
fn act_on(
    c: &dyn Writes,
    t: &Timer,
    now: Millis,
    rules: Rules,
) -> Result<(Vec<Ready>, Option<Timer>)> {
    Ok(match t.kind {
        TimerKind::Cue => match c.fire_due(&t.id, now, rules.grace_ms)? {
            Some(fired) => {
                let next = fired.next_run.map(|at| Timer {
                    at,
                    kind: TimerKind::Cue,
                    id: t.id.clone(),
                });
                let transport = fired.transport;
                let ready = fired
                    .created
                    .into_iter()
                    .map(|id| (id, transport.clone()))
                    .collect();
                (ready, next)
            }
            None => (Vec::new(), None),
        },
        TimerKind::Retry => {
            let ready = c
                .retry_due(&t.id, now)?
                .map(|transport| (t.id.clone(), transport))
                .into_iter()
                .collect();
            (ready, None)
        }
        TimerKind::Deadline => {
            c.deadline_due(&t.id, now)?;
            (Vec::new(), None)
        }
        TimerKind::Lease => {
            match c.lease_due(&t.id, now, rules.worker_timeout_ms, rules.alive_since)? {
                LeaseCheck::Over | LeaseCheck::Released(false) => (Vec::new(), None),
                LeaseCheck::HoldsUntil(at) => (
                    Vec::new(),
                    Some(Timer {
                        at,
                        kind: TimerKind::Lease,
                        id: t.id.clone(),
                    }),
                ),
                LeaseCheck::Released(true) => (vec![(t.id.clone(), "worker".into())], None),
            }
        }
        TimerKind::Claim => {
            c.claim_window_due(&t.id, now)?;
            (Vec::new(), None)
        }
        TimerKind::Silence => {
            let Some((owner, worker)) = t.id.split_once(SILENCE_SEP) else {
                return Ok((Vec::new(), None));
            };
            let heard = c.silence_due(
                owner,
                worker,
                now,
                rules.worker_timeout_ms,
                rules.alive_since,
            )?;
            match heard {
                workers::Silence::Over => (Vec::new(), None),
                workers::Silence::HeardUntil(at) => (
                    Vec::new(),
                    Some(Timer {
                        at,
                        kind: TimerKind::Silence,
                        id: t.id.clone(),
                    }),
                ),
            }
        }
    })
}
