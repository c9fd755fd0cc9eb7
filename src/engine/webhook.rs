//! The webhook transport inside the engine. An execution is claimed (in the transaction that
//! fired it when a delivery slot is free, or when it may wait for one claimed, else by its own
//! task when its turn comes), sent through the [`Deliverer`] within a bounded number of
//! deliveries in flight, and its result goes to one recorder task that writes results in
//! batches — one writer operation for many deliveries.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::store::Writes;
use tokio::sync::mpsc;

use crate::clock::Millis;
use crate::delivery::{Attempt, Deliverer, Request};
use crate::error::{Error, Result};
use crate::store::{self, Claimed, Target};

use super::fair::{self, Lanes, Slot, Ticket};
use super::{Inner, Ready};

/// Results written in one writer operation at most.
const RECORD_BATCH: usize = 256;
/// A result that could not be written (a full disk) is tried again this much later...
const RECORD_RETRY: Duration = Duration::from_secs(1);
/// ... and kept for that at most this many at once (a few KB each); beyond, the oldest is left
/// to recovery, which finds its execution still `delivering` when the database is next opened.
const MAX_UNRECORDED: usize = 4_096;
/// A claim for delivery that could not be written is tried again after this long, doubling up to
/// [`CLAIM_RETRY_MAX`].
const CLAIM_RETRY_FIRST: Duration = Duration::from_secs(1);
const CLAIM_RETRY_MAX: Duration = Duration::from_secs(5);

/// The delivery slots a claimed attempt holds, or its leave to wait for them.
pub(super) enum Slots {
    Held(Slot),
    /// Claimed while its slots were taken: it waits for them, then goes out.
    Queued(Ticket),
    /// No callback URL: it fails without a request.
    None,
}

/// A claimed attempt, where it goes, and its delivery slots.
pub(super) type Send = (Claimed, Option<Target>, Slots);

/// What became of an execution the webhook transport tried to claim.
enum Claim {
    Sent(Box<Send>),
    /// Its tenant's, destination's or the server's slots are taken, and as many claimed
    /// deliveries wait for them already as they have: wait unclaimed, then claim.
    Wait(Target),
    /// No longer pending (sent, cancelled or deleted meanwhile).
    Gone,
}

/// Claims one pending execution for `node` (the engine's id, which a node taking over its
/// partitions checks to tell its own attempts from a dead node's) if its slots are free now or
/// it may wait for them claimed ([`Lanes::try_queue`]), in the current writer operation.
fn claim_if_free(
    c: &dyn Writes,
    node: &str,
    id: &str,
    now: Millis,
    lease: i64,
    lanes: &Lanes,
) -> Result<Claim> {
    let Some(cue_id) = c.pending_cue(id)? else {
        return Ok(Claim::Gone);
    };
    let target = c.cue_target(&cue_id)?;
    let slots = match &target {
        Some(t) => {
            let destination = fair::destination(&t.url);
            match lanes.try_take(&t.owner, &destination) {
                Some(slot) => Slots::Held(slot),
                None => match lanes.try_queue(&t.owner, &destination) {
                    Some(ticket) => Slots::Queued(ticket),
                    None => return Ok(target.map_or(Claim::Gone, Claim::Wait)),
                },
            }
        }
        None => Slots::None,
    };
    Ok(match c.claim(id, node, now, lease, false)? {
        Some(job) => Claim::Sent(Box::new((job, target, slots))),
        None => Claim::Gone,
    })
}

/// A finished attempt waiting to be recorded: (execution id, attempt, how it went, when).
pub(super) type Finished = (String, i64, Attempt, Millis);

