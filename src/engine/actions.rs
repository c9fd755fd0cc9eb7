//! What the HTTP API asks the engine to change. Every write an API handler needs goes through
//! one of these methods: the unit of work is committed, and only then does what follows from it
//! happen here, in one place (a tick goes on the timer, an execution is dispatched), so that no
//! handler commits and then forgets to tell the scheduler.

use serde_json::Value;

use super::{Engine, Timer, TimerKind};
use crate::clock::Millis;
use crate::error::{Error, Result};
use crate::model::status;
use crate::store::users::User;
use crate::store::{CueSpec, Evidence, FireKey, Fired};

/// A credential a user can replace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    ApiKey,
    WebhookSecret,
    AlertWebhookSecret,
}

/// A manual fire as the API asks for it.
#[derive(Clone, Debug, Default)]
pub struct FireRequest {
    pub payload: Option<Value>,
    /// Run at this instant instead of now (when it is in the future).
    pub send_at: Option<Millis>,
    /// The idempotency key, with a digest of the request it came with.
    pub key: Option<(String, String)>,
}

/// A cue's status as a change asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetStatus {
    Paused,
    Active,
}

impl Engine {
    /// Creates one cue of `owner`'s and puts its first tick on the timer. Returns its id.
    pub async fn create_cue(&self, owner: &str, spec: CueSpec) -> Result<String> {
        self.check_open()?;
        let (owner, now) = (owner.to_string(), self.inner.clock.now());
        let teller = self.inner.teller();
        let (id, next) = self
            .inner
            .store
            .write_async(move |c| {
                let rows = c.insert_cues(&owner, std::slice::from_ref(&spec), now)?;
                let (id, next) = rows.into_iter().next().ok_or(Error::Closed)?;
                teller.tell(c, [id.as_str()])?;
                Ok((id, next))
            })
            .await?;
        self.schedule_cue(&id, next);
        Ok(id)
    }

    /// Changes `owner`'s cue `id` to `spec` and, when asked, pauses or resumes it; the timer
    /// follows the change.
    pub async fn update_cue(
        &self,
        owner: &str,
        id: &str,
        spec: CueSpec,
        set_status: Option<SetStatus>,
    ) -> Result<()> {
        self.check_open()?;
        let (owner, cue_id, now) = (owner.to_string(), id.to_string(), self.inner.clock.now());
        let teller = self.inner.teller();
        let next = self
            .inner
            .store
            .write_async(move |c| {
                let up = c.update_cue(&owner, &cue_id, &spec, now)?;
                teller.tell(c, [cue_id.as_str()])?;
                let next = up.changed.then_some(up.next_run).flatten();
                Ok(match set_status {
                    Some(SetStatus::Paused) => {
                        c.pause(&cue_id, now)?;
                        None
                    }
                    Some(SetStatus::Active) => c.resume(&cue_id, now)?,
                    None => next,
                })
            })
            .await?;
        self.schedule_cue(id, next);
        Ok(())
    }

    /// Fires `owner`'s cue `id` outside its schedule. Returns the fire and the new execution as
    /// it was created (none when the idempotency key was used with another request); the
    /// execution is then dispatched, now or at its later instant.
    pub async fn fire_cue(
        &self,
        owner: &str,
        id: &str,
        req: FireRequest,
    ) -> Result<(Fired, Option<Value>)> {
        self.check_open()?;
        let (cue_id, now) = (id.to_string(), self.inner.clock.now());
        let fired = self
            .inner
            .store
            .write_async(move |c| {
                let key = req
                    .key
                    .as_ref()
                    .map(|(key, request)| FireKey { key, request });
                c.fire_at(&cue_id, req.payload.as_ref(), req.send_at, key, now)
            })
            .await?;
        if fired.conflicting {
            return Ok((fired, None));
        }
        // Read before it is dispatched: the answer shows the execution as it was created.
        let exec = self.inner.store.read(|c| c.execution(owner, &fired.id));
        self.fired(&fired);
        Ok((fired, Some(exec?)))
    }

    /// Runs `owner`'s finished execution `id` again as a new one, and dispatches it. Returns the
    /// new execution's id and the execution as it was created.
    pub async fn replay_finished(&self, owner: &str, id: &str) -> Result<(String, Value)> {
        self.check_open()?;
        let (owner, eid, now) = (owner.to_string(), id.to_string(), self.inner.clock.now());
        let (new_id, transport, exec) = self
            .inner
            .store
            .write_async(move |c| {
                let original = c.execution(&owner, &eid)?;
                let state = original.get("status").and_then(Value::as_str).unwrap_or("");
                if matches!(
                    state,
                    status::PENDING | status::DELIVERING | status::RETRYING
                ) {
                    return Err(Error::Conflict(format!(
                        "execution {eid} is still {state}; replay it once it has finished"
                    )));
                }
                let new_id = c.replay(&eid, now)?;
                let exec = c.execution(&owner, &new_id)?;
                let transport = exec
                    .get("transport")
                    .and_then(Value::as_str)
                    .unwrap_or("webhook")
                    .to_string();
                Ok((new_id, transport, exec))
            })
            .await?;
        self.dispatch(vec![(new_id.clone(), transport)]);
        Ok((new_id, exec))
    }

