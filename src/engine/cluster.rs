//! The engine as one node of several on a PostgreSQL database (issue 12): no leader, each node
//! times the cues of the partitions it holds (see `store::cluster`).
//!
//! - **Beats.** Every third of the node lease, [`Inner::run_beats`] renews the node's leases
//!   and evens out the shares. A partition gained is taken over at once: the attempts there of
//!   nodes no longer alive are closed as interrupted and retried, and the partition's ticks,
//!   retries, deadlines, leases and claim windows go on this node's timer. A partition lost is
//!   simply no longer fired: its ticks are dropped from the timer when they come due.
//! - **Fencing.** A node that cannot beat for a whole lease (it lost the database) stops firing
//!   ticks at once, before the others may take its partitions; what it had started it can no
//!   longer commit. A tick is fired once whichever node fires it: that is the store's
//!   SERIALIZABLE unit of work and the unique occurrence key, not the partition.
//! - **Hearing of changes.** A cue created or changed on one node is announced on commit
//!   (`NOTIFY`); the node holding it hears it on its `LISTEN` connection and puts the tick on
//!   its timer at once. A node whose listening connection broke reloads its partitions' ticks
//!   when it is back, and every [`RESYNC_BEATS`] beats anyway.
//! - **Everything else** stays with the node that started it (an attempt's retry, its outcome
//!   deadline), because every unit of work checks, when it runs, that it still applies: a stale
//!   or doubled timer entry finds nothing to do. A node that dies leaves it to whichever node
//!   takes its partitions.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_postgres::AsyncMessage;

use super::timer::{Timer, TimerKind};
use super::Inner;
use crate::store::cluster::{self, Scope};
use crate::store::postgres::PgStore;
use crate::store::{Recovered, Store, Writes};

/// Reload the held partitions' ticks every this many beats, in case a notification was missed.
pub const RESYNC_BEATS: u32 = 30;

impl Inner {
    /// What a unit of work that creates or changes cues needs to announce them (None on a
    /// database this process owns).
    pub(super) fn teller(&self) -> Teller {
        Teller(self.store.is_shared().then(|| self.instance.clone()))
    }

    /// Whether this node times the ticks of `cue_id` now.
    pub(super) fn holds(&self, cue_id: &str) -> bool {
        cluster::holds(self.parts.load(Ordering::SeqCst), cue_id)
    }

