//! The webhook transport inside the engine. An execution is claimed (in the transaction that
//! fired it when a delivery slot is free, else by its own task), sent through the [`Deliverer`]
//! within a bounded number of deliveries in flight, and its result goes to one recorder task that
//! writes results in batches — one writer operation for many deliveries.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::mpsc;

use crate::clock::Millis;
use crate::delivery::{Attempt, Deliverer, Request};
use crate::error::{Error, Result};
use crate::store::{self, Claimed, Target};

use super::{Inner, Ready};

/// The worker name attempts of the webhook transport are claimed under.
const SENDER: &str = "webhook";
/// Results written in one writer operation at most.
const RECORD_BATCH: usize = 256;

/// A claimed attempt and where it goes.
pub(super) type Send = (Claimed, Option<Target>);

/// A finished attempt waiting to be recorded: (execution id, attempt, how it went, when).
pub(super) type Finished = (String, i64, Attempt, Millis);

/// Claims up to `free` of the ready webhook executions in the current writer operation; returns
/// the executions left to dispatch and the claimed attempts.
pub(super) fn claim_ready(
    c: &Connection,
    ready: Vec<Ready>,
    now: Millis,
    lease: i64,
    mut free: usize,
) -> Result<(Vec<Ready>, Vec<Send>)> {
    let mut rest = Vec::with_capacity(ready.len());
    let mut sends = Vec::new();
    for (id, transport) in ready {
        if transport != "webhook" || free == 0 {
            rest.push((id, transport));
            continue;
        }
        if let Some(job) = store::claim(c, &id, SENDER, now, lease, false)? {
            let target = store::cue_target(c, &job.cue_id)?;
            sends.push((job, target));
            free -= 1;
        }
    }
    Ok((rest, sends))
}

impl Inner {
    pub(super) fn deliverer(&self) -> std::result::Result<&Deliverer, String> {
        self.deliverer
            .get_or_init(|| Deliverer::new(Arc::clone(&self.policy)))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The recorder's inbox; the recorder task starts with the first result. Must run inside
    /// the runtime's context.
    fn recorder(self: &Arc<Self>) -> &mpsc::UnboundedSender<Finished> {
        self.recorder.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let me = Arc::clone(self);
            tokio::spawn(async move { me.record_loop(rx).await });
            tx
        })
    }

    pub(super) fn delivery_done(&self, n: usize) {
        let _g = self.deliveries_lock.lock();
        self.deliveries.fetch_sub(n, Ordering::SeqCst);
        self.deliveries_done.notify_all();
    }

    /// Starts delivering one pending execution: claims it, then sends it. Must run inside the
    /// runtime's context.
    pub(super) fn spawn_delivery(self: &Arc<Self>, execution_id: String) {
        self.deliveries.fetch_add(1, Ordering::SeqCst);
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let Ok(_slot) = Arc::clone(&me.delivery_slots).acquire_owned().await else {
                return me.delivery_done(1);
            };
            match me.claim_one(&execution_id).await {
                Ok(Some(job)) => me.send(job).await,
                Ok(None) => me.delivery_done(1),
                Err(e) => {
                    if !me.closed.load(Ordering::SeqCst) {
                        me.problem(format!("claiming {execution_id} for delivery failed: {e}"));
                    }
                    me.delivery_done(1);
                }
            }
        });
    }

    /// Sends an attempt claimed already. Must run inside the runtime's context.
    pub(super) fn spawn_send(self: &Arc<Self>, job: Send) {
        self.deliveries.fetch_add(1, Ordering::SeqCst);
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let Ok(_slot) = Arc::clone(&me.delivery_slots).acquire_owned().await else {
                return me.delivery_done(1);
            };
            me.send(job).await;
        });
    }

    async fn claim_one(&self, execution_id: &str) -> Result<Option<Send>> {
        if self.closed.load(Ordering::SeqCst) {
            // Left pending: the next open sends it.
            return Ok(None);
        }
        let (id, now, lease) = (
            execution_id.to_string(),
            self.clock.now(),
            self.config.lease_ms,
        );
        self.store
            .write_async(move |c| {
                let Some(job) = store::claim(c, &id, SENDER, now, lease, false)? else {
                    return Ok(None);
                };
                let target = store::cue_target(c, &job.cue_id)?;
                Ok(Some((job, target)))
            })
            .await
    }

    /// Sends one claimed attempt and hands its result to the recorder.
    async fn send(self: &Arc<Self>, (job, target): Send) {
        let attempt = match (&target, self.deliverer()) {
            (None, _) => Attempt {
                error: Some("the cue has no callback URL".into()),
                ..Default::default()
            },
            (Some(_), Err(e)) => Attempt {
                error: Some(format!("the HTTP client could not be built: {e}")),
                ..Default::default()
            },
            (Some(t), Ok(d)) => d.send(Request(&job), t, self.clock.now()).await,
        };
        self.metrics.delivery(&attempt);
        let done = (job.execution_id, job.attempt, attempt, self.clock.now());
        if self.recorder().send(done).is_err() {
            self.delivery_done(1);
        }
    }

    /// Records finished attempts, many per writer operation. Should a batch fail, each result
    /// is tried on its own; one that still fails is reported (its execution stays `delivering`
    /// and is recovered as interrupted, then retried, when the database is next opened).
    async fn record_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Finished>) {
        let mut batch = Vec::with_capacity(RECORD_BATCH);
        while rx.recv_many(&mut batch, RECORD_BATCH).await > 0 {
            let items = std::mem::take(&mut batch);
            let n = items.len();
            let all = items.clone();
            let whole = self.store.write_async(move |c| record(c, &all)).await;
            let results = match whole {
                Ok(r) => r,
                Err(e) => {
                    if !matches!(e, Error::Closed) {
                        self.problem(format!(
                            "recording {n} deliveries together failed ({e}); trying one by one"
                        ));
                    }
                    let mut out = Vec::with_capacity(n);
                    for item in items {
                        let id = item.0.clone();
                        let one = self
                            .store
                            .write_async(move |c| record(c, std::slice::from_ref(&item)))
                            .await;
                        match one {
                            Ok(r) => out.extend(r),
                            Err(e) => out.push((id, Err(e))),
                        }
                    }
                    out
                }
            };
            for (id, r) in results {
                match r {
                    Ok(f) => self.finished(&id, f),
                    // Already recorded another way (a restart recovered it): nothing to do.
                    Err(Error::Conflict(_) | Error::ExecutionNotFound(_)) => {}
                    Err(e) => {
                        if !self.closed.load(Ordering::SeqCst) {
                            self.problem(format!("recording the delivery of {id} failed: {e}"));
                        }
                    }
                }
            }
            self.delivery_done(n);
        }
    }
}

/// Records finished attempts in the current writer operation; each result on its own (a refused
/// one does not stop the others: `delivered` checks before it writes).
fn record(c: &Connection, items: &[Finished]) -> Result<Vec<(String, Result<store::Finished>)>> {
    Ok(items
        .iter()
        .map(|(id, attempt, a, at)| (id.clone(), store::delivered(c, id, *attempt, a, *at)))
        .collect())
}
