//! The store's traits over a connection of either backend, inside its transaction: each unit of
//! work is written once, in the modules beside this one.

use serde_json::Value;

use super::sql::{params, Db, OptionalExt};
use super::{alerts, cluster, cues, executions, ops, users, workers};
use crate::clock::Millis;
use crate::delivery::Attempt;
use crate::error::{Error, Result};
use crate::store::alerts::{AlertFilter, Due, Sent};
use crate::store::users::User;
use crate::store::workers::{ClaimFilter, LeaseCheck, Silence, WorkerClaim, WorkerOutcome};
use crate::store::{
    Chained, Claimed, CueSpec, Evidence, ExecutionFilter, Finished, FireKey, FireResult, Fired,
    Reads, Recovered, ReportedOutcome, Target, Writes,
};

impl Reads for Db<'_> {
    fn cue_json(&self, id: &str) -> Result<Value> {
        cues::to_json(self, id)
    }

    fn cue_ids(&self, owner: &str) -> Result<Vec<String>> {
        cues::list_ids(self, owner)
    }

    fn cue_page(
        &self,
        owner: &str,
        status: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<String>, i64)> {
        cues::page(self, owner, status, limit, offset)
    }

    fn resolve_cue(&self, owner: &str, id_or_name: &str) -> Result<String> {
        cues::resolve(self, owner, id_or_name)
    }

    fn cue_spec(&self, owner: &str, id: &str) -> Result<CueSpec> {
        cues::spec_of(self, owner, id)
    }

    fn unhandled_cue_names(
        &self,
        owner: &str,
        handled: &[String],
        limit: usize,
    ) -> Result<Vec<String>> {
        cues::unhandled_names(self, owner, handled, limit)
    }

    fn due_index(&self) -> Result<Vec<(Millis, String)>> {
        cues::due_index(self)
    }

    fn next_runs(&self, ids: &[String]) -> Result<Vec<(Millis, String)>> {
        cues::next_runs(self, ids)
    }

    fn cue_target(&self, cue_id: &str) -> Result<Option<Target>> {
        cues::target(self, cue_id)
    }

    fn pending_cue(&self, execution_id: &str) -> Result<Option<String>> {
        executions::pending_cue(self, execution_id)
    }

    fn execution_transport(&self, execution_id: &str) -> Result<String> {
        self.query_row(
            "SELECT c.transport FROM executions e JOIN cues c ON c.id = e.cue_id WHERE e.id = ?1",
            params![execution_id],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| Error::ExecutionNotFound(execution_id.to_string()))
    }

    fn list_executions(&self, owner: &str, filter: &ExecutionFilter) -> Result<Vec<Value>> {
        executions::list(self, owner, filter)
    }

    fn count_executions(&self, owner: &str, filter: &ExecutionFilter) -> Result<i64> {
        executions::count(self, owner, filter)
    }

    fn execution(&self, owner: &str, id: &str) -> Result<Value> {
        executions::get(self, owner, id)
    }

    fn cue_stats(&self, cue_id: &str, since: Millis) -> Result<Value> {
        executions::stats(self, cue_id, since)
    }

    fn open_executions(&self) -> Result<Vec<(String, String, i64)>> {
        ops::open_executions(self)
    }

    fn watched_workers(&self) -> Result<Vec<(String, String)>> {
        workers::watched(self)
    }

    fn workers(&self, owner: &str, now: Millis, timeout_ms: i64) -> Result<Vec<Value>> {
        workers::list(self, owner, now, timeout_ms)
    }

    fn claimable(&self, owner: &str, filter: &ClaimFilter, now: Millis) -> Result<Vec<Value>> {
        workers::claimable(self, owner, filter, now)
    }

    fn claim_deadlines(&self, ids: &[String]) -> Result<Vec<(Millis, String)>> {
        workers::claim_deadlines(self, ids)
    }

    fn alerts(&self, owner: &str, filter: &AlertFilter) -> Result<(Vec<Value>, i64)> {
        alerts::list(self, owner, filter)
    }

    fn alert(&self, owner: &str, id: &str) -> Result<Value> {
        alerts::get(self, owner, id)
    }

    fn due_notifications(&self, now: Millis, limit: i64) -> Result<(Vec<Due>, Option<Millis>)> {
        alerts::due(self, now, limit)
    }

    fn alert_counts(&self) -> Result<crate::store::ops::AlertCounts> {
        ops::alert_counts(self)
    }

    fn user_by_key(&self, key: &str) -> Result<Option<User>> {
        users::by_key(self, key)
    }

    fn user_count(&self) -> Result<i64> {
        users::count(self)
    }

    fn owners(&self) -> Result<Vec<(String, Option<String>)>> {
        users::owners(self)
    }

    fn user_usage(&self, user_id: &str, since: Millis) -> Result<(i64, i64, i64)> {
        users::usage(self, user_id, since)
    }

    fn usage(&self, user_id: &str, since: Millis) -> Result<crate::store::ops::Usage> {
        ops::usage(self, user_id, since)
    }

    fn alert_webhook_url(&self, user_id: &str) -> Result<Option<String>> {
        Ok(self
            .query_row(
                "SELECT alert_webhook_url FROM users WHERE id = ?1",
                params![user_id],
                |r| r.get::<Option<String>>(0),
            )
            .optional()?
            .flatten())
    }
}