    /// Starts the beat loop of a node on a shared database on a thread of its own, with a
    /// runtime and a pool of connections of its own: a node whose engine is busy (a burst, a
    /// full pool, every runtime thread taken) must still renew its leases, or the others take
    /// its partitions — and the deliveries it has in flight — while it is alive. Returns when
    /// the engine closes (after leaving: its partitions are then free for the others at once).
    pub(super) fn spawn_beats(self: &Arc<Self>) -> std::io::Result<std::thread::JoinHandle<()>> {
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("cueapi-beat".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("cueapi-beat-rt")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return me.problem(format!("cannot start the heartbeat: {e}")),
                };
                rt.block_on(me.run_beats(rt.handle()));
            })
    }

    /// Opens the beats' own store, trying again until it opens or the engine closes.
    async fn beat_store(&self, rt: &tokio::runtime::Handle) -> Option<PgStore> {
        loop {
            let Store::Postgres(main) = &self.store else {
                return None;
            };
            let h = rt.clone();
            let opened = tokio::task::block_in_place(|| main.sibling(&h));
            match opened {
                Ok(s) => return Some(s),
                Err(e) => {
                    if self.closed.load(Ordering::SeqCst) {
                        return None;
                    }
                    self.problem(format!("this node's heartbeat cannot connect: {e}"));
                }
            }
            self.idle(Duration::from_millis(
                (self.config.node_lease_ms / 3) as u64,
            ))
            .await;
            if self.closed.load(Ordering::SeqCst) {
                return None;
            }
        }
    }

    async fn run_beats(self: Arc<Self>, rt: &tokio::runtime::Handle) {
        let Some(beats) = self.beat_store(rt).await else {
            return;
        };
        let beats = Arc::new(beats);
        let lease = self.config.node_lease_ms;
        let every = Duration::from_millis((lease / 3) as u64);
        let lease_d = Duration::from_millis(lease as u64);
        let mut last_ok: Option<Instant> = None;
        let mut beats_done: u32 = 0;
        loop {
            if self.closed.load(Ordering::SeqCst) {
                break;
            }
            let started = Instant::now();
            let info = json!({
                "host": hostname(),
                "pid": std::process::id(),
                "partitions": self.parts.load(Ordering::SeqCst).count_ones(),
                "fired": self.metrics.fired(),
            })
            .to_string();
            let node = self.instance.clone();
            let store = Arc::clone(&beats);
            let beat = store.write_async(move |c| c.beat(&node, &info, lease));
            match tokio::time::timeout(lease_d / 2, beat).await {
                Ok(Ok(m)) => {
                    last_ok = Some(started);
                    self.beat_at
                        .store(self.since_open(started), Ordering::SeqCst);
                    beats_done = beats_done.wrapping_add(1);
                    let old = self.parts.swap(m.held, Ordering::SeqCst);
                    let gained = m.held & !old;
                    let live: Vec<String> = m.live.iter().map(|n| n.id.clone()).collect();
                    *self.view.lock() = Some(m);
                    let resync = beats_done.is_multiple_of(RESYNC_BEATS)
                        || self.resync.swap(false, Ordering::SeqCst);
                    let scope = if resync {
                        self.parts.load(Ordering::SeqCst)
                    } else {
                        gained
                    };
                    if scope != 0 {
                        // On the engine's runtime, where what it dispatches must run.
                        let me = Arc::clone(&self);
                        match super::runtime() {
                            Ok(main) => {
                                main.spawn(async move {
                                    me.take_over(Scope { parts: scope, live }).await
                                });
                            }
                            Err(e) => self.problem(format!("cannot take over partitions: {e}")),
                        }
                    }
                }
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {} ms", lease / 2),
                    };
                    if !self.closed.load(Ordering::SeqCst) {
                        self.problem(format!("this node's heartbeat failed: {why}"));
                    }
                    // Past its lease, another node may hold what this one held: stop firing.
                    if last_ok.is_none_or(|at| at.elapsed() >= lease_d) {
                        let had = self.parts.swap(0, Ordering::SeqCst);
                        if had != 0 {
                            self.problem(format!(
                                "this node gave up its {} partition(s): it could not renew its \
                                 lease on the database within {lease} ms",
                                had.count_ones()
                            ));
                        }
                    }
                }
            }
            self.idle(every.saturating_sub(started.elapsed())).await;
        }
        let node = self.instance.clone();
        self.parts.store(0, Ordering::SeqCst);
        let leaving = beats.write_async(move |c| c.leave(&node));
        let _ = tokio::time::timeout(lease_d, leaving).await;
        beats.close();
    }

    /// Whether this node renewed its leases recently enough to fire the ticks of its partitions:
    /// its last successful beat started less than five sixths of a lease ago. A node whose beats
    /// stall (a frozen process, a lost database) stops firing on its own before its leases run
    /// out and another node may take its partitions.
    pub(super) fn beat_is_fresh(&self) -> bool {
        let lease = self.config.node_lease_ms.max(0) as u64;
        let last = self.beat_at.load(Ordering::SeqCst);
        last != 0 && self.since_open(Instant::now()).saturating_sub(last) < lease - lease / 6
    }

    /// Milliseconds from the engine's opening to `at` (at least 1, so that 0 means "never").
    fn since_open(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.opened_instant)
            .as_millis() as u64)
            .max(1)
    }

    /// Takes over the work of the partitions in `scope`: closes the attempts there of nodes not
    /// alive, and puts the partitions' work on this node's timer.
    async fn take_over(self: &Arc<Self>, scope: Scope) {
        let now = self.clock.now();
        let parts = scope.parts;
        let found = self
            .store
            .write_async(move |c| Ok((c.recover(now, &scope)?, c.due_index()?)))
            .await;
        let (recovered, due) = match found {
            Ok(found) => found,
            Err(e) => {
                if !self.closed.load(Ordering::SeqCst) {
                    self.problem(format!("taking over partitions failed, retrying: {e}"));
                    self.resync.store(true, Ordering::SeqCst);
                }
                return;
            }
        };
        if recovered.interrupted > 0 {
            tracing::warn!(
                "took over {} attempt(s) left running by a node that stopped",
                recovered.interrupted
            );
        }
        let ticks = due
            .into_iter()
            .filter(|(_, id)| cluster::holds(parts, id))
            .map(|(at, id)| Timer {
                at,
                kind: TimerKind::Cue,
                id,
            });
        self.add_timers(ticks);
        self.resume_recovered(recovered);
    }

    /// Puts recovered work back on the timer and dispatches what is pending. Must run inside
    /// the runtime's context.
    pub(super) fn resume_recovered(self: &Arc<Self>, r: Recovered) {
        let kinds = [
            (r.retries, TimerKind::Retry),
            (r.deadlines, TimerKind::Deadline),
            (r.leases, TimerKind::Lease),
            (r.claim_windows, TimerKind::Claim),
        ];
        for (entries, kind) in kinds {
            self.add_timers(entries.into_iter().map(|(at, id)| Timer { at, kind, id }));
        }
        self.dispatch(r.pending);
    }

    /// Listens for cues created or changed on other nodes, and puts the ticks of those this
    /// node holds on its timer. Reconnects after a lost connection (then reloads the held
    /// partitions, since notifications were missed meanwhile); returns when the engine closes.
    pub(super) async fn run_listener(self: Arc<Self>) {
        let mut first = true;
        while !self.closed.load(Ordering::SeqCst) {
            let Some(config) = self.store.listen_config() else {
                return;
            };
            match config.connect(tokio_postgres::NoTls).await {
                Ok((client, mut conn)) => {
                    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
                    let driver = tokio::spawn(async move {
                        while let Some(m) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                            match m {
                                Ok(AsyncMessage::Notification(n)) => {
                                    if tx.send(n.payload().to_string()).is_err() {
                                        return;
                                    }
                                }
                                Ok(_) => {}
                                Err(_) => return,
                            }
                        }
                    });
                    let listening = client
                        .batch_execute(&format!("LISTEN {}", cluster::CUES_CHANNEL))
                        .await;
                    if listening.is_ok() {
                        if !first {
                            self.resync.store(true, Ordering::SeqCst);
                        }
                        first = false;
                        loop {
                            let closing = self.closing.notified();
                            tokio::pin!(closing);
                            closing.as_mut().enable();
                            if self.closed.load(Ordering::SeqCst) {
                                break;
                            }
                            let payload = tokio::select! {
                                p = rx.recv() => p,
                                _ = &mut closing => None,
                            };
                            let Some(payload) = payload else { break };
                            let mut ids = Vec::new();
                            self.announced(&payload, &mut ids);
                            while let Ok(more) = rx.try_recv() {
                                self.announced(&more, &mut ids);
                            }
                            if !ids.is_empty() {
                                self.schedule_announced(ids).await;
                            }
                        }
                    }
                    driver.abort();
                    drop(client);
                }
                Err(e) => {
                    if !self.closed.load(Ordering::SeqCst) {
                        self.problem(format!(
                            "listening for changes from other nodes failed: {e}"
                        ));
                    }
                }
            }
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            self.idle(Duration::from_millis(500)).await;
        }
    }

    /// Waits `d`, or less when the engine closes meanwhile (also when it closed just before).
    async fn idle(&self, d: Duration) {
        let closing = self.closing.notified();
        tokio::pin!(closing);
        closing.as_mut().enable();
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = closing => {}
        }
    }

    /// The cues of an announcement (`node:id,id,…`) that this node holds, unless it is its own.
    fn announced(&self, payload: &str, into: &mut Vec<String>) {
        let Some((node, ids)) = payload.split_once(':') else {
            return;
        };
        if node == self.instance {
            return;
        }
        into.extend(
            ids.split(',')
                .filter(|id| self.holds(id))
                .map(str::to_string),
        );
    }

    /// Reads the next tick of cues announced by another node and puts them on the timer.
    async fn schedule_announced(self: &Arc<Self>, ids: Vec<String>) {
        let me = Arc::clone(self);
        let read = tokio::task::spawn_blocking(move || me.store.read(|c| c.next_runs(&ids))).await;
        match read {
            Ok(Ok(due)) => self.add_timers(due.into_iter().map(|(at, id)| Timer {
                at,
                kind: TimerKind::Cue,
                id,
            })),
            Ok(Err(e)) => {
                self.problem(format!("reading announced cues failed: {e}"));
                self.resync.store(true, Ordering::SeqCst);
            }
            Err(_) => {}
        }
    }

    /// The cluster as this node sees it.
    pub(super) fn cluster_view(&self) -> ClusterView {
        let m = self.view.lock().clone();
        ClusterView {
            shared: self.store.is_shared(),
            node: self.instance.clone(),
            partitions_held: self.parts.load(Ordering::SeqCst).count_ones(),
            lease_ms: self.config.node_lease_ms,
            last_beat: m.as_ref().map(|m| m.now),
            nodes: m.map(|m| m.live).unwrap_or_default(),
        }
    }
}

