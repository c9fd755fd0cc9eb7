//! The webhook transport inside the engine: each ready execution becomes a task that claims its
//! attempt, sends it through the [`Deliverer`], and records how it went — all within a bounded
//! number of deliveries in flight.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::delivery::{Attempt, Deliverer, Request};
use crate::error::Result;
use crate::store::{self, Claimed, Target};

use super::Inner;

/// The worker name attempts of the webhook transport are claimed under.
const SENDER: &str = "webhook";

impl Inner {
    fn deliverer(&self) -> std::result::Result<&Deliverer, String> {
        self.deliverer
            .get_or_init(|| Deliverer::new(Arc::clone(&self.policy)))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Starts delivering one execution. Must run inside the runtime's context.
    pub(super) fn spawn_delivery(self: &Arc<Self>, execution_id: String) {
        self.deliveries.fetch_add(1, Ordering::SeqCst);
        let me = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = me.deliver(&execution_id).await {
                if !me.closed.load(Ordering::SeqCst) {
                    me.problem(format!("delivering {execution_id} failed: {e}"));
                }
            }
            let _g = me.deliveries_lock.lock();
            me.deliveries.fetch_sub(1, Ordering::SeqCst);
            me.deliveries_done.notify_all();
        });
    }

    async fn deliver(self: &Arc<Self>, execution_id: &str) -> Result<()> {
        let Ok(_slot) = Arc::clone(&self.delivery_slots).acquire_owned().await else {
            return Ok(());
        };
        if self.closed.load(Ordering::SeqCst) {
            // Left pending: the next open sends it.
            return Ok(());
        }
        let (id, now, lease) = (
            execution_id.to_string(),
            self.clock.now(),
            self.config.lease_ms,
        );
        let claimed: Option<(Claimed, Option<Target>)> = self
            .store
            .write_async(move |c| {
                let Some(job) = store::claim(c, &id, SENDER, now, lease, false)? else {
                    return Ok(None);
                };
                let target = store::cue_target(c, &job.cue_id)?;
                Ok(Some((job, target)))
            })
            .await?;
        let Some((job, target)) = claimed else {
            return Ok(());
        };
        let attempt = match (&target, self.deliverer()) {
            (None, _) => Attempt {
                error: Some("the cue has no callback URL".into()),
                ..Default::default()
            },
            (Some(_), Err(e)) => Attempt {
                error: Some(format!("the HTTP client could not be built: {e}")),
                ..Default::default()
            },
            (Some(t), Ok(d)) => {
                let req = Request {
                    execution_id: job.execution_id.clone(),
                    cue_id: job.cue_id.clone(),
                    cue_name: job.cue_name.clone(),
                    scheduled_for: job.scheduled_for,
                    attempt: job.attempt,
                    payload: job.payload.clone(),
                    idempotency_key: job.idempotency_key.clone(),
                };
                d.send(&req, t, self.clock.now()).await
            }
        };
        let (id, n, now) = (job.execution_id.clone(), job.attempt, self.clock.now());
        let finished = self
            .store
            .write_async(move |c| store::delivered(c, &id, n, &attempt, now))
            .await?;
        self.finished(&job.execution_id, finished);
        Ok(())
    }
}