/// Claims up to `free` of the ready webhook executions whose slots are free, in the current
/// writer operation; returns the executions left to dispatch and the claimed attempts.
pub(super) fn claim_ready(
    c: &dyn Writes,
    node: &str,
    ready: Vec<Ready>,
    now: Millis,
    lease: i64,
    mut free: usize,
    lanes: &Lanes,
) -> Result<(Vec<Ready>, Vec<Send>)> {
    let mut rest = Vec::with_capacity(ready.len());
    let mut sends = Vec::new();
    for (id, transport) in ready {
        if transport != "webhook" || free == 0 {
            rest.push((id, transport));
            continue;
        }
        match claim_if_free(c, node, &id, now, lease, lanes)? {
            Claim::Sent(job) => {
                if matches!(job.2, Slots::Held(_)) {
                    free -= 1;
                }
                sends.push(*job);
            }
            Claim::Wait(_) => rest.push((id, transport)),
            Claim::Gone => {}
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

    /// Starts delivering one pending execution: claims it at once if its slots are free, else
    /// waits for them (in its tenant's queue, then its destination's, then the server's) and
    /// claims it then, so its attempt starts when its request goes out. Must run inside the
    /// runtime's context.
    pub(super) fn spawn_delivery(self: &Arc<Self>, execution_id: String) {
        self.deliveries.fetch_add(1, Ordering::SeqCst);
        let me = Arc::clone(self);
        tokio::spawn(async move {
            // A claim that cannot be written (a full disk) is tried again, less often each time,
            // until it is or the engine closes: the execution would otherwise stay pending until
            // the next open.
            let mut pause = CLAIM_RETRY_FIRST;
            let job = loop {
                match me.claim_or_wait(&execution_id).await {
                    Ok(Some(job)) => break job,
                    Ok(None) => return me.delivery_done(1),
                    Err(e) => {
                        if me.closed.load(Ordering::SeqCst) {
                            return me.delivery_done(1);
                        }
                        me.problem(format!(
                            "claiming {execution_id} for delivery failed (trying again): {e}"
                        ));
                        let closing = me.closing.notified();
                        tokio::pin!(closing);
                        closing.as_mut().enable();
                        if me.closed.load(Ordering::SeqCst) {
                            return me.delivery_done(1);
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = &mut closing => return me.delivery_done(1),
                        }
                        pause = (pause * 2).min(CLAIM_RETRY_MAX);
                    }
                }
            };
            me.send(job).await;
        });
    }

    /// Sends an attempt claimed already (with its slots). Must run inside the runtime's context.
    pub(super) fn spawn_send(self: &Arc<Self>, job: Send) {
        self.deliveries.fetch_add(1, Ordering::SeqCst);
        let me = Arc::clone(self);
        tokio::spawn(async move { me.send(job).await });
    }

    async fn claim_or_wait(&self, execution_id: &str) -> Result<Option<Send>> {
        if self.closed.load(Ordering::SeqCst) {
            // Left pending: the next open sends it.
            return Ok(None);
        }
        let lanes = self.lanes();
        let (id, now, lease) = (
            execution_id.to_string(),
            self.clock.now(),
            self.config.lease_ms,
        );
        let first = {
            let (lanes, node) = (Arc::clone(&lanes), self.instance.clone());
            self.store
                .write_async(move |c| claim_if_free(c, &node, &id, now, lease, &lanes))
                .await?
        };
        let target = match first {
            Claim::Sent(job) => return Ok(Some(*job)),
            Claim::Gone => return Ok(None),
            Claim::Wait(target) => target,
        };
        // Closing stops the wait: the execution stays pending and the next open sends it.
        let closing = self.closing.notified();
        tokio::pin!(closing);
        closing.as_mut().enable();
        if self.closed.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let destination = fair::destination(&target.url);
        let slot = tokio::select! {
            slot = lanes.take(&target.owner, &destination) => slot,
            _ = &mut closing => None,
        };
        let Some(slot) = slot else {
            return Ok(None);
        };
        if self.closed.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let (id, now, lease) = (
            execution_id.to_string(),
            self.clock.now(),
            self.config.lease_ms,
        );
        let node = self.instance.clone();
        let claimed = self
            .store
            .write_async(move |c| {
                let Some(job) = c.claim(&id, &node, now, lease, false)? else {
                    return Ok(None);
                };
                let target = c.cue_target(&job.cue_id)?;
                Ok(Some((job, target)))
            })
            .await?;
        Ok(claimed.map(|(job, target)| (job, target, Slots::Held(slot))))
    }

    /// Sends one claimed attempt (once its slots are free) and hands its result to the
    /// recorder. An attempt still waiting for its slots when the engine closes is given back
    /// unsent: its execution is pending again, and the next open sends it.
    async fn send(self: &Arc<Self>, (job, target, slots): Send) {
        let (slot, waited) = match (slots, &target) {
            (Slots::Queued(ticket), Some(t)) => {
                let closing = self.closing.notified();
                tokio::pin!(closing);
                closing.as_mut().enable();
                let slot = if self.closed.load(Ordering::SeqCst) {
                    None
                } else {
                    let (lanes, destination) = (self.lanes(), fair::destination(&t.url));
                    tokio::select! {
                        slot = lanes.take(&t.owner, &destination) => slot,
                        _ = &mut closing => None,
                    }
                };
                drop(ticket);
                if self.closed.load(Ordering::SeqCst) {
                    drop(slot);
                    return self.give_back(job).await;
                }
                (slot, true)
            }
            (Slots::Held(slot), _) => (Some(slot), false),
            _ => (None, false),
        };
        let sent_at = self.clock.now();
        let target = target.map(|mut t| {
            t.timeout_ms = t.timeout_ms.min(self.max_delivery_timeout_ms());
            t
        });
        let attempt = match (&target, self.deliverer()) {
            (None, _) => Attempt {
                error: Some("the cue has no callback URL".into()),
                ..Default::default()
            },
            (Some(_), Err(e)) => Attempt {
                error: Some(format!("the HTTP client could not be built: {e}")),
                ..Default::default()
            },
            (Some(t), Ok(d)) => d.send(Request(&job), t, sent_at).await,
        };
        let attempt = Attempt {
            sent_at: waited.then_some(sent_at),
            ..attempt
        };
        // Its end is read before its slot frees: an attempt that waited for this slot starts after.
        let ended = self.clock.now();
        drop(slot);
        self.metrics.delivery(&attempt);
        let done = (job.execution_id, job.attempt, attempt, ended);
        if self.recorder().send(done).is_err() {
            self.delivery_done(1);
        }
    }

    /// Gives back the claim of an attempt that never went out (the engine is closing).
    async fn give_back(self: &Arc<Self>, job: Claimed) {
        let (id, attempt, node, now) = (
            job.execution_id.clone(),
            job.attempt,
            self.instance.clone(),
            self.clock.now(),
        );
        let done = self
            .store
            .write_async(move |c| c.unclaim(&id, attempt, &node, now))
            .await;
        if let Err(e) = done {
            self.problem(format!(
                "giving back the unsent attempt {} of {} failed ({e}); it is recovered as \
                 interrupted when the database is next opened",
                job.attempt, job.execution_id
            ));
        }
        self.delivery_done(1);
    }

    /// Records finished attempts, many per writer operation. Should a batch fail, each result
    /// is tried on its own; one that still fails (a full disk) is kept and tried again every
    /// [`RECORD_RETRY`] until it is written, so that its execution does not stay `delivering`
    /// once space returns. Results kept when the engine closes are recovered as interrupted
    /// attempts (and retried) when the database is next opened.
    async fn record_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Finished>) {
        let mut batch = Vec::with_capacity(RECORD_BATCH);
        let mut unrecorded: VecDeque<Finished> = VecDeque::new();
        loop {
            let received = if unrecorded.is_empty() {
                rx.recv_many(&mut batch, RECORD_BATCH).await
            } else {
                tokio::select! {
                    n = rx.recv_many(&mut batch, RECORD_BATCH) => n,
                    () = tokio::time::sleep(RECORD_RETRY) => {
                        let again = std::mem::take(&mut unrecorded);
                        unrecorded = self.record_all(again.into(), true).await;
                        continue;
                    }
                }
            };
            if received == 0 {
                return;
            }
            let items = std::mem::take(&mut batch);
            let n = items.len();
            unrecorded.extend(self.record_all(items, false).await);
            if unrecorded.len() > MAX_UNRECORDED {
                let dropped = unrecorded.len() - MAX_UNRECORDED;
                unrecorded.drain(..dropped);
                self.problem(format!(
                    "{dropped} delivery results could not be written and are no longer kept; \
                     their executions are recovered when the database is next opened"
                ));
            }
            self.delivery_done(n);
        }
    }

    /// Writes `items` in one writer operation, or else one by one; returns those that could not
    /// be written for a reason that may pass (a full disk), to be tried again. `again`: these
    /// failed before (the one-by-one pass stops at the first that still fails).
    async fn record_all(self: &Arc<Self>, items: Vec<Finished>, again: bool) -> VecDeque<Finished> {
        let mut left = VecDeque::new();
        if self.closed.load(Ordering::SeqCst) && again {
            return left;
        }
        let n = items.len();
        let all = items.clone();
        let whole = self.store.write_async(move |c| record(c, &all)).await;
        let results = match whole {
            Ok(r) => r,
            Err(Error::Closed) => return left,
            Err(e) => {
                if !again {
                    self.problem(format!(
                        "recording {n} deliveries together failed ({e}); trying one by one"
                    ));
                }
                let mut out = Vec::with_capacity(n);
                let mut items = items.into_iter();
                for item in items.by_ref() {
                    let id = item.0.clone();
                    let one = item.clone();
                    match self
                        .store
                        .write_async(move |c| record(c, std::slice::from_ref(&one)))
                        .await
                    {
                        Ok(r) => out.extend(r),
                        Err(Error::Closed) => return left,
                        Err(e) => {
                            if !self.closed.load(Ordering::SeqCst) {
                                self.problem(format!(
                                    "recording the delivery of {id} failed: {e}; trying again \
                                     every {} s",
                                    RECORD_RETRY.as_secs()
                                ));
                            }
                            if again {
                                // Still failing: the rest waits too, this one behind it (so
                                // that a result that can never be written holds up no other).
                                left.extend(items.by_ref());
                                left.push_back(item);
                                break;
                            }
                            left.push_back(item);
                        }
                    }
                }
                left.extend(items);
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
        left
    }
}

/// Records finished attempts in the current writer operation; each result on its own (a refused
/// one does not stop the others: `delivered` checks before it writes).
fn record(c: &dyn Writes, items: &[Finished]) -> Result<Vec<(String, Result<store::Finished>)>> {
    Ok(items
        .iter()
        .map(|(id, attempt, a, at)| (id.clone(), c.delivered(id, *attempt, a, *at)))
        .collect())
}