/// The cluster as one node sees it, for `/health` and `/metrics`.
#[derive(Clone, Debug)]
pub struct ClusterView {
    /// Whether the database is shared with other nodes (PostgreSQL).
    pub shared: bool,
    /// This node's id (also the `claimed_by` of the attempts it runs).
    pub node: String,
    /// The partitions whose ticks this node fires, of [`cluster::PARTITIONS`].
    pub partitions_held: u32,
    pub lease_ms: i64,
    /// The database's clock at this node's last successful beat.
    pub last_beat: Option<crate::clock::Millis>,
    /// The live nodes at that beat, with what each said of itself.
    pub nodes: Vec<cluster::Node>,
}

/// Announces cues created or changed, from inside the unit of work that changed them, so the
/// announcement goes out exactly when the change commits. Every change is announced, even of a
/// cue this node holds: the partition may move before the commit, and the node that takes it
/// must hear. Each announcement names its node, which does not act on its own.
#[derive(Clone)]
pub(super) struct Teller(Option<String>);

impl Teller {
    pub(super) fn tell<'a>(
        &self,
        c: &dyn Writes,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> crate::error::Result<()> {
        let Some(node) = &self.0 else {
            return Ok(());
        };
        let ids: Vec<String> = ids.into_iter().map(str::to_string).collect();
        if ids.is_empty() {
            return Ok(());
        }
        c.announce(node, &ids)
    }
}

/// This machine's name, for the cluster view.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_default()
}