impl Writes for Db<'_> {
    fn upsert_cue(&self, owner: &str, spec: &CueSpec, now: Millis) -> Result<cues::Upserted> {
        cues::upsert(self, owner, spec, now)
    }

    fn update_cue(
        &self,
        owner: &str,
        id: &str,
        spec: &CueSpec,
        now: Millis,
    ) -> Result<cues::Upserted> {
        cues::update(self, owner, id, spec, now)
    }

    fn insert_cues(
        &self,
        owner: &str,
        specs: &[CueSpec],
        now: Millis,
    ) -> Result<Vec<(String, Option<Millis>)>> {
        cues::insert_many(self, owner, specs, now)
    }

    fn delete_cue(&self, id: &str) -> Result<()> {
        cues::delete(self, id)
    }

    fn pause(&self, cue_id: &str, now: Millis) -> Result<()> {
        executions::pause(self, cue_id, now)
    }

    fn resume(&self, cue_id: &str, now: Millis) -> Result<Option<Millis>> {
        executions::resume(self, cue_id, now)
    }

    fn recover(&self, now: Millis, scope: &cluster::Scope) -> Result<Recovered> {
        executions::recover(self, now, scope)
    }

    fn fire_due(&self, cue_id: &str, now: Millis, grace_ms: i64) -> Result<Option<FireResult>> {
        executions::fire_due(self, cue_id, now, grace_ms)
    }

    fn fire_at(
        &self,
        cue_id: &str,
        payload: Option<&Value>,
        send_at: Option<Millis>,
        fire_key: Option<FireKey<'_>>,
        now: Millis,
    ) -> Result<Fired> {
        executions::fire_at(self, cue_id, payload, send_at, fire_key, now)
    }

    fn replay(&self, execution_id: &str, now: Millis) -> Result<String> {
        executions::replay(self, execution_id, now)
    }

    fn retry_due(&self, execution_id: &str, now: Millis) -> Result<Option<String>> {
        executions::retry_due(self, execution_id, now)
    }

    fn deadline_due(&self, execution_id: &str, now: Millis) -> Result<bool> {
        executions::deadline_due(self, execution_id, now)
    }

    fn claim(
        &self,
        execution_id: &str,
        worker: &str,
        now: Millis,
        lease_ms: i64,
        start_deadline: bool,
    ) -> Result<Option<Claimed>> {
        executions::claim(self, execution_id, worker, now, lease_ms, start_deadline)
    }

    fn unclaim(
        &self,
        execution_id: &str,
        attempt: i64,
        claimed_by: &str,
        now: Millis,
    ) -> Result<bool> {
        executions::unclaim(self, execution_id, attempt, claimed_by, now)
    }

    fn complete(
        &self,
        execution_id: &str,
        attempt: i64,
        outcome: &ReportedOutcome,
        now: Millis,
    ) -> Result<Finished> {
        executions::complete(self, execution_id, attempt, outcome, now)
    }

    fn delivered(
        &self,
        execution_id: &str,
        attempt: i64,
        how: &Attempt,
        now: Millis,
    ) -> Result<Finished> {
        executions::delivered(self, execution_id, attempt, how, now)
    }

    fn report_outcome(
        &self,
        owner: &str,
        id: &str,
        outcome: &ReportedOutcome,
        now: Millis,
    ) -> Result<(String, Option<Chained>)> {
        executions::report(self, owner, id, outcome, now)
    }

    fn append_evidence(
        &self,
        owner: &str,
        id: &str,
        evidence: &Evidence,
        now: Millis,
    ) -> Result<String> {
        executions::append_evidence(self, owner, id, evidence, now)
    }

    fn verify(
        &self,
        owner: &str,
        id: &str,
        valid: bool,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<(String, Option<Chained>)> {
        executions::verify(self, owner, id, valid, reason, now)
    }

    fn verification_pending(&self, owner: &str, id: &str, now: Millis) -> Result<()> {
        executions::verification_pending(self, owner, id, now)
    }

    fn outcome_counts(&self) -> Result<Vec<(String, u64)>> {
        match self {
            Db::Sqlite(c) => crate::store::sqlite::outcomes::outcome_counts(c),
            Db::Postgres(tx) => Ok(tx.outcome_counts()),
        }
    }

    fn heartbeat(
        &self,
        owner: &str,
        worker_id: &str,
        handlers: Option<&[String]>,
        now: Millis,
    ) -> Result<bool> {
        workers::heartbeat(self, owner, worker_id, handlers, now)
    }

    fn silence_due(
        &self,
        owner: &str,
        worker_id: &str,
        now: Millis,
        timeout_ms: i64,
        alive_since: Millis,
    ) -> Result<Silence> {
        workers::silence_due(self, owner, worker_id, now, timeout_ms, alive_since)
    }

    fn delete_worker(&self, owner: &str, worker_id: &str, now: Millis) -> Result<Vec<String>> {
        workers::delete(self, owner, worker_id, now)
    }

    fn claim_for_worker(
        &self,
        owner: &str,
        execution_id: Option<&str>,
        worker_id: &str,
        task: Option<&str>,
        now: Millis,
        lease_ms: i64,
    ) -> Result<Option<WorkerClaim>> {
        workers::claim_for(self, owner, execution_id, worker_id, task, now, lease_ms)
    }

    fn extend_lease(
        &self,
        owner: &str,
        id: &str,
        worker_id: Option<&str>,
        now: Millis,
        lease_ms: i64,
    ) -> Result<Millis> {
        workers::extend_lease(self, owner, id, worker_id, now, lease_ms)
    }

    fn lease_due(
        &self,
        id: &str,
        now: Millis,
        timeout_ms: i64,
        alive_since: Millis,
    ) -> Result<LeaseCheck> {
        workers::lease_due(self, id, now, timeout_ms, alive_since)
    }

    fn claim_window_due(&self, id: &str, now: Millis) -> Result<bool> {
        workers::claim_window_due(self, id, now)
    }

    fn worker_report(
        &self,
        owner: &str,
        id: &str,
        outcome: &ReportedOutcome,
        now: Millis,
    ) -> Result<Option<WorkerOutcome>> {
        workers::report(self, owner, id, outcome, now)
    }

    fn set_realert_ms(&self, ms: i64) -> Result<()> {
        alerts::set_realert_ms(self, ms)
    }

    fn acknowledge_alert(&self, owner: &str, id: &str, now: Millis) -> Result<Value> {
        alerts::acknowledge(self, owner, id, now)
    }

    fn record_sent(&self, id: &str, sent: &Sent, now: Millis) -> Result<()> {
        alerts::record_sent(self, id, sent, now)
    }

    fn set_alert_webhook(&self, owner: &str, url: Option<&str>, now: Millis) -> Result<()> {
        alerts::set_alert_webhook(self, owner, url, now)
    }

    fn alert_webhook(&self, owner: &str, now: Millis) -> Result<(Option<String>, String)> {
        alerts::alert_webhook(self, owner, now)
    }

    fn regenerate_alert_secret(&self, owner: &str, now: Millis) -> Result<String> {
        alerts::regenerate_alert_secret(self, owner, now)
    }

    fn create_user(&self, email: &str, now: Millis) -> Result<(User, String)> {
        users::create(self, email, now)
    }

    fn mark_unverified(&self, user_id: &str) -> Result<()> {
        users::mark_unverified(self, user_id)
    }

    fn regenerate_key(&self, user_id: &str, now: Millis) -> Result<String> {
        users::regenerate_key(self, user_id, now)
    }

    fn regenerate_secret(&self, user_id: &str, now: Millis) -> Result<String> {
        users::regenerate_secret(self, user_id, now)
    }

    fn take_notifications(&self, ids: &[String], now: Millis, hold_ms: i64) -> Result<Vec<String>> {
        alerts::take_due(self, ids, now, hold_ms)
    }

    fn beat(&self, node: &str, info: &str, lease_ms: i64) -> Result<cluster::Membership> {
        cluster::beat(self, node, info, lease_ms)
    }

    fn leave(&self, node: &str) -> Result<()> {
        cluster::leave(self, node)
    }

    fn announce(&self, node: &str, cue_ids: &[String]) -> Result<()> {
        cluster::announce(self, node, cue_ids)
    }

    fn probe(&self, now: Millis) -> Result<()> {
        self.execute(
            "INSERT INTO health_probe (id, at) VALUES (1, ?1) \
             ON CONFLICT (id) DO UPDATE SET at = excluded.at",
            params![now],
        )?;
        Ok(())
    }
}