    /// Extends a remote worker's lease on `owner`'s execution `id`. Returns the lease's new end.
    pub async fn extend_lease(
        &self,
        owner: &str,
        id: &str,
        worker_id: Option<String>,
    ) -> Result<Millis> {
        self.check_open()?;
        let (lease, _) = self.worker_timing();
        let (owner, eid, now) = (owner.to_string(), id.to_string(), self.inner.clock.now());
        let until = self
            .inner
            .store
            .write_async(move |c| c.extend_lease(&owner, &eid, worker_id.as_deref(), now, lease))
            .await?;
        // The lease's timer entry finds the new end when it falls due and waits for it.
        Ok(until)
    }

    /// Adds evidence to the outcome of `owner`'s execution `id`. Returns the outcome state.
    pub async fn append_evidence(
        &self,
        owner: &str,
        id: &str,
        evidence: Evidence,
    ) -> Result<String> {
        self.check_open()?;
        let (owner, eid, now) = (owner.to_string(), id.to_string(), self.inner.clock.now());
        self.inner
            .store
            .write_async(move |c| c.append_evidence(&owner, &eid, &evidence, now))
            .await
    }

    /// Marks the outcome of `owner`'s execution `id` as waiting for verification.
    pub async fn verification_pending(&self, owner: &str, id: &str) -> Result<()> {
        self.check_open()?;
        let (owner, eid, now) = (owner.to_string(), id.to_string(), self.inner.clock.now());
        self.inner
            .store
            .write_async(move |c| c.verification_pending(&owner, &eid, now))
            .await
    }

    /// Acknowledges `owner`'s alert `id`; returns it.
    pub async fn acknowledge_alert(&self, owner: &str, id: &str) -> Result<Value> {
        self.check_open()?;
        let (owner, id, now) = (owner.to_string(), id.to_string(), self.inner.clock.now());
        self.inner
            .store
            .write_async(move |c| c.acknowledge_alert(&owner, &id, now))
            .await
    }

    /// Sets (or, with `None`, clears) `owner`'s alert webhook. Returns when it was set.
    pub async fn set_alert_webhook(&self, owner: &str, url: Option<String>) -> Result<Millis> {
        self.check_open()?;
        let (owner, now) = (owner.to_string(), self.inner.clock.now());
        self.inner
            .store
            .write_async(move |c| c.set_alert_webhook(&owner, url.as_deref(), now))
            .await?;
        Ok(now)
    }

    /// `owner`'s alert webhook and its signing secret (made on first use).
    pub async fn alert_webhook(&self, owner: &str) -> Result<(Option<String>, String)> {
        self.check_open()?;
        let (owner, now) = (owner.to_string(), self.inner.clock.now());
        self.inner
            .store
            .write_async(move |c| c.alert_webhook(&owner, now))
            .await
    }

    /// Replaces one of a user's credentials at once. Returns the new one.
    pub async fn rotate(&self, user_id: &str, which: Credential) -> Result<String> {
        self.check_open()?;
        let (user, now) = (user_id.to_string(), self.inner.clock.now());
        self.inner
            .store
            .write_async(move |c| match which {
                Credential::ApiKey => c.regenerate_key(&user, now),
                Credential::WebhookSecret => c.regenerate_secret(&user, now),
                Credential::AlertWebhookSecret => c.regenerate_alert_secret(&user, now),
            })
            .await
    }

    /// Creates a user of the HTTP API; returns it with its API key (shown only now). An
    /// unverified user's email address is never sent alert email.
    pub async fn register(&self, email: &str, verified: bool) -> Result<(User, String)> {
        self.check_open()?;
        let (email, now) = (email.to_string(), self.inner.clock.now());
        self.inner
            .store
            .write_async(move |c| {
                let (user, key) = c.create_user(&email, now)?;
                if !verified {
                    c.mark_unverified(&user.id)?;
                }
                Ok((user, key))
            })
            .await
    }

    /// [`Engine::register`] of a verified user, blocking (for callers outside the runtime).
    pub fn create_user(&self, email: &str) -> Result<(User, String)> {
        super::runtime()?.block_on(self.register(email, true))
    }

    /// How long the same alert for the same cue or worker counts on the open alert.
    pub fn set_realert_ms(&self, ms: i64) -> Result<()> {
        self.check_open()?;
        self.inner.store.write(move |c| c.set_realert_ms(ms))
    }

    /// The health check's probe: one small write through the writer.
    pub async fn probe_store(&self) -> Result<()> {
        let now = crate::clock::system_now();
        self.inner.store.write_async(move |c| c.probe(now)).await
    }

    /// Outcome states recorded since the store opened, by state (through the writer, which
    /// alone knows what was committed).
    pub async fn outcome_counts(&self) -> Result<Vec<(String, u64)>> {
        self.inner.store.write_async(|c| c.outcome_counts()).await
    }

    /// Puts a cue's next tick on the timer.
    pub(crate) fn schedule_cue(&self, cue_id: &str, at: Option<Millis>) {
        if let Some(at) = at {
            self.schedule(Timer {
                at,
                kind: TimerKind::Cue,
                id: cue_id.to_string(),
            });
        }
    }
}
