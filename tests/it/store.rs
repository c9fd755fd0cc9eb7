//! The store conformance suite: the contracts of [`Store`], [`Reads`] and [`Writes`] that every
//! backend keeps, driven through those alone (no SQL, no connection) with explicit instants (no
//! clock, no sleep).
//!
//! A backend joins with one line, `conformance!(name, open)`, where `open()` returns a fresh store
//! and a guard that cleans up after it (dropped after the store is closed); every case below then
//! runs on it as `store::name::<case>`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::mpsc;
use std::task::Poll;
use std::time::Duration;

use cueapi::clock::Millis;
use cueapi::delivery::Attempt;
use cueapi::error::{Error, Result};
use cueapi::store::alerts::{AlertFilter, Sent};
use cueapi::store::cues::Upserted;
use cueapi::store::workers::{ClaimFilter, LeaseCheck, Silence, WorkerClaim};
use cueapi::store::{
    conflict, Claimed, CueSpec, Evidence, ExecutionFilter, Finished, FireKey, FireResult, Fired,
    Reads, ReportedOutcome, Store, Writes, LOCAL_OWNER,
};
use serde_json::{json, Value};

/// Expands every case into a module of tests for one backend.
macro_rules! conformance {
    ($(#[$meta:meta])* $backend:ident, $open:path) => {
        conformance!(@cases $(#[$meta])* $backend, $open;
            // cues
            a_new_cue_gets_its_first_tick_and_stating_it_again_unchanged_changes_nothing,
            a_cue_name_already_taken_is_refused_as_a_conflict_and_nothing_is_stored,
            an_update_replaces_the_definition_and_keeps_the_tick_while_the_schedule_stays,
            a_cue_is_found_by_id_or_by_name_and_only_by_its_owner,
            cue_pages_are_newest_first_with_their_total_and_cue_ids_oldest_first,
            a_paused_cue_does_not_fire_and_resuming_records_the_missed_ticks,
            deleting_a_cue_takes_its_executions_and_their_attempts_with_it,
            // firing
            a_due_tick_fires_one_execution_and_returns_the_next_tick,
            the_same_tick_fired_from_four_threads_at_once_makes_one_execution,
            a_tick_within_the_grace_runs_and_older_ones_are_missed_with_catch_up_skip,
            catch_up_once_folds_the_late_ticks_into_one_run_of_the_latest,
            catch_up_all_replays_the_late_ticks_up_to_catch_up_max,
            a_tick_while_the_previous_run_is_going_is_skipped_unless_overlap_is_allowed,
            a_one_shot_cue_fires_once_and_completes_when_its_run_succeeds,
            a_one_shot_cue_missed_with_catch_up_skip_fails,
            a_fire_now_is_claimable_at_once_and_a_fire_for_later_waits_for_its_instant,
            a_fire_repeated_with_its_idempotency_key_returns_the_first_execution,
            a_replay_is_a_new_execution_with_the_same_payload,
            an_execution_goes_by_its_cues_transport_to_its_cues_target,
            // claims and results
            an_execution_is_claimed_once,
            a_claim_given_back_unsent_leaves_the_execution_as_before_it,
            a_reported_success_finishes_the_execution_once_and_counts_a_run,
            a_reported_failure_is_final_alerted_and_pauses_a_cue_that_asks,
            a_failed_run_is_retried_on_the_backoff_schedule_until_its_retries_are_spent,
            a_cue_may_retry_reported_failures_too,
            a_2xx_delivery_succeeds_and_starts_the_outcome_deadline,
            a_5xx_or_timed_out_delivery_is_retried_after_the_backoff_or_retry_after,
            a_410_delivery_fails_at_once,
            an_outcome_reported_over_the_api_is_recorded_once,
            a_failure_reported_after_delivery_fails_the_execution_and_its_one_shot_cue,
            manual_verification_parks_a_success_until_a_verdict_that_is_final,
            a_success_without_the_evidence_its_mode_requires_fails_verification,
            evidence_appended_after_the_outcome_adds_to_what_was_recorded,
            outcome_counts_count_committed_changes_only,
            recovery_interrupts_the_runs_left_in_flight_and_lists_the_work_to_resume,
            an_interrupted_run_with_no_retry_left_fails_its_one_shot_cue,
            a_node_taking_over_partitions_interrupts_only_their_runs_of_nodes_not_alive,
            an_outcome_not_reported_by_its_deadline_times_out_and_alerts,
            // workers
            a_new_worker_is_watched_and_one_silent_past_the_timeout_is_reported_once,
            a_worker_claim_is_exclusive,
            worker_claims_raced_from_six_threads_never_share_an_execution,
            only_the_holder_extends_its_lease,
            a_workers_report_finishes_its_claim_once,
            deleting_a_worker_puts_its_claims_back_in_the_queue,
            a_claim_is_released_once_its_lease_expired_and_its_worker_fell_silent,
            an_execution_nobody_claims_within_its_window_is_missed,
            // alerts, notifications and users
            a_final_failure_alerts_once_per_incident_and_queues_its_notifications,
            an_unverified_address_is_never_emailed_and_the_realert_interval_is_a_setting,
            a_user_is_found_by_its_key_until_the_key_is_regenerated,
            operations_figures_count_what_is_in_flight_and_what_was_done,
            // transactions
            a_write_that_fails_after_several_changes_leaves_nothing_behind,
            a_failing_write_does_not_undo_a_neighbour_submitted_while_it_ran,
        );
    };
    (@cases $(#[$meta:meta])* $backend:ident, $open:path; $($case:ident),+ $(,)?) => {
        $(#[$meta])*
        mod $backend {
            use super::*;
            $(
                #[test]
                fn $case() {
                    let (_guard, store) = $open();
                    super::$case(&store);
                    store.close();
                }
            )+
        }
    };
}

conformance!(sqlite, open_sqlite);
conformance!(postgres, open_postgres);

/// A fresh PostgreSQL store over a database of its own (dropped with the guard).
fn open_postgres() -> (crate::postgres::StoreDb, Store) {
    crate::postgres::open_store()
}

/// A fresh SQLite store in a temporary directory (removed when the guard drops).
fn open_sqlite() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("conformance.db")).expect("open");
    (dir, store)
}

// -- vocabulary --

const T0: Millis = 1_780_315_200_000; // 2026-06-01T12:00:00Z
const S: Millis = 1_000;
const MIN: Millis = 60_000;
const HOUR: Millis = 3_600_000;
const LEASE: i64 = 30_000;
/// An API user's id (cues of an owner need no user row).
const OWNER: &str = "usr_conformance";
const OTHER: &str = "usr_other";
const HOOK: &str = "https://example.com/hook";

fn spec(v: Value) -> CueSpec {
    serde_json::from_value(v).expect("a valid spec")
}

/// A write that must commit.
fn w<R: Send + 'static>(s: &Store, f: impl Fn(&dyn Writes) -> Result<R> + Send + 'static) -> R {
    s.write(f).expect("the write commits")
}

fn r<R>(s: &Store, f: impl FnOnce(&dyn Reads) -> Result<R>) -> R {
    s.read(f).expect("the read")
}

/// The error of a result that must be one.
fn error<T: Debug>(r: Result<T>) -> Error {
    r.expect_err("refused")
}

fn upsert(s: &Store, owner: &str, v: Value, now: Millis) -> Result<Upserted> {
    let (owner, spec) = (owner.to_string(), spec(v));
    s.write(move |c| c.upsert_cue(&owner, &spec, now))
}

fn new_cue(s: &Store, owner: &str, v: Value, now: Millis) -> String {
    let up = upsert(s, owner, v, now).expect("the cue is stored");
    assert!(up.created, "{up:?}");
    up.id
}

fn update(s: &Store, owner: &str, id: &str, spec: CueSpec, now: Millis) -> Result<Upserted> {
    let (owner, id) = (owner.to_string(), id.to_string());
    s.write(move |c| c.update_cue(&owner, &id, &spec, now))
}

fn fire(s: &Store, cue: &str, now: Millis, grace_ms: i64) -> Option<FireResult> {
    let cue = cue.to_string();
    w(s, move |c| c.fire_due(&cue, now, grace_ms))
}

/// Fires the cue's due tick, which must make exactly one execution; returns its id.
fn fire_one(s: &Store, cue: &str, now: Millis) -> String {
    let fired = fire(s, cue, now, 0).expect("a tick is due");
    assert_eq!(fired.created.len(), 1, "{fired:?}");
    fired.created[0].clone()
}

fn fire_at(
    s: &Store,
    cue: &str,
    payload: Option<Value>,
    send_at: Option<Millis>,
    now: Millis,
) -> Result<Fired> {
    let cue = cue.to_string();
    s.write(move |c| c.fire_at(&cue, payload.as_ref(), send_at, None, now))
}

fn fire_now(s: &Store, cue: &str, now: Millis) -> String {
    fire_at(s, cue, None, None, now).expect("fired").id
}

fn keyed_fire(s: &Store, cue: &str, key: &str, request: &str, now: Millis) -> Fired {
    let (cue, key, request) = (cue.to_string(), key.to_string(), request.to_string());
    w(s, move |c| {
        let k = FireKey {
            key: &key,
            request: &request,
        };
        c.fire_at(&cue, None, None, Some(k), now)
    })
}

/// A local handler's claim (it starts the outcome deadline).
fn claim(s: &Store, exec: &str, now: Millis) -> Option<Claimed> {
    let exec = exec.to_string();
    w(s, move |c| c.claim(&exec, "node-1", now, LEASE, true))
}

/// The webhook sender's claim (the deadline starts at delivery).
fn claim_to_send(s: &Store, exec: &str, now: Millis) -> Claimed {
    let exec = exec.to_string();
    w(s, move |c| c.claim(&exec, "webhook", now, LEASE, false)).expect("claimable")
}

fn complete(
    s: &Store,
    exec: &str,
    attempt: i64,
    o: ReportedOutcome,
    now: Millis,
) -> Result<Finished> {
    let exec = exec.to_string();
    s.write(move |c| c.complete(&exec, attempt, &o, now))
}

fn deliver(s: &Store, exec: &str, attempt: i64, a: Attempt, now: Millis) -> Result<Finished> {
    let exec = exec.to_string();
    s.write(move |c| c.delivered(&exec, attempt, &a, now))
}

fn retry_due(s: &Store, exec: &str, now: Millis) -> Option<String> {
    let exec = exec.to_string();
    w(s, move |c| c.retry_due(&exec, now))
}

fn deadline_due(s: &Store, exec: &str, now: Millis) -> bool {
    let exec = exec.to_string();
    w(s, move |c| c.deadline_due(&exec, now))
}

fn report(
    s: &Store,
    owner: &str,
    exec: &str,
    o: ReportedOutcome,
    now: Millis,
) -> Result<(String, Option<cueapi::store::Chained>)> {
    let (owner, exec) = (owner.to_string(), exec.to_string());
    s.write(move |c| c.report_outcome(&owner, &exec, &o, now))
}

fn verify(s: &Store, exec: &str, valid: bool, reason: Option<&str>, now: Millis) -> Result<String> {
    let (exec, reason) = (exec.to_string(), reason.map(str::to_string));
    s.write(move |c| c.verify(LOCAL_OWNER, &exec, valid, reason.as_deref(), now))
        .map(|(state, _)| state)
}

fn worker_claim(
    s: &Store,
    exec: Option<&str>,
    worker: &str,
    now: Millis,
) -> Result<Option<WorkerClaim>> {
    let (exec, worker) = (exec.map(str::to_string), worker.to_string());
    s.write(move |c| c.claim_for_worker(OWNER, exec.as_deref(), &worker, None, now, LEASE))
}

fn heartbeat(s: &Store, worker: &str, handlers: Option<&[&str]>, now: Millis) -> bool {
    let worker = worker.to_string();
    let handlers: Option<Vec<String>> = handlers.map(|h| h.iter().map(|t| t.to_string()).collect());
    w(s, move |c| {
        c.heartbeat(OWNER, &worker, handlers.as_deref(), now)
    })
}

fn exec(s: &Store, owner: &str, id: &str) -> Value {
    r(s, |c| c.execution(owner, id))
}

fn cue_of(s: &Store, id: &str) -> Value {
    r(s, |c| c.cue_json(id))
}

/// A cue's executions as (scheduled instant, status), oldest first.
fn history(s: &Store, owner: &str, cue: &str) -> Vec<(Millis, String)> {
    let filter = ExecutionFilter {
        cue_id: Some(cue.to_string()),
        limit: Some(1000),
        ..Default::default()
    };
    let mut rows: Vec<(Millis, String)> = r(s, |c| c.list_executions(owner, &filter))
        .iter()
        .map(|e| {
            (
                e["scheduled_for"].as_i64().expect("scheduled_for"),
                e["status"].as_str().expect("status").to_string(),
            )
        })
        .collect();
    rows.reverse();
    rows
}

/// Asserts the fields of a record (a key may be a path: `outcome/success`, `attempt_log/0/status`).
#[track_caller]
fn assert_has(v: &Value, fields: Value) {
    let Value::Object(want) = fields else {
        panic!("fields to check must be an object, not {fields}");
    };
    let got: serde_json::Map<String, Value> = want
        .keys()
        .map(|k| {
            let found = v.pointer(&format!("/{k}")).cloned();
            (k.clone(), found.unwrap_or_else(|| json!("<missing>")))
        })
        .collect();
    assert_eq!(Value::Object(got), Value::Object(want), "in {v}");
}

fn at(t: Millis, status: &str) -> (Millis, String) {
    (t, status.to_string())
}

/// An owner's alerts (of one kind), newest first.
fn alerts(s: &Store, owner: &str, kind: Option<&str>) -> Vec<Value> {
    let filter = AlertFilter {
        alert_type: kind.map(str::to_string),
        limit: 100,
        ..Default::default()
    };
    let (list, total) = r(s, |c| c.alerts(owner, &filter));
    assert_eq!(list.len() as i64, total);
    list
}

fn success() -> ReportedOutcome {
    ReportedOutcome {
        success: true,
        ..Default::default()
    }
}

/// A failure: the handler's verdict, or (`retry`) a failed run such as an exception.
fn failure(retry: bool) -> ReportedOutcome {
    ReportedOutcome {
        success: false,
        error: Some("it broke".into()),
        retry,
        ..Default::default()
    }
}

/// A webhook answered with this status code.
fn answered(code: u16) -> Attempt {
    let ok = (200..300).contains(&code);
    Attempt {
        delivered: ok,
        http_status: Some(code),
        error: (!ok).then(|| format!("HTTP {code}")),
        gone: code == 410,
        ..Default::default()
    }
}

fn timed_out() -> Attempt {
    Attempt {
        timed_out: true,
        error: Some("no answer within 30 s".into()),
        ..Default::default()
    }
}

// -- cues --

fn a_new_cue_gets_its_first_tick_and_stating_it_again_unchanged_changes_nothing(s: &Store) {
    let first = upsert(s, LOCAL_OWNER, json!({"name": "a", "every": "1m"}), T0).expect("cue");
    assert!(first.created && first.changed, "{first:?}");
    assert_eq!(first.next_run, Some(T0 + MIN));
    assert!(r(s, |c| c.due_index()).contains(&(T0 + MIN, first.id.clone())));
    let again = upsert(
        s,
        LOCAL_OWNER,
        json!({"name": "a", "every": "1m"}),
        T0 + 10 * S,
    )
    .expect("again");
    assert_eq!(
        (
            again.id.as_str(),
            again.created,
            again.changed,
            again.next_run
        ),
        (first.id.as_str(), false, false, Some(T0 + MIN))
    );
    // A new payload on the same schedule keeps its place; a new schedule starts from now.
    let v = json!({"name": "a", "every": "1m", "payload": {"k": 1}});
    let payload = upsert(s, LOCAL_OWNER, v, T0 + 20 * S).expect("payload");
    assert_eq!((payload.changed, payload.next_run), (true, Some(T0 + MIN)));
    assert_eq!(cue_of(s, &first.id)["payload"], json!({"k": 1}));
    let v = json!({"name": "a", "every": "5m", "payload": {"k": 1}});
    let moved = upsert(s, LOCAL_OWNER, v, T0 + 30 * S).expect("moved");
    assert_eq!(
        (moved.changed, moved.next_run),
        (true, Some(T0 + 30 * S + 5 * MIN))
    );
    assert_eq!(
        r(s, |c| c.due_index()),
        vec![(T0 + 30 * S + 5 * MIN, first.id.clone())]
    );
    assert_eq!(r(s, |c| c.cue_ids(LOCAL_OWNER)), vec![first.id]);
}

fn a_cue_name_already_taken_is_refused_as_a_conflict_and_nothing_is_stored(s: &Store) {
    let a = new_cue(s, OWNER, json!({"name": "a", "every": "1m"}), T0);
    let b = new_cue(s, OWNER, json!({"name": "b", "every": "1m"}), T0 + 1);
    let batch = vec![
        spec(json!({"name": "c", "every": "1m"})),
        spec(json!({"name": "a", "every": "1h"})),
    ];
    let e = error(s.write(move |c| c.insert_cues(OWNER, &batch, T0 + S)));
    assert!(matches!(e, Error::Conflict(_)), "{e:?}");
    let twins = vec![
        spec(json!({"name": "d", "every": "1m"})),
        spec(json!({"name": "d", "every": "1h"})),
    ];
    let e = error(s.write(move |c| c.insert_cues(OWNER, &twins, T0 + S)));
    assert!(matches!(e, Error::Conflict(_)), "{e:?}");
    // Renaming onto a taken name is refused the same way.
    let e = error(update(
        s,
        OWNER,
        &b,
        spec(json!({"name": "a", "every": "1m"})),
        T0 + S,
    ));
    assert!(matches!(e, Error::Conflict(_)), "{e:?}");
    assert_eq!(r(s, |c| c.cue_ids(OWNER)), vec![a.clone(), b.clone()]);
    assert_eq!(cue_of(s, &b)["name"], "b");
    assert_eq!(cue_of(s, &a)["schedule"]["every_ms"], MIN);
    // Names are per owner.
    new_cue(s, OTHER, json!({"name": "a", "every": "1m"}), T0 + S);
    // A batch of new names is stored whole, each with its first tick.
    let fresh = vec![
        spec(json!({"name": "e", "every": "1m"})),
        spec(json!({"name": "f", "every": "1h"})),
    ];
    let made = w(s, move |c| c.insert_cues(OWNER, &fresh, T0 + 2 * S));
    let ticks: Vec<Option<Millis>> = made.iter().map(|(_, t)| *t).collect();
    assert_eq!(ticks, vec![Some(T0 + 2 * S + MIN), Some(T0 + 2 * S + HOUR)]);
    assert_eq!(r(s, |c| c.cue_ids(OWNER)).len(), 4);
}

fn an_update_replaces_the_definition_and_keeps_the_tick_while_the_schedule_stays(s: &Store) {
    let v = json!({
        "name": "a", "every": "1m", "description": "first", "payload": {"k": 1},
        "retry": {"max_attempts": 5, "backoff_minutes": [2]},
    });
    let id = new_cue(s, OWNER, v, T0);
    // One field changed on the stored definition: every other one is kept.
    let mut changed = r(s, |c| c.cue_spec(OWNER, &id));
    changed.payload = json!({"k": 2});
    let up = update(s, OWNER, &id, changed, T0 + 10 * S).expect("update");
    assert_eq!(
        (up.id.as_str(), up.created, up.changed, up.next_run),
        (id.as_str(), false, true, Some(T0 + MIN))
    );
    let cue = cue_of(s, &id);
    assert_eq!(cue["payload"], json!({"k": 2}));
    assert_eq!(cue["description"], "first");
    assert_eq!(cue["retry"]["max_attempts"], 5);
    assert_eq!(cue["retry"]["backoff_minutes"], json!([2.0]));
    // A spec is the whole definition: what it leaves out takes its default. A rename included.
    let up = update(
        s,
        OWNER,
        &id,
        spec(json!({"name": "renamed", "every": "1m"})),
        T0 + 20 * S,
    )
    .expect("replace");
    assert_eq!((up.changed, up.next_run), (true, Some(T0 + MIN)));
    let cue = cue_of(s, &id);
    assert_has(
        &cue,
        json!({"name": "renamed", "description": null, "payload": {}, "retry/max_attempts": 3}),
    );
    assert_eq!(r(s, |c| c.resolve_cue(OWNER, "renamed")), id);
    let gone = s.read(|c| c.resolve_cue(OWNER, "a"));
    assert!(matches!(gone, Err(Error::CueNotFound(_))), "{gone:?}");
    // A new schedule starts from now.
    let up = update(
        s,
        OWNER,
        &id,
        spec(json!({"name": "renamed", "every": "2m"})),
        T0 + 30 * S,
    )
    .expect("reschedule");
    assert_eq!(up.next_run, Some(T0 + 30 * S + 2 * MIN));
    // The transport cannot change; unknown and other owners' cues are not found.
    let v = json!({"name": "renamed", "every": "2m", "transport": "worker"});
    let e = error(update(s, OWNER, &id, spec(v), T0 + 40 * S));
    assert!(
        matches!(
            e,
            Error::Invalid {
                field: "transport",
                ..
            }
        ),
        "{e:?}"
    );
    let v = json!({"name": "x", "every": "1m"});
    let e = error(update(s, OWNER, "cue_nope", spec(v.clone()), T0 + 40 * S));
    assert!(matches!(e, Error::CueNotFound(_)), "{e:?}");
    let e = error(update(s, OTHER, &id, spec(v), T0 + 40 * S));
    assert!(matches!(e, Error::CueNotFound(_)), "{e:?}");
    assert_eq!(cue_of(s, &id)["schedule"]["every_ms"], 2 * MIN);
}

fn a_cue_is_found_by_id_or_by_name_and_only_by_its_owner(s: &Store) {
    let id = new_cue(s, OWNER, json!({"name": "mine", "every": "1m"}), T0);
    assert_eq!(r(s, |c| c.resolve_cue(OWNER, "mine")), id);
    assert_eq!(r(s, |c| c.resolve_cue(OWNER, &id)), id);
    assert_eq!(r(s, |c| c.cue_spec(OWNER, &id)).name, "mine");
    let e = fire_one(s, &id, T0 + MIN);
    assert_eq!(exec(s, OWNER, &e)["cue_id"], id.as_str());
    for other in [OTHER, LOCAL_OWNER] {
        for by in ["mine", id.as_str()] {
            let found = s.read(|c| c.resolve_cue(other, by));
            assert!(matches!(found, Err(Error::CueNotFound(_))), "{found:?}");
        }
        let spec = s.read(|c| c.cue_spec(other, &id));
        assert!(matches!(spec, Err(Error::CueNotFound(_))), "{spec:?}");
        let seen = s.read(|c| c.execution(other, &e));
        assert!(matches!(seen, Err(Error::ExecutionNotFound(_))), "{seen:?}");
        assert_eq!(r(s, |c| c.cue_ids(other)), Vec::<String>::new());
        let all = ExecutionFilter::default();
        assert_eq!(r(s, |c| c.count_executions(other, &all)), 0);
        assert_eq!(
            r(s, |c| c.list_executions(other, &all)),
            Vec::<Value>::new()
        );
        let refused = error(report(s, other, &e, success(), T0 + MIN));
        assert!(
            matches!(refused, Error::ExecutionNotFound(_)),
            "{refused:?}"
        );
    }
    assert_eq!(
        r(s, |c| c
            .count_executions(OWNER, &ExecutionFilter::default())),
        1
    );
}

fn cue_pages_are_newest_first_with_their_total_and_cue_ids_oldest_first(s: &Store) {
    let ids: Vec<String> = (0..5)
        .map(|i| {
            new_cue(
                s,
                OWNER,
                json!({"name": format!("c{i}"), "every": "1m"}),
                T0 + i * S,
            )
        })
        .collect();
    new_cue(s, OTHER, json!({"name": "theirs", "every": "1m"}), T0);
    assert_eq!(r(s, |c| c.cue_ids(OWNER)), ids);
    let page =
        |status: Option<&str>, limit, offset| r(s, |c| c.cue_page(OWNER, status, limit, offset));
    assert_eq!(page(None, 2, 0), (vec![ids[4].clone(), ids[3].clone()], 5));
    assert_eq!(page(None, 2, 2), (vec![ids[2].clone(), ids[1].clone()], 5));
    assert_eq!(page(None, 2, 4), (vec![ids[0].clone()], 5));
    assert_eq!(page(None, 2, 6), (vec![], 5));
    let paused = ids[1].clone();
    w(s, move |c| c.pause(&paused, T0 + 10 * S));
    assert_eq!(page(Some("paused"), 10, 0), (vec![ids[1].clone()], 1));
    let active = vec![
        ids[4].clone(),
        ids[3].clone(),
        ids[2].clone(),
        ids[0].clone(),
    ];
    assert_eq!(page(Some("active"), 10, 0), (active, 4));
    // The owner's active local cues without a handler, by name.
    let handled = vec!["c0".to_string(), "c3".to_string()];
    let names = r(s, |c| c.unhandled_cue_names(OWNER, &handled, 10));
    assert_eq!(names, ["c2", "c4"]);
    assert_eq!(r(s, |c| c.unhandled_cue_names(OWNER, &handled, 1)), ["c2"]);
}

fn a_paused_cue_does_not_fire_and_resuming_records_the_missed_ticks(s: &Store) {
    let id = new_cue(s, LOCAL_OWNER, json!({"name": "p", "every": "1m"}), T0);
    let cue = id.clone();
    w(s, move |c| c.pause(&cue, T0 + 30 * S));
    assert_eq!(cue_of(s, &id)["status"], "paused");
    assert!(r(s, |c| c.due_index()).is_empty());
    assert!(fire(s, &id, T0 + 3 * MIN, 0).is_none());
    let cue = id.clone();
    let next = w(s, move |c| c.resume(&cue, T0 + 3 * MIN + 30 * S));
    assert_eq!(next, Some(T0 + 4 * MIN + 30 * S));
    assert_eq!(
        history(s, LOCAL_OWNER, &id),
        vec![
            at(T0 + MIN, "missed"),
            at(T0 + 2 * MIN, "missed"),
            at(T0 + 3 * MIN, "missed")
        ]
    );
    let cue = cue_of(s, &id);
    assert_has(&cue, json!({"status": "active", "next_run": next}));
    assert_eq!(
        r(s, |c| c.due_index()),
        vec![(T0 + 4 * MIN + 30 * S, id.clone())]
    );
    // Resuming an active cue changes nothing and says when it fires.
    let cue = id.clone();
    assert_eq!(w(s, move |c| c.resume(&cue, T0 + 4 * MIN)), next);
    assert_eq!(history(s, LOCAL_OWNER, &id).len(), 3);
    let e = error(s.write(|c| c.pause("cue_nope", T0)));
    assert!(matches!(e, Error::CueNotFound(_)), "{e:?}");
    let e = error(s.write(|c| c.resume("cue_nope", T0)));
    assert!(matches!(e, Error::CueNotFound(_)), "{e:?}");
}

fn deleting_a_cue_takes_its_executions_and_their_attempts_with_it(s: &Store) {
    let id = new_cue(s, LOCAL_OWNER, json!({"name": "gone", "every": "1m"}), T0);
    let kept = new_cue(s, LOCAL_OWNER, json!({"name": "kept", "every": "1m"}), T0);
    let done = fire_one(s, &id, T0 + MIN);
    claim(s, &done, T0 + MIN).expect("claim");
    complete(s, &done, 1, success(), T0 + MIN + S).expect("complete");
    let running = fire_one(s, &id, T0 + 2 * MIN);
    claim(s, &running, T0 + 2 * MIN).expect("claim");
    let other = fire_one(s, &kept, T0 + MIN);
    let cue = id.clone();
    w(s, move |c| c.delete_cue(&cue));
    for e in [&done, &running] {
        let seen = s.read(|c| c.execution(LOCAL_OWNER, e));
        assert!(matches!(seen, Err(Error::ExecutionNotFound(_))), "{seen:?}");
        let t = s.read(|c| c.execution_transport(e));
        assert!(matches!(t, Err(Error::ExecutionNotFound(_))), "{t:?}");
    }
    let of_cue = ExecutionFilter {
        cue_id: Some(id.clone()),
        ..Default::default()
    };
    assert_eq!(r(s, |c| c.count_executions(LOCAL_OWNER, &of_cue)), 0);
    let all = ExecutionFilter::default();
    assert_eq!(r(s, |c| c.count_executions(LOCAL_OWNER, &all)), 1);
    assert_eq!(exec(s, LOCAL_OWNER, &other)["status"], "pending");
    assert!(matches!(
        s.read(|c| c.cue_json(&id)),
        Err(Error::CueNotFound(_))
    ));
    assert_eq!(r(s, |c| c.due_index()), vec![(T0 + 2 * MIN, kept)]);
    // A running attempt of a deleted cue cannot be completed.
    let late = complete(s, &running, 1, success(), T0 + 2 * MIN + S);
    assert!(late.is_err(), "{late:?}");
    let e = error(s.write(move |c| c.delete_cue(&id)));
    assert!(matches!(e, Error::CueNotFound(_)), "{e:?}");
}

// -- firing --

fn a_due_tick_fires_one_execution_and_returns_the_next_tick(s: &Store) {
    let id = new_cue(
        s,
        LOCAL_OWNER,
        json!({"name": "t", "every": "1m", "payload": {"n": 1}}),
        T0,
    );
    assert!(fire(s, &id, T0 + MIN - 1, 0).is_none());
    let fired = fire(s, &id, T0 + MIN, 0).expect("due");
    assert_eq!(fired.created.len(), 1);
    assert_eq!(
        (fired.transport.as_str(), fired.next_run),
        ("local", Some(T0 + 2 * MIN))
    );
    // The same tick again: nothing new.
    assert!(fire(s, &id, T0 + MIN, 0).is_none());
    assert!(fire(s, &id, T0 + 2 * MIN - 1, 0).is_none());
    let e = &fired.created[0];
    let ex = exec(s, LOCAL_OWNER, e);
    assert_has(
        &ex,
        json!({
            "status": "pending", "scheduled_for": T0 + MIN, "triggered_by": "schedule",
            "attempts": 0,
        }),
    );
    assert_eq!(ex["payload"], json!({"n": 1}));
    assert_eq!(ex["idempotency_key"], format!("{id}:{}", T0 + MIN));
    assert_eq!(r(s, |c| c.pending_cue(e)), Some(id.clone()));
    let cue = cue_of(s, &id);
    assert_has(&cue, json!({"fired_count": 1, "next_run": T0 + 2 * MIN}));
    assert_eq!(history(s, LOCAL_OWNER, &id), vec![at(T0 + MIN, "pending")]);
    assert_eq!(r(s, |c| c.due_index()), vec![(T0 + 2 * MIN, id.clone())]);
    assert!(fire(s, "cue_nope", T0 + MIN, 0).is_none());
}

fn the_same_tick_fired_from_four_threads_at_once_makes_one_execution(s: &Store) {
    let id = new_cue(s, LOCAL_OWNER, json!({"name": "race", "every": "1m"}), T0);
    let results: Vec<Option<FireResult>> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| fire(s, &id, T0 + MIN, 0)))
            .collect();
        racers
            .into_iter()
            .map(|h| h.join().expect("racer"))
            .collect()
    });
    let created: Vec<&String> = results.iter().flatten().flat_map(|f| &f.created).collect();
    assert_eq!(created.len(), 1, "{results:?}");
    assert_eq!(history(s, LOCAL_OWNER, &id), vec![at(T0 + MIN, "pending")]);
    assert_eq!(cue_of(s, &id)["fired_count"], 1);
}

fn a_tick_within_the_grace_runs_and_older_ones_are_missed_with_catch_up_skip(s: &Store) {
    let v = json!({"name": "skip", "every": "1m", "catch_up": "skip"});
    let id = new_cue(s, LOCAL_OWNER, v, T0);
    // Ticks at +1..+5 min; with a minute of grace at +5.5, only +5 is on time.
    let fired = fire(s, &id, T0 + 5 * MIN + 30 * S, MIN).expect("due");
    assert_eq!(fired.created.len(), 1);
    assert_eq!(fired.next_run, Some(T0 + 6 * MIN));
    let mut want: Vec<_> = (1..5).map(|i| at(T0 + i * MIN, "missed")).collect();
    want.push(at(T0 + 5 * MIN, "pending"));
    assert_eq!(history(s, LOCAL_OWNER, &id), want);
    assert_eq!(
        exec(s, LOCAL_OWNER, &fired.created[0])["scheduled_for"],
        T0 + 5 * MIN
    );
    // Everything late: nothing runs.
    let fired = fire(s, &id, T0 + 9 * MIN + 30 * S, 0).expect("due");
    assert!(fired.created.is_empty(), "{fired:?}");
    assert_eq!(fired.next_run, Some(T0 + 10 * MIN));
    let h = history(s, LOCAL_OWNER, &id);
    assert_eq!(h.len(), 9);
    let late: Vec<_> = (6..10).map(|i| at(T0 + i * MIN, "missed")).collect();
    assert_eq!(&h[5..], &late[..]);
}

fn catch_up_once_folds_the_late_ticks_into_one_run_of_the_latest(s: &Store) {
    let id = new_cue(s, LOCAL_OWNER, json!({"name": "once", "every": "1m"}), T0);
    let fired = fire(s, &id, T0 + 5 * MIN + 30 * S, 10 * S).expect("due");
    assert_eq!(fired.created.len(), 1);
    assert_eq!(fired.next_run, Some(T0 + 6 * MIN));
    let mut want: Vec<_> = (1..5).map(|i| at(T0 + i * MIN, "missed")).collect();
    want.push(at(T0 + 5 * MIN, "pending"));
    assert_eq!(history(s, LOCAL_OWNER, &id), want);
}

fn catch_up_all_replays_the_late_ticks_up_to_catch_up_max(s: &Store) {
    let v = json!({
        "name": "all", "every": "1m", "catch_up": "replay_all", "catch_up_max": 2,
        "overlap": "allow",
    });
    let id = new_cue(s, LOCAL_OWNER, v, T0);
    let fired = fire(s, &id, T0 + 5 * MIN + 30 * S, 10 * S).expect("due");
    assert_eq!(fired.created.len(), 2);
    assert_eq!(fired.next_run, Some(T0 + 6 * MIN));
    assert_eq!(
        history(s, LOCAL_OWNER, &id),
        vec![
            at(T0 + MIN, "missed"),
            at(T0 + 2 * MIN, "missed"),
            at(T0 + 3 * MIN, "missed"),
            at(T0 + 4 * MIN, "pending"),
            at(T0 + 5 * MIN, "pending"),
        ]
    );
}

fn a_tick_while_the_previous_run_is_going_is_skipped_unless_overlap_is_allowed(s: &Store) {
    let id = new_cue(s, LOCAL_OWNER, json!({"name": "skip", "every": "1m"}), T0);
    let first = fire_one(s, &id, T0 + MIN);
    // Waiting for its claim still counts as going.
    let second = fire(s, &id, T0 + 2 * MIN, 0).expect("due");
    assert!(second.created.is_empty(), "{second:?}");
    assert_eq!(second.next_run, Some(T0 + 3 * MIN));
    claim(s, &first, T0 + 2 * MIN + S).expect("claim");
    assert!(fire(s, &id, T0 + 3 * MIN, 0)
        .expect("due")
        .created
        .is_empty());
    complete(s, &first, 1, success(), T0 + 3 * MIN + S).expect("complete");
    fire_one(s, &id, T0 + 4 * MIN);
    assert_eq!(
        history(s, LOCAL_OWNER, &id),
        vec![
            at(T0 + MIN, "success"),
            at(T0 + 2 * MIN, "skipped"),
            at(T0 + 3 * MIN, "skipped"),
            at(T0 + 4 * MIN, "pending"),
        ]
    );
    let v = json!({"name": "allow", "every": "1m", "overlap": "allow"});
    let allow = new_cue(s, LOCAL_OWNER, v, T0);
    fire_one(s, &allow, T0 + MIN);
    fire_one(s, &allow, T0 + 2 * MIN);
    assert_eq!(
        history(s, LOCAL_OWNER, &allow),
        vec![at(T0 + MIN, "pending"), at(T0 + 2 * MIN, "pending")]
    );
}

fn a_one_shot_cue_fires_once_and_completes_when_its_run_succeeds(s: &Store) {
    let up = upsert(
        s,
        LOCAL_OWNER,
        json!({"name": "once", "at": "2026-06-01T12:05:00Z"}),
        T0,
    )
    .expect("cue");
    assert_eq!(up.next_run, Some(T0 + 5 * MIN));
    let fired = fire(s, &up.id, T0 + 5 * MIN, 0).expect("due");
    assert_eq!((fired.created.len(), fired.next_run), (1, None));
    // Its run is still to finish.
    assert_eq!(cue_of(s, &up.id)["status"], "active");
    assert!(r(s, |c| c.due_index()).is_empty());
    assert!(fire(s, &up.id, T0 + 6 * MIN, 0).is_none());
    let e = &fired.created[0];
    claim(s, e, T0 + 5 * MIN).expect("claim");
    complete(s, e, 1, success(), T0 + 5 * MIN + S).expect("complete");
    let cue = cue_of(s, &up.id);
    assert_has(
        &cue,
        json!({"status": "completed", "run_count": 1, "last_run": T0 + 5 * MIN + S}),
    );
    assert_eq!(
        history(s, LOCAL_OWNER, &up.id),
        vec![at(T0 + 5 * MIN, "success")]
    );
    // A one-shot time already past is refused.
    let late = upsert(
        s,
        LOCAL_OWNER,
        json!({"name": "late", "at": "2026-06-01T11:00:00Z"}),
        T0,
    );
    assert!(matches!(late, Err(Error::InvalidSchedule(_))), "{late:?}");
    assert_eq!(r(s, |c| c.cue_ids(LOCAL_OWNER)), vec![up.id]);
}

fn a_one_shot_cue_missed_with_catch_up_skip_fails(s: &Store) {
    let v = json!({"name": "once", "at": "2026-06-01T12:05:00Z", "catch_up": "skip"});
    let id = new_cue(s, LOCAL_OWNER, v, T0);
    let fired = fire(s, &id, T0 + 10 * MIN, MIN).expect("due");
    assert!(fired.created.is_empty(), "{fired:?}");
    assert_eq!(fired.next_run, None);
    assert_eq!(cue_of(s, &id)["status"], "failed");
    assert_eq!(
        history(s, LOCAL_OWNER, &id),
        vec![at(T0 + 5 * MIN, "missed")]
    );
}

fn a_fire_now_is_claimable_at_once_and_a_fire_for_later_waits_for_its_instant(s: &Store) {
    let v = json!({"name": "m", "every": "1h", "payload": {"from": "cue"}});
    let id = new_cue(s, LOCAL_OWNER, v, T0);
    let now = fire_at(s, &id, None, None, T0 + S).expect("fire");
    assert!(now.created && !now.conflicting, "{now:?}");
    assert_eq!(
        (now.later, now.scheduled_for, now.transport.as_str()),
        (None, T0 + S, "local")
    );
    let ex = exec(s, LOCAL_OWNER, &now.id);
    assert_has(
        &ex,
        json!({"triggered_by": "manual_fire", "status": "pending", "payload": {"from": "cue"}}),
    );
    assert_eq!(claim(s, &now.id, T0 + 2 * S).expect("claimable").attempt, 1);
    let later = fire_at(
        s,
        &id,
        Some(json!({"from": "fire"})),
        Some(T0 + 10 * MIN),
        T0 + 2 * S,
    )
    .expect("fire later");
    assert!(later.created);
    assert_eq!(
        (later.later, later.scheduled_for),
        (Some(T0 + 10 * MIN), T0 + 10 * MIN)
    );
    let ex = exec(s, LOCAL_OWNER, &later.id);
    assert_has(
        &ex,
        json!({"status": "pending", "payload": {"from": "fire"}, "next_retry": T0 + 10 * MIN}),
    );
    assert_eq!(retry_due(s, &later.id, T0 + 10 * MIN - 1), None);
    assert_eq!(
        retry_due(s, &later.id, T0 + 10 * MIN).as_deref(),
        Some("local")
    );
    assert_eq!(exec(s, LOCAL_OWNER, &later.id)["next_retry"], Value::Null);
    assert_eq!(retry_due(s, &later.id, T0 + 10 * MIN), None);
    // An instant already past means now.
    let past = fire_at(s, &id, None, Some(T0), T0 + 3 * S).expect("fire");
    assert_eq!((past.later, past.scheduled_for), (None, T0 + 3 * S));
    let e = error(fire_at(s, &id, Some(json!([1])), None, T0 + 4 * S));
    assert!(
        matches!(
            e,
            Error::Invalid {
                field: "payload",
                ..
            }
        ),
        "{e:?}"
    );
    let e = error(fire_at(s, "cue_nope", None, None, T0 + 4 * S));
    assert!(matches!(e, Error::CueNotFound(_)), "{e:?}");
    let manual = ExecutionFilter {
        triggered_by: Some("manual_fire".into()),
        ..Default::default()
    };
    assert_eq!(r(s, |c| c.count_executions(LOCAL_OWNER, &manual)), 3);
}

fn a_fire_repeated_with_its_idempotency_key_returns_the_first_execution(s: &Store) {
    let id = new_cue(s, OWNER, json!({"name": "k", "every": "1h"}), T0);
    let first = keyed_fire(s, &id, "k1", "r1", T0 + S);
    assert!(first.created && !first.conflicting, "{first:?}");
    let again = keyed_fire(s, &id, "k1", "r1", T0 + 2 * S);
    assert_eq!(
        (
            again.id.as_str(),
            again.created,
            again.conflicting,
            again.scheduled_for
        ),
        (first.id.as_str(), false, false, T0 + S)
    );
    let other_request = keyed_fire(s, &id, "k1", "r2", T0 + 3 * S);
    assert_eq!(
        (
            other_request.id.as_str(),
            other_request.created,
            other_request.conflicting
        ),
        (first.id.as_str(), false, true)
    );
    let other_key = keyed_fire(s, &id, "k2", "r1", T0 + 4 * S);
    assert!(other_key.created);
    assert_ne!(other_key.id, first.id);
    // A key is remembered for a day.
    let next_day = keyed_fire(s, &id, "k1", "r1", T0 + S + 24 * HOUR + S);
    assert!(next_day.created);
    assert_ne!(next_day.id, first.id);
    // Raced: one execution, the same answer for all.
    let raced: Vec<Fired> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| keyed_fire(s, &id, "k3", "r3", T0 + 2 * HOUR)))
            .collect();
        racers
            .into_iter()
            .map(|h| h.join().expect("racer"))
            .collect()
    });
    assert_eq!(raced.iter().filter(|f| f.created).count(), 1, "{raced:?}");
    assert!(
        raced.iter().all(|f| f.id == raced[0].id && !f.conflicting),
        "{raced:?}"
    );
    let all = ExecutionFilter::default();
    assert_eq!(r(s, |c| c.count_executions(OWNER, &all)), 4);
}

fn a_replay_is_a_new_execution_with_the_same_payload(s: &Store) {
    let id = new_cue(s, LOCAL_OWNER, json!({"name": "r", "every": "1h"}), T0);
    let first = fire_at(s, &id, Some(json!({"x": 1})), None, T0 + S)
        .expect("fire")
        .id;
    claim(s, &first, T0 + S).expect("claim");
    complete(s, &first, 1, success(), T0 + 2 * S).expect("complete");
    let old = first.clone();
    let again = w(s, move |c| c.replay(&old, T0 + MIN));
    assert_ne!(again, first);
    let ex = exec(s, LOCAL_OWNER, &again);
    assert_has(
        &ex,
        json!({
            "triggered_by": "replay", "replay_of": first, "payload": {"x": 1},
            "status": "pending", "attempts": 0,
        }),
    );
    assert_eq!(exec(s, LOCAL_OWNER, &first)["status"], "success");
    assert_eq!(claim(s, &again, T0 + MIN).expect("claimable").attempt, 1);
    let e = error(s.write(|c| c.replay("exec_nope", T0 + MIN)));
    assert!(matches!(e, Error::ExecutionNotFound(_)), "{e:?}");
}

fn an_execution_goes_by_its_cues_transport_to_its_cues_target(s: &Store) {
    let (user, _) = w(s, |c| c.create_user("hooks@example.com", T0));
    let local = new_cue(s, &user.id, json!({"name": "l", "every": "1h"}), T0);
    let v = json!({
        "name": "h", "every": "1h", "transport": "webhook", "callback_url": HOOK,
        "callback_method": "put", "delivery_timeout_seconds": 5,
    });
    let hook = new_cue(s, &user.id, v, T0);
    let worker = new_cue(
        s,
        &user.id,
        json!({"name": "w", "every": "1h", "transport": "worker"}),
        T0,
    );
    for (cue, transport) in [(&local, "local"), (&hook, "webhook"), (&worker, "worker")] {
        let e = fire_now(s, cue, T0 + S);
        assert_eq!(r(s, |c| c.execution_transport(&e)), transport);
    }
    let t = r(s, |c| c.cue_target(&hook)).expect("a target");
    assert_eq!(
        (
            t.url.as_str(),
            t.method.as_str(),
            t.timeout_ms,
            t.owner.as_str()
        ),
        (HOOK, "PUT", 5_000, user.id.as_str())
    );
    assert_eq!(t.secret, user.webhook_secret);
    assert!(r(s, |c| c.cue_target(&local)).is_none());
    // A new secret signs from now on.
    let uid = user.id.clone();
    let secret = w(s, move |c| c.regenerate_secret(&uid, T0 + MIN));
    assert_ne!(secret, user.webhook_secret);
    assert_eq!(
        r(s, |c| c.cue_target(&hook)).expect("target").secret,
        secret
    );
    let e = s.read(|c| c.execution_transport("exec_nope"));
    assert!(matches!(e, Err(Error::ExecutionNotFound(_))), "{e:?}");
}

// -- claims and results --

fn an_execution_is_claimed_once(s: &Store) {
    let id = new_cue(
        s,
        LOCAL_OWNER,
        json!({"name": "c", "every": "1m", "payload": {"n": 1}}),
        T0,
    );
    let e = fire_one(s, &id, T0 + MIN);
    let job = claim(s, &e, T0 + MIN + S).expect("claimed");
    assert_eq!(
        (
            job.execution_id.as_str(),
            job.cue_id.as_str(),
            job.cue_name.as_str(),
            job.scheduled_for,
            job.attempt,
            job.triggered_by.as_str(),
        ),
        (e.as_str(), id.as_str(), "c", T0 + MIN, 1, "schedule")
    );
    assert_eq!(job.idempotency_key, format!("{id}:{}", T0 + MIN));
    assert_eq!(
        serde_json::from_str::<Value>(&job.payload).expect("json"),
        json!({"n": 1})
    );
    assert!(claim(s, &e, T0 + MIN + S).is_none());
    assert!(claim(s, &e, T0 + MIN + 2 * S).is_none());
    assert_eq!(r(s, |c| c.pending_cue(&e)), None);
    let ex = exec(s, LOCAL_OWNER, &e);
    assert_has(&ex, json!({"status": "delivering", "attempts": 1}));
    assert_eq!(ex["attempt_log"][0]["status"], "running");
    assert!(claim(s, "exec_nope", T0 + MIN).is_none());
}

/// An execution as the API shows it, less when it last changed.
fn as_shown(s: &Store, exec_id: &str) -> Value {
    let mut v = exec(s, OWNER, exec_id);
    v.as_object_mut().expect("an object").remove("updated_at");
    v
}

fn a_claim_given_back_unsent_leaves_the_execution_as_before_it(s: &Store) {
    let v = json!({"name": "h", "every": "1h", "transport": "webhook", "callback_url": HOOK});
    let id = new_cue(s, OWNER, v, T0);
    let e = fire_one(s, &id, T0 + HOUR);
    let unclaim = |exec: &str, attempt: i64, by: &str, now: Millis| {
        let (exec, by) = (exec.to_string(), by.to_string());
        w(s, move |c| c.unclaim(&exec, attempt, &by, now))
    };
    for attempt in [1, 2] {
        let before = as_shown(s, &e);
        let job = claim_to_send(s, &e, T0 + HOUR + attempt * MIN);
        assert_eq!(job.attempt, attempt);
        assert!(
            !unclaim(&e, attempt, "node-2", T0 + 2 * HOUR),
            "not its claim"
        );
        assert!(
            !unclaim(&e, attempt + 1, "webhook", T0 + 2 * HOUR),
            "not that attempt"
        );
        assert!(unclaim(&e, attempt, "webhook", T0 + 2 * HOUR));
        assert_eq!(as_shown(s, &e), before, "attempt {attempt} given back");
        assert_eq!(r(s, |c| c.pending_cue(&e)), Some(id.clone()));
        assert!(
            !unclaim(&e, attempt, "webhook", T0 + 2 * HOUR),
            "given back once"
        );
        // Claimed again, it is the same attempt; this time it goes out and fails, to be retried.
        let job = claim_to_send(s, &e, T0 + 3 * HOUR);
        assert_eq!(job.attempt, attempt);
        let failed_at = T0 + 3 * HOUR + S;
        assert!(matches!(
            deliver(s, &e, attempt, answered(503), failed_at).expect("recorded"),
            Finished::RetryAt(_)
        ));
        let due = exec(s, OWNER, &e)["next_retry"].as_i64().expect("a retry");
        assert_eq!(retry_due(s, &e, due).as_deref(), Some("webhook"));
    }
    // A delivered attempt is no longer given back.
    let job = claim_to_send(s, &e, T0 + 4 * HOUR);
    deliver(s, &e, job.attempt, answered(200), T0 + 4 * HOUR + S).expect("recorded");
    assert!(!unclaim(&e, job.attempt, "webhook", T0 + 5 * HOUR));
    assert_has(
        &exec(s, OWNER, &e),
        json!({"status": "success", "attempts": 3}),
    );
}

fn a_reported_success_finishes_the_execution_once_and_counts_a_run(s: &Store) {
    let id = new_cue(s, LOCAL_OWNER, json!({"name": "ok", "every": "1m"}), T0);
    let e = fire_one(s, &id, T0 + MIN);
    claim(s, &e, T0 + MIN).expect("claim");
    let outcome = ReportedOutcome {
        success: true,
        result: Some("done".into()),
        external_id: Some("x-1".into()),
        ..Default::default()
    };
    assert_eq!(
        complete(s, &e, 1, outcome, T0 + MIN + 5 * S).expect("complete"),
        Finished::Done(None)
    );
    let ex = exec(s, LOCAL_OWNER, &e);
    assert_has(
        &ex,
        json!({"status": "success", "outcome_state": "reported_success", "attempts": 1}),
    );
    assert_has(
        &ex,
        json!({"outcome/success": true, "outcome/result": "done"}),
    );
    assert_eq!(ex["evidence"]["external_id"], "x-1");
    assert_has(
        &ex,
        json!({"attempt_log/0/status": "success", "attempt_log/0/duration_ms": 5 * S}),
    );
    let cue = cue_of(s, &id);
    assert_has(
        &cue,
        json!({"run_count": 1, "last_run": T0 + MIN + 5 * S, "status": "active"}),
    );
    // Once: the same attempt again, or another one, is a conflict that changes nothing.
    for attempt in [1, 2] {
        let again = error(complete(s, &e, attempt, failure(false), T0 + 2 * MIN));
        assert!(matches!(again, Error::Conflict(_)), "{again:?}");
    }
    assert_eq!(
        exec(s, LOCAL_OWNER, &e)["outcome_state"],
        "reported_success"
    );
    assert_eq!(cue_of(s, &id)["run_count"], 1);
    let e = error(complete(s, "exec_nope", 1, success(), T0 + 2 * MIN));
    assert!(matches!(e, Error::ExecutionNotFound(_)), "{e:?}");
}

fn a_reported_failure_is_final_alerted_and_pauses_a_cue_that_asks(s: &Store) {
    let id = new_cue(s, LOCAL_OWNER, json!({"name": "f", "every": "1m"}), T0);
    let e = fire_one(s, &id, T0 + MIN);
    claim(s, &e, T0 + MIN).expect("claim");
    assert_eq!(
        complete(s, &e, 1, failure(false), T0 + MIN + S).expect("complete"),
        Finished::Done(None)
    );
    let ex = exec(s, LOCAL_OWNER, &e);
    assert_has(
        &ex,
        json!({
            "status": "failed", "outcome_state": "reported_failure", "attempts": 1,
            "next_retry": null,
        }),
    );
    let raised = alerts(s, LOCAL_OWNER, None);
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_has(
        &raised[0],
        json!({"alert_type": "retries_exhausted", "execution_id": e, "cue_id": id}),
    );
    assert_eq!(cue_of(s, &id)["status"], "active");
    let v = json!({"name": "p", "every": "1m", "on_failure_pause": true});
    let pausing = new_cue(s, LOCAL_OWNER, v, T0);
    let e = fire_one(s, &pausing, T0 + MIN);
    claim(s, &e, T0 + MIN).expect("claim");
    complete(s, &e, 1, failure(false), T0 + MIN + S).expect("complete");
    assert_eq!(cue_of(s, &pausing)["status"], "paused");
    assert!(!r(s, |c| c.due_index()).iter().any(|(_, c)| *c == pausing));
}

fn a_failed_run_is_retried_on_the_backoff_schedule_until_its_retries_are_spent(s: &Store) {
    let id = new_cue(s, LOCAL_OWNER, json!({"name": "r", "every": "1h"}), T0);
    let e = fire_one(s, &id, T0 + HOUR);
    let mut now = T0 + HOUR;
    // The default policy: after the first try, 3 retries 1, 5 and 15 minutes apart.
    for (attempt, wait) in [(1, MIN), (2, 5 * MIN), (3, 15 * MIN)] {
        assert_eq!(claim(s, &e, now).expect("claim").attempt, attempt);
        let failed_at = now + S;
        assert_eq!(
            complete(s, &e, attempt, failure(true), failed_at).expect("complete"),
            Finished::RetryAt(failed_at + wait)
        );
        let ex = exec(s, LOCAL_OWNER, &e);
        assert_has(
            &ex,
            json!({"status": "retrying", "next_retry": failed_at + wait}),
        );
        assert!(claim(s, &e, failed_at + wait - 1).is_none());
        assert_eq!(retry_due(s, &e, failed_at + wait - 1), None);
        assert_eq!(retry_due(s, &e, failed_at + wait).as_deref(), Some("local"));
        now = failed_at + wait;
    }
    assert_eq!(claim(s, &e, now).expect("claim").attempt, 4);
    assert_eq!(
        complete(s, &e, 4, failure(true), now + S).expect("complete"),
        Finished::Done(None)
    );
    let ex = exec(s, LOCAL_OWNER, &e);
    assert_has(&ex, json!({"status": "failed", "attempts": 4}));
    let log: Vec<&Value> = ex["attempt_log"].as_array().expect("log").iter().collect();
    let statuses: Vec<&str> = log
        .iter()
        .map(|a| a["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses, ["failed", "failed", "failed", "failed"]);
    assert_eq!(alerts(s, LOCAL_OWNER, Some("retries_exhausted")).len(), 1);
    assert_eq!(cue_of(s, &id)["run_count"], 1);
}

fn a_cue_may_retry_reported_failures_too(s: &Store) {
    let v = json!({
        "name": "rr", "every": "1h",
        "retry": {"max_attempts": 1, "backoff_minutes": [0.5], "retry_reported_failures": true},
    });
    let id = new_cue(s, LOCAL_OWNER, v, T0);
    let e = fire_one(s, &id, T0 + HOUR);
    claim(s, &e, T0 + HOUR).expect("claim");
    assert_eq!(
        complete(s, &e, 1, failure(false), T0 + HOUR + S).expect("complete"),
        Finished::RetryAt(T0 + HOUR + S + 30 * S)
    );
    assert_eq!(
        retry_due(s, &e, T0 + HOUR + 31 * S).as_deref(),
        Some("local")
    );
    claim(s, &e, T0 + HOUR + 31 * S).expect("claim");
    assert_eq!(
        complete(s, &e, 2, failure(false), T0 + HOUR + 32 * S).expect("complete"),
        Finished::Done(None)
    );
    let ex = exec(s, LOCAL_OWNER, &e);
    assert_has(
        &ex,
        json!({"status": "failed", "outcome_state": "reported_failure", "attempts": 2}),
    );
}

fn a_2xx_delivery_succeeds_and_starts_the_outcome_deadline(s: &Store) {
    let v = json!({
        "name": "h", "every": "1m", "transport": "webhook", "callback_url": HOOK,
        "outcome_deadline_seconds": 60,
    });
    let id = new_cue(s, OWNER, v, T0);
    let e = fire_one(s, &id, T0 + MIN);
    let job = claim_to_send(s, &e, T0 + MIN);
    assert_eq!(job.outcome_deadline_at, None);
    assert_eq!(
        deliver(s, &e, 1, answered(200), T0 + MIN + S).expect("delivered"),
        Finished::AwaitOutcome(T0 + MIN + S + 60 * S)
    );
    let ex = exec(s, OWNER, &e);
    assert_has(
        &ex,
        json!({
            "status": "success", "http_status": 200, "delivered_at": T0 + MIN + S,
            "outcome": null,
        }),
    );
    assert_eq!(ex["outcome_deadline_at"], T0 + MIN + S + 60 * S);
    assert_eq!(cue_of(s, &id)["run_count"], 1);
    // Without a deadline a delivery is the end; a 2xx whose body reports a failure fails.
    let v = json!({"name": "p", "every": "1m", "transport": "webhook", "callback_url": HOOK});
    let plain = new_cue(s, OWNER, v, T0);
    let e = fire_one(s, &plain, T0 + MIN);
    claim_to_send(s, &e, T0 + MIN);
    assert_eq!(
        deliver(s, &e, 1, answered(204), T0 + MIN + S).expect("delivered"),
        Finished::Done(None)
    );
    assert_eq!(exec(s, OWNER, &e)["status"], "success");
    let e = fire_one(s, &plain, T0 + 2 * MIN);
    claim_to_send(s, &e, T0 + 2 * MIN);
    let said_no = Attempt {
        inline: Some(failure(false)),
        ..answered(200)
    };
    assert_eq!(
        deliver(s, &e, 1, said_no, T0 + 2 * MIN + S).expect("delivered"),
        Finished::Done(None)
    );
    let ex = exec(s, OWNER, &e);
    assert_has(
        &ex,
        json!({"status": "failed", "outcome_state": "reported_failure", "attempts": 1}),
    );
    assert_eq!(retry_due(s, &e, T0 + HOUR), None);
}

fn a_5xx_or_timed_out_delivery_is_retried_after_the_backoff_or_retry_after(s: &Store) {
    let v = json!({"name": "h", "every": "1h", "transport": "webhook", "callback_url": HOOK});
    let id = new_cue(s, OWNER, v, T0);
    let e = fire_one(s, &id, T0 + HOUR);
    let throttled = Attempt {
        retry_after_ms: Some(20 * MIN),
        ..answered(429)
    };
    let tries = [
        (answered(503), MIN),
        (timed_out(), 5 * MIN),
        // Retry-After beyond the backoff wins.
        (throttled, 20 * MIN),
    ];
    let mut now = T0 + HOUR;
    for (attempt, (answer, wait)) in (1..).zip(tries) {
        assert_eq!(claim_to_send(s, &e, now).attempt, attempt);
        let code = answer.http_status;
        let failed_at = now + S;
        assert_eq!(
            deliver(s, &e, attempt, answer, failed_at).expect("recorded"),
            Finished::RetryAt(failed_at + wait)
        );
        let ex = exec(s, OWNER, &e);
        assert_has(
            &ex,
            json!({"status": "retrying", "next_retry": failed_at + wait, "http_status": code}),
        );
        assert!(ex["error_message"].is_string(), "{ex}");
        assert_eq!(
            retry_due(s, &e, failed_at + wait).as_deref(),
            Some("webhook")
        );
        now = failed_at + wait;
    }
    assert_eq!(claim_to_send(s, &e, now).attempt, 4);
    assert_eq!(
        deliver(s, &e, 4, answered(500), now + S).expect("recorded"),
        Finished::Done(None)
    );
    let ex = exec(s, OWNER, &e);
    assert_has(
        &ex,
        json!({"status": "failed", "attempts": 4, "http_status": 500}),
    );
    let raised = alerts(s, OWNER, None);
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0]["alert_type"], "retries_exhausted");
    // A result for an attempt that is not running is refused.
    let stale = error(deliver(s, &e, 4, answered(200), now + 2 * S));
    assert!(matches!(stale, Error::Conflict(_)), "{stale:?}");
}

fn a_410_delivery_fails_at_once(s: &Store) {
    let v = json!({"name": "h", "every": "1h", "transport": "webhook", "callback_url": HOOK});
    let id = new_cue(s, OWNER, v, T0);
    let e = fire_one(s, &id, T0 + HOUR);
    claim_to_send(s, &e, T0 + HOUR);
    assert_eq!(
        deliver(s, &e, 1, answered(410), T0 + HOUR + S).expect("recorded"),
        Finished::Done(None)
    );
    let ex = exec(s, OWNER, &e);
    assert_has(
        &ex,
        json!({"status": "failed", "attempts": 1, "next_retry": null}),
    );
    assert_eq!(retry_due(s, &e, T0 + 2 * HOUR), None);
}

fn an_outcome_reported_over_the_api_is_recorded_once(s: &Store) {
    let v = json!({
        "name": "h", "every": "1h", "transport": "webhook", "callback_url": HOOK,
        "outcome_deadline_seconds": 600,
    });
    let id = new_cue(s, OWNER, v, T0);
    let e = fire_one(s, &id, T0 + HOUR);
    claim_to_send(s, &e, T0 + HOUR);
    let Finished::AwaitOutcome(deadline) =
        deliver(s, &e, 1, answered(200), T0 + HOUR + S).expect("delivered")
    else {
        panic!("an outcome is awaited");
    };
    let outcome = ReportedOutcome {
        success: true,
        external_id: Some("x-9".into()),
        ..Default::default()
    };
    let (state, chained) = report(s, OWNER, &e, outcome, T0 + HOUR + MIN).expect("reported");
    assert_eq!((state.as_str(), chained), ("reported_success", None));
    let again = error(report(s, OWNER, &e, failure(false), T0 + HOUR + 2 * MIN));
    assert!(
        matches!(&again, Error::Conflict(m) if m == conflict::ALREADY_RECORDED),
        "{again:?}"
    );
    let ex = exec(s, OWNER, &e);
    assert_has(
        &ex,
        json!({"status": "success", "outcome_state": "reported_success", "outcome/success": true}),
    );
    assert_eq!(ex["evidence"]["external_id"], "x-9");
    // The deadline passes without effect: the outcome came.
    assert!(!deadline_due(s, &e, deadline));
    assert_eq!(exec(s, OWNER, &e)["outcome_state"], "reported_success");
}

fn a_failure_reported_after_delivery_fails_the_execution_and_its_one_shot_cue(s: &Store) {
    let v = json!({
        "name": "once", "at": "2026-06-01T12:05:00Z", "transport": "webhook",
        "callback_url": HOOK,
    });
    let id = new_cue(s, OWNER, v, T0);
    let e = fire_one(s, &id, T0 + 5 * MIN);
    claim_to_send(s, &e, T0 + 5 * MIN);
    deliver(s, &e, 1, answered(200), T0 + 5 * MIN + S).expect("delivered");
    assert_eq!(cue_of(s, &id)["status"], "completed");
    let (state, _) = report(s, OWNER, &e, failure(false), T0 + 6 * MIN).expect("reported");
    assert_eq!(state, "reported_failure");
    let ex = exec(s, OWNER, &e);
    assert_has(
        &ex,
        json!({"status": "failed", "outcome_state": "reported_failure"}),
    );
    assert_eq!(cue_of(s, &id)["status"], "failed");
}

fn manual_verification_parks_a_success_until_a_verdict_that_is_final(s: &Store) {
    let v = json!({"name": "v", "every": "1h", "verification_mode": "manual"});
    let id = new_cue(s, LOCAL_OWNER, v, T0);
    let ok = fire_one(s, &id, T0 + HOUR);
    claim(s, &ok, T0 + HOUR).expect("claim");
    complete(s, &ok, 1, success(), T0 + HOUR + S).expect("complete");
    assert_eq!(
        exec(s, LOCAL_OWNER, &ok)["outcome_state"],
        "verification_pending"
    );
    assert_eq!(
        verify(s, &ok, true, None, T0 + HOUR + MIN).expect("verdict"),
        "verified_success"
    );
    let ex = exec(s, LOCAL_OWNER, &ok);
    assert_has(
        &ex,
        json!({"outcome_state": "verified_success", "evidence/validation_state": "valid"}),
    );
    // A verdict is final.
    let again = error(verify(s, &ok, false, Some("no"), T0 + HOUR + 2 * MIN));
    assert!(matches!(again, Error::Conflict(_)), "{again:?}");
    let ok2 = ok.clone();
    let reopen = error(s.write(move |c| c.verification_pending(LOCAL_OWNER, &ok2, T0 + 2 * HOUR)));
    assert!(matches!(reopen, Error::Conflict(_)), "{reopen:?}");
    assert_eq!(
        exec(s, LOCAL_OWNER, &ok)["outcome_state"],
        "verified_success"
    );
    // A reported failure can be confirmed, never turned into a success.
    let bad = fire_one(s, &id, T0 + 2 * HOUR);
    claim(s, &bad, T0 + 2 * HOUR).expect("claim");
    complete(s, &bad, 1, failure(false), T0 + 2 * HOUR + S).expect("complete");
    let e = error(verify(s, &bad, true, None, T0 + 2 * HOUR + MIN));
    assert!(matches!(e, Error::Conflict(_)), "{e:?}");
    // Parked for review first, it still cannot.
    let parked = bad.clone();
    w(s, move |c| {
        c.verification_pending(LOCAL_OWNER, &parked, T0 + 2 * HOUR + MIN)
    });
    assert_eq!(
        exec(s, LOCAL_OWNER, &bad)["outcome_state"],
        "verification_pending"
    );
    let e = error(verify(s, &bad, true, None, T0 + 2 * HOUR + MIN));
    assert!(matches!(e, Error::Conflict(_)), "{e:?}");
    assert_eq!(
        exec(s, LOCAL_OWNER, &bad)["outcome_state"],
        "verification_pending"
    );
    assert_eq!(
        verify(s, &bad, false, Some("wrong"), T0 + 2 * HOUR + MIN).expect("verdict"),
        "verification_failed"
    );
    let summary = exec(s, LOCAL_OWNER, &bad)["evidence"]["summary"].clone();
    assert!(
        summary.as_str().is_some_and(|t| t.contains("wrong")),
        "{summary}"
    );
    // Nothing to verify before an outcome.
    let open = fire_one(s, &id, T0 + 3 * HOUR);
    let e = error(s.write(move |c| c.verification_pending(LOCAL_OWNER, &open, T0 + 3 * HOUR)));
    assert!(
        matches!(&e, Error::Conflict(m) if m == conflict::NO_OUTCOME),
        "{e:?}"
    );
}

fn a_success_without_the_evidence_its_mode_requires_fails_verification(s: &Store) {
    let v = json!({"name": "v", "every": "1h", "verification_mode": "require_external_id"});
    let id = new_cue(s, LOCAL_OWNER, v, T0);
    let bare = fire_one(s, &id, T0 + HOUR);
    claim(s, &bare, T0 + HOUR).expect("claim");
    complete(s, &bare, 1, success(), T0 + HOUR + S).expect("complete");
    let ex = exec(s, LOCAL_OWNER, &bare);
    assert_has(
        &ex,
        json!({"status": "success", "outcome_state": "verification_failed"}),
    );
    assert_eq!(alerts(s, LOCAL_OWNER, Some("verification_failed")).len(), 1);
    let proven = fire_one(s, &id, T0 + 2 * HOUR);
    claim(s, &proven, T0 + 2 * HOUR).expect("claim");
    let outcome = ReportedOutcome {
        external_id: Some("x-1".into()),
        ..success()
    };
    complete(s, &proven, 1, outcome, T0 + 2 * HOUR + S).expect("complete");
    assert_eq!(
        exec(s, LOCAL_OWNER, &proven)["outcome_state"],
        "verified_success"
    );
}

fn evidence_appended_after_the_outcome_adds_to_what_was_recorded(s: &Store) {
    let id = new_cue(s, LOCAL_OWNER, json!({"name": "ev", "every": "1h"}), T0);
    let e = fire_one(s, &id, T0 + HOUR);
    claim(s, &e, T0 + HOUR).expect("claim");
    let append = |ev: Evidence, now: Millis| {
        let e = e.clone();
        s.write(move |c| c.append_evidence(LOCAL_OWNER, &e, &ev, now))
    };
    let early = Evidence {
        summary: Some("too soon".into()),
        ..Default::default()
    };
    let refused = error(append(early, T0 + HOUR));
    assert!(
        matches!(&refused, Error::Conflict(m) if m == conflict::NO_OUTCOME),
        "{refused:?}"
    );
    let outcome = ReportedOutcome {
        artifacts: Some(json!([{"n": 1}])),
        summary: Some("first".into()),
        ..success()
    };
    complete(s, &e, 1, outcome, T0 + HOUR + S).expect("complete");
    let more = Evidence {
        external_id: Some("x-2".into()),
        artifacts: Some(json!([{"n": 2}])),
        metadata: Some(json!({"a": 1})),
        ..Default::default()
    };
    assert_eq!(
        append(more, T0 + HOUR + MIN).expect("appended"),
        "reported_success"
    );
    let again = Evidence {
        metadata: Some(json!({"b": 2})),
        ..Default::default()
    };
    append(again, T0 + HOUR + 2 * MIN).expect("appended");
    let ev = exec(s, LOCAL_OWNER, &e)["evidence"].clone();
    assert_has(
        &ev,
        json!({
            "external_id": "x-2", "summary": "first", "artifacts": [{"n": 1}, {"n": 2}],
            "metadata": {"a": 1, "b": 2},
        }),
    );
}

fn outcome_counts_count_committed_changes_only(s: &Store) {
    let counts =
        |s: &Store| -> HashMap<String, u64> { w(s, |c| c.outcome_counts()).into_iter().collect() };
    let id = new_cue(s, LOCAL_OWNER, json!({"name": "n", "every": "1h"}), T0);
    let e = fire_one(s, &id, T0 + HOUR);
    claim(s, &e, T0 + HOUR).expect("claim");
    let before = counts(s);
    let ok = |m: &HashMap<String, u64>| m.get("reported_success").copied().unwrap_or(0);
    let e2 = e.clone();
    let undone = s.write(move |c| {
        c.complete(&e2, 1, &success(), T0 + HOUR + S)?;
        Err::<(), _>(Error::Conflict("changed its mind".into()))
    });
    assert!(matches!(undone, Err(Error::Conflict(_))), "{undone:?}");
    assert_eq!(counts(s), before);
    assert_eq!(exec(s, LOCAL_OWNER, &e)["status"], "delivering");
    complete(s, &e, 1, success(), T0 + HOUR + 2 * S).expect("complete");
    let after = counts(s);
    assert_eq!(ok(&after), ok(&before) + 1);
    let others = |m: &HashMap<String, u64>| -> u64 {
        m.iter()
            .filter(|(k, _)| *k != "reported_success")
            .map(|(_, n)| n)
            .sum()
    };
    assert_eq!(others(&after), others(&before));
}

fn recovery_interrupts_the_runs_left_in_flight_and_lists_the_work_to_resume(s: &Store) {
    // A local run in flight, a local run waiting for its retry, a delivered webhook awaiting its
    // outcome, a webhook execution waiting to be sent and a remote worker's claim.
    let running = new_cue(s, LOCAL_OWNER, json!({"name": "run", "every": "1h"}), T0);
    let retrying = new_cue(s, LOCAL_OWNER, json!({"name": "retry", "every": "1h"}), T0);
    let v = json!({
        "name": "hook", "every": "1h", "transport": "webhook", "callback_url": HOOK,
        "outcome_deadline_seconds": 600,
    });
    let hook = new_cue(s, LOCAL_OWNER, v, T0);
    let v = json!({"name": "send", "every": "1h", "transport": "webhook", "callback_url": HOOK});
    let unsent = new_cue(s, LOCAL_OWNER, v, T0);
    let v = json!({"name": "w", "every": "1h", "transport": "worker"});
    let worker = new_cue(s, OWNER, v, T0);
    let t = T0 + HOUR;
    let a = fire_one(s, &running, t);
    claim(s, &a, t).expect("claim");
    let b = fire_one(s, &retrying, t);
    claim(s, &b, t).expect("claim");
    let Finished::RetryAt(retry_at) = complete(s, &b, 1, failure(true), t + S).expect("failed")
    else {
        panic!("a retry is due");
    };
    let h = fire_one(s, &hook, t);
    claim_to_send(s, &h, t);
    let Finished::AwaitOutcome(deadline) = deliver(s, &h, 1, answered(200), t + S).expect("sent")
    else {
        panic!("an outcome is awaited");
    };
    let u = fire_one(s, &unsent, t);
    let wk = fire_one(s, &worker, t);
    let held = worker_claim(s, Some(&wk), "w1", t)
        .expect("claim")
        .expect("claimed");
    let got = w(s, move |c| {
        c.recover(t + MIN, &cueapi::store::cluster::Scope::everything())
    });
    assert_eq!(got.interrupted, 1, "{got:?}");
    let mut pending = got.pending.clone();
    pending.sort();
    let mut want = vec![
        (a.clone(), "local".to_string()),
        (u.clone(), "webhook".to_string()),
    ];
    want.sort();
    assert_eq!(pending, want);
    assert_eq!(got.retries, vec![(retry_at, b.clone())]);
    assert_eq!(got.deadlines, vec![(deadline, h.clone())]);
    assert_eq!(got.leases, vec![(held.lease_expires_at, wk.clone())]);
    assert!(got.claim_windows.is_empty(), "{got:?}");
    // The interrupted run waits for a claim again; the worker's claim is its lease's business.
    let ex = exec(s, LOCAL_OWNER, &a);
    assert_eq!(ex["status"], "pending");
    assert_eq!(ex["attempt_log"][0]["status"], "interrupted");
    assert_eq!(claim(s, &a, t + MIN).expect("claim").attempt, 2);
    assert_eq!(exec(s, OWNER, &wk)["status"], "delivering");
    assert_eq!(exec(s, LOCAL_OWNER, &b)["status"], "retrying");
}

fn a_node_taking_over_partitions_interrupts_only_their_runs_of_nodes_not_alive(s: &Store) {
    use cueapi::store::cluster::{partition, Scope};
    // Cues until two fall in different partitions.
    let mut cues: Vec<String> = Vec::new();
    for i in 0.. {
        let id = new_cue(
            s,
            LOCAL_OWNER,
            json!({"name": format!("c{i}"), "every": "1h"}),
            T0,
        );
        if cues.iter().all(|c| partition(c) != partition(&id)) {
            cues.push(id);
        }
        if cues.len() == 2 {
            break;
        }
    }
    let (taken, kept) = (cues[0].clone(), cues[1].clone());
    let t = T0 + HOUR;
    // In the partition taken over: one run of the dead node, one of a live node. Elsewhere: a run
    // of the dead node, which the node holding that partition will see to.
    let by = |exec: &str, node: &'static str| {
        let exec = exec.to_string();
        w(s, move |c| c.claim(&exec, node, t, LEASE, true)).expect("claimed");
    };
    let dead_here = fire_one(s, &taken, t);
    by(&dead_here, "dead");
    let v = json!({"name": "again", "every": "1h"});
    let twin = loop {
        // Another cue in the taken partition, for the live node's run.
        let id = new_cue(s, LOCAL_OWNER, v.clone(), T0);
        if partition(&id) == partition(&taken) {
            break id;
        }
        w(s, {
            let id = id.clone();
            move |c| c.delete_cue(&id)
        });
    };
    let alive_here = fire_one(s, &twin, t);
    by(&alive_here, "alive");
    let dead_elsewhere = fire_one(s, &kept, t);
    by(&dead_elsewhere, "dead");
    let scope = Scope {
        parts: 1u64 << partition(&taken),
        live: vec!["alive".to_string(), "me".to_string()],
    };
    let got = w(s, move |c| c.recover(t + MIN, &scope));
    assert_eq!(got.interrupted, 1, "{got:?}");
    assert_eq!(got.pending, vec![(dead_here.clone(), "local".to_string())]);
    let status = |e: &str| exec(s, LOCAL_OWNER, e)["status"].clone();
    assert_eq!(status(&dead_here), "pending");
    let ex = exec(s, LOCAL_OWNER, &dead_here);
    assert!(
        ex["attempt_log"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("lost the database")),
        "{ex}"
    );
    assert_eq!(status(&alive_here), "delivering", "its node is alive");
    assert_eq!(status(&dead_elsewhere), "delivering", "not in the scope");
}

fn an_interrupted_run_with_no_retry_left_fails_its_one_shot_cue(s: &Store) {
    let v = json!({"name": "once", "at": "2026-06-01T12:05:00Z", "retry": {"max_attempts": 0}});
    let id = new_cue(s, LOCAL_OWNER, v, T0);
    let e = fire_one(s, &id, T0 + 5 * MIN);
    claim(s, &e, T0 + 5 * MIN).expect("claim");
    let got = w(s, |c| {
        c.recover(T0 + 6 * MIN, &cueapi::store::cluster::Scope::everything())
    });
    assert_eq!(got.interrupted, 1);
    assert!(got.pending.is_empty(), "{got:?}");
    let ex = exec(s, LOCAL_OWNER, &e);
    assert_has(
        &ex,
        json!({"status": "failed", "attempt_log/0/status": "interrupted"}),
    );
    assert_eq!(alerts(s, LOCAL_OWNER, Some("retries_exhausted")).len(), 1);
    // Its only run is over: the one-shot cue failed, like any one-shot whose run failed for good.
    let cue = cue_of(s, &id);
    assert_has(
        &cue,
        json!({"status": "failed", "run_count": 1, "last_run": T0 + 6 * MIN}),
    );
}

fn an_outcome_not_reported_by_its_deadline_times_out_and_alerts(s: &Store) {
    let v = json!({"name": "d", "every": "1h", "outcome_deadline_seconds": 30});
    let id = new_cue(s, LOCAL_OWNER, v, T0);
    let e = fire_one(s, &id, T0 + HOUR);
    let job = claim(s, &e, T0 + HOUR).expect("claim");
    let deadline = T0 + HOUR + 30 * S;
    assert_eq!(job.outcome_deadline_at, Some(deadline));
    assert!(!deadline_due(s, &e, deadline - 1));
    assert!(deadline_due(s, &e, deadline));
    let ex = exec(s, LOCAL_OWNER, &e);
    assert_has(
        &ex,
        json!({
            "outcome_state": "outcome_timeout", "outcome_timeout_at": deadline,
            "status": "delivering",
        }),
    );
    assert_eq!(alerts(s, LOCAL_OWNER, Some("outcome_timeout")).len(), 1);
    assert!(!deadline_due(s, &e, deadline + S));
    // A late report is kept, and the execution stays timed out.
    complete(s, &e, 1, success(), deadline + MIN).expect("complete");
    let ex = exec(s, LOCAL_OWNER, &e);
    assert_has(
        &ex,
        json!({"status": "success", "outcome_state": "outcome_timeout", "outcome/success": true}),
    );
    assert_eq!(alerts(s, LOCAL_OWNER, Some("outcome_timeout")).len(), 1);
}

// -- workers --

fn a_new_worker_is_watched_and_one_silent_past_the_timeout_is_reported_once(s: &Store) {
    let timeout = MIN;
    assert!(heartbeat(s, "w1", Some(&["t"]), T0));
    assert!(!heartbeat(s, "w1", None, T0 + S));
    let listed = r(s, |c| c.workers(OWNER, T0 + S, timeout));
    assert_eq!(listed.len(), 1);
    assert_has(
        &listed[0],
        json!({"worker_id": "w1", "handlers": ["t"], "claims": 0}),
    );
    let watched = vec![(OWNER.to_string(), "w1".to_string())];
    assert_eq!(r(s, |c| c.watched_workers()), watched);
    let silence = |now: Millis| w(s, move |c| c.silence_due(OWNER, "w1", now, timeout, T0));
    assert_eq!(silence(T0 + 30 * S), Silence::HeardUntil(T0 + S + timeout));
    assert_eq!(silence(T0 + S + timeout), Silence::Over);
    assert_eq!(alerts(s, OWNER, Some("worker_offline")).len(), 1);
    assert!(r(s, |c| c.watched_workers()).is_empty());
    assert_eq!(silence(T0 + 5 * MIN), Silence::Over);
    assert_eq!(alerts(s, OWNER, Some("worker_offline")).len(), 1);
    // Heard from again: watched again, and one recovered notice.
    assert!(heartbeat(s, "w1", None, T0 + 6 * MIN));
    assert_eq!(r(s, |c| c.watched_workers()), watched);
    assert_eq!(alerts(s, OWNER, Some("recovered")).len(), 1);
    let unknown = w(s, |c| c.silence_due(OWNER, "nobody", T0 + HOUR, MIN, T0));
    assert_eq!(unknown, Silence::Over);
}

fn worker_cue(s: &Store, name: &str, extra: Value) -> String {
    let mut v =
        json!({"name": name, "every": "1h", "transport": "worker", "payload": {"task": "t"}});
    if let (Some(m), Some(more)) = (v.as_object_mut(), extra.as_object()) {
        m.extend(more.clone());
    }
    new_cue(s, OWNER, v, T0)
}

fn a_worker_claim_is_exclusive(s: &Store) {
    let id = worker_cue(s, "w", json!({}));
    let e = fire_one(s, &id, T0 + HOUR);
    let t = T0 + HOUR;
    let filter = ClaimFilter {
        limit: 10,
        live_ms: MIN,
        ..Default::default()
    };
    let open = r(s, |c| c.claimable(OWNER, &filter, t));
    assert_eq!(open.len(), 1, "{open:?}");
    assert_has(
        &open[0],
        json!({"execution_id": e, "task": "t", "attempt": 1}),
    );
    let a = worker_claim(s, None, "a", t)
        .expect("claim")
        .expect("claimed");
    assert_eq!(
        (
            a.job.execution_id.as_str(),
            a.job.attempt,
            a.task.as_deref(),
            a.lease_expires_at
        ),
        (e.as_str(), 1, Some("t"), t + LEASE)
    );
    assert!(worker_claim(s, None, "b", t + S).expect("claim").is_none());
    let named = error(worker_claim(s, Some(&e), "b", t + S));
    assert!(matches!(named, Error::Conflict(_)), "{named:?}");
    let theirs = error(s.write({
        let e = e.clone();
        move |c| c.claim_for_worker(OTHER, Some(&e), "c", None, t + S, LEASE)
    }));
    assert!(matches!(theirs, Error::ExecutionNotFound(_)), "{theirs:?}");
    assert!(r(s, |c| c.claimable(OWNER, &filter, t + S)).is_empty());
    let ex = exec(s, OWNER, &e);
    assert_has(
        &ex,
        json!({"status": "delivering", "claimed_by_worker": "a", "attempts": 1}),
    );
}

fn worker_claims_raced_from_six_threads_never_share_an_execution(s: &Store) {
    let id = worker_cue(s, "w", json!({}));
    let mut made: Vec<String> = (0..3).map(|i| fire_now(s, &id, T0 + i)).collect();
    let got: Vec<Option<WorkerClaim>> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..6)
            .map(|i| scope.spawn(move || worker_claim(s, None, &format!("w{i}"), T0 + S)))
            .collect();
        racers
            .into_iter()
            .map(|h| h.join().expect("racer").expect("claim"))
            .collect()
    });
    let mut claimed: Vec<String> = got
        .iter()
        .flatten()
        .map(|c| c.job.execution_id.clone())
        .collect();
    claimed.sort();
    made.sort();
    assert_eq!(claimed, made, "{got:?}");
    for c in got.iter().flatten() {
        assert_eq!(c.job.attempt, 1);
    }
}

fn only_the_holder_extends_its_lease(s: &Store) {
    let id = worker_cue(s, "w", json!({}));
    let e = fire_one(s, &id, T0 + HOUR);
    let t = T0 + HOUR;
    worker_claim(s, Some(&e), "a", t)
        .expect("claim")
        .expect("claimed");
    let extend = |worker: Option<&str>, now: Millis| {
        let (e, worker) = (e.clone(), worker.map(str::to_string));
        s.write(move |c| c.extend_lease(OWNER, &e, worker.as_deref(), now, LEASE))
    };
    assert_eq!(
        extend(Some("a"), t + 10 * S).expect("extended"),
        t + 10 * S + LEASE
    );
    let e2 = error(extend(Some("b"), t + 11 * S));
    assert!(matches!(e2, Error::NotClaimHolder(_)), "{e2:?}");
    assert_eq!(
        extend(None, t + 20 * S).expect("extended"),
        t + 20 * S + LEASE
    );
    let check = |now: Millis| {
        let e = e.clone();
        w(s, move |c| c.lease_due(&e, now, MIN, T0))
    };
    assert_eq!(
        check(t + 20 * S + LEASE - 1),
        LeaseCheck::HoldsUntil(t + 20 * S + LEASE)
    );
    let unclaimed = fire_now(s, &id, t + S);
    let e3 = error(s.write(move |c| c.extend_lease(OWNER, &unclaimed, None, t + 2 * S, LEASE)));
    assert!(matches!(e3, Error::Conflict(_)), "{e3:?}");
    let e4 = error(s.write(move |c| c.extend_lease(OWNER, "exec_nope", None, t, LEASE)));
    assert!(matches!(e4, Error::ExecutionNotFound(_)), "{e4:?}");
}

fn a_workers_report_finishes_its_claim_once(s: &Store) {
    let id = worker_cue(s, "w", json!({}));
    let t = T0 + HOUR;
    let worker_report = |e: &str, o: ReportedOutcome, now: Millis| {
        let e = e.to_string();
        s.write(move |c| c.worker_report(OWNER, &e, &o, now))
    };
    let e = fire_one(s, &id, t);
    worker_claim(s, Some(&e), "a", t)
        .expect("claim")
        .expect("claimed");
    let done = worker_report(&e, success(), t + S)
        .expect("report")
        .expect("a worker's");
    assert_eq!(done.finished, Finished::Done(None));
    assert_eq!(
        (
            done.status.as_str(),
            done.outcome_state.as_deref(),
            done.next_retry
        ),
        ("success", Some("reported_success"), None)
    );
    let again = error(worker_report(&e, success(), t + 2 * S));
    assert!(
        matches!(&again, Error::Conflict(m) if m == conflict::ALREADY_RECORDED),
        "{again:?}"
    );
    // A failed run follows the retry policy.
    let f = fire_now(s, &id, t + 2 * S);
    worker_claim(s, Some(&f), "a", t + 2 * S)
        .expect("claim")
        .expect("claimed");
    let retried = worker_report(&f, failure(true), t + 3 * S)
        .expect("report")
        .expect("a worker's");
    assert_eq!(retried.finished, Finished::RetryAt(t + 3 * S + MIN));
    assert_eq!(
        (retried.status.as_str(), retried.next_retry),
        ("retrying", Some(t + 3 * S + MIN))
    );
    // A report on a due execution nobody claimed is kept as an attempt of its own.
    let unclaimed = fire_now(s, &id, t + 4 * S);
    let kept = worker_report(&unclaimed, success(), t + 5 * S)
        .expect("report")
        .expect("a worker's");
    assert_eq!(kept.status, "success");
    let ex = exec(s, OWNER, &unclaimed);
    assert_has(
        &ex,
        json!({"attempts": 1, "attempt_log/0/claimed_by": null}),
    );
    // Not a worker cue's execution: recorded another way.
    let local = new_cue(s, OWNER, json!({"name": "l", "every": "1h"}), T0);
    let l = fire_now(s, &local, t);
    assert!(worker_report(&l, success(), t + S)
        .expect("report")
        .is_none());
}

fn deleting_a_worker_puts_its_claims_back_in_the_queue(s: &Store) {
    let id = worker_cue(s, "w", json!({}));
    let t = T0 + HOUR;
    let e = fire_one(s, &id, t);
    heartbeat(s, "a", None, t);
    worker_claim(s, Some(&e), "a", t)
        .expect("claim")
        .expect("claimed");
    assert_eq!(r(s, |c| c.workers(OWNER, t, MIN))[0]["claims"], 1);
    let released = w(s, move |c| c.delete_worker(OWNER, "a", t + S));
    assert_eq!(released, vec![e.clone()]);
    let ex = exec(s, OWNER, &e);
    assert_has(
        &ex,
        json!({"status": "pending", "attempt_log/0/status": "abandoned"}),
    );
    assert!(r(s, |c| c.workers(OWNER, t + S, MIN)).is_empty());
    let b = worker_claim(s, None, "b", t + 2 * S)
        .expect("claim")
        .expect("claimed");
    assert_eq!(
        (b.job.execution_id.as_str(), b.job.attempt),
        (e.as_str(), 2)
    );
    let gone = error(s.write(move |c| c.delete_worker(OWNER, "a", t + 3 * S)));
    assert!(matches!(gone, Error::WorkerNotFound(_)), "{gone:?}");
}

fn a_claim_is_released_once_its_lease_expired_and_its_worker_fell_silent(s: &Store) {
    let id = worker_cue(s, "w", json!({}));
    let t = T0 + HOUR;
    let timeout = MIN;
    let e = fire_one(s, &id, t);
    heartbeat(s, "a", None, t);
    worker_claim(s, Some(&e), "a", t)
        .expect("claim")
        .expect("claimed");
    let check = |e: &str, now: Millis| {
        let e = e.to_string();
        w(s, move |c| c.lease_due(&e, now, timeout, T0))
    };
    assert_eq!(check(&e, t + 10 * S), LeaseCheck::HoldsUntil(t + LEASE));
    // The lease ran out, but the worker was heard from within the timeout.
    assert_eq!(check(&e, t + LEASE), LeaseCheck::HoldsUntil(t + timeout));
    heartbeat(s, "a", None, t + 50 * S);
    assert_eq!(
        check(&e, t + timeout),
        LeaseCheck::HoldsUntil(t + 50 * S + timeout)
    );
    assert_eq!(check(&e, t + 50 * S + timeout), LeaseCheck::Released(true));
    let ex = exec(s, OWNER, &e);
    assert_has(
        &ex,
        json!({"status": "pending", "attempt_log/0/status": "abandoned"}),
    );
    assert_eq!(check(&e, t + 2 * timeout), LeaseCheck::Over);
    let again = worker_claim(s, None, "b", t + 2 * timeout)
        .expect("claim")
        .expect("claimed");
    assert_eq!(again.job.attempt, 2);
    // With no retry left, a released claim fails its execution.
    let last = worker_cue(s, "last", json!({"retry": {"max_attempts": 0}}));
    let f = fire_one(s, &last, t);
    worker_claim(s, Some(&f), "gone", t)
        .expect("claim")
        .expect("claimed");
    assert_eq!(check(&f, t + 2 * timeout), LeaseCheck::Released(false));
    assert_eq!(exec(s, OWNER, &f)["status"], "failed");
    assert_eq!(cue_of(s, &last)["run_count"], 1);
    let exhausted = alerts(s, OWNER, Some("retries_exhausted"));
    assert_eq!(exhausted.len(), 1);
    assert_eq!(exhausted[0]["execution_id"], f.as_str());
}

fn an_execution_nobody_claims_within_its_window_is_missed(s: &Store) {
    let id = worker_cue(s, "w", json!({"claim_timeout_seconds": 60}));
    let t = T0 + HOUR;
    let e = fire_one(s, &id, t);
    assert_eq!(
        r(s, |c| c.claim_deadlines(std::slice::from_ref(&e))),
        vec![(t + MIN, e.clone())]
    );
    let window = |now: Millis| {
        let e = e.clone();
        w(s, move |c| c.claim_window_due(&e, now))
    };
    assert!(!window(t + MIN - 1));
    assert!(window(t + MIN));
    let ex = exec(s, OWNER, &e);
    assert_eq!(ex["status"], "missed");
    assert_eq!(alerts(s, OWNER, Some("missed")).len(), 1);
    assert!(!window(t + 2 * MIN));
    assert!(r(s, |c| c.claim_deadlines(std::slice::from_ref(&e))).is_empty());
    assert!(worker_claim(s, None, "late", t + 2 * MIN)
        .expect("claim")
        .is_none());
    // A claimed execution has no window any more.
    let f = fire_one(s, &id, t + HOUR);
    worker_claim(s, Some(&f), "a", t + HOUR)
        .expect("claim")
        .expect("claimed");
    assert!(r(s, |c| c.claim_deadlines(std::slice::from_ref(&f))).is_empty());
    let f2 = f.clone();
    assert!(!w(s, move |c| c.claim_window_due(&f2, t + 2 * HOUR)));
    assert_eq!(exec(s, OWNER, &f)["status"], "delivering");
}

// -- alerts, notifications and users --

fn a_final_failure_alerts_once_per_incident_and_queues_its_notifications(s: &Store) {
    let (user, _) = w(s, |c| c.create_user("ops@example.com", T0));
    let owner = user.id.clone();
    let hook = "https://example.com/alerts";
    let (uid, u) = (owner.clone(), hook.to_string());
    w(s, move |c| c.set_alert_webhook(&uid, Some(&u), T0));
    let uid = owner.clone();
    let (url, secret) = w(s, move |c| c.alert_webhook(&uid, T0));
    assert_eq!(url.as_deref(), Some(hook));
    let id = new_cue(s, &owner, json!({"name": "n", "every": "10m"}), T0);
    let fail = |tick: Millis| {
        let e = fire_one(s, &id, tick);
        claim(s, &e, tick).expect("claim");
        complete(s, &e, 1, failure(false), tick + S).expect("complete");
        e
    };
    let t = T0 + 10 * MIN;
    let first = fail(t);
    let due = |now: Millis| r(s, |c| c.due_notifications(now, 10));
    let (mut list, next) = due(t + S);
    assert_eq!(next, None);
    list.sort_by(|a, b| a.channel.cmp(&b.channel));
    let got: Vec<(&str, &str)> = list
        .iter()
        .map(|d| (d.channel.as_str(), d.target.as_str()))
        .collect();
    assert_eq!(got, [("alert_webhook", hook), ("email", "ops@example.com")]);
    assert_eq!(list[0].secret.as_deref(), Some(secret.as_str()));
    for d in &list {
        assert_eq!(
            (
                &d.alert["alert_type"],
                &d.alert["execution_id"],
                d.cue_name.as_deref()
            ),
            (&json!("retries_exhausted"), &json!(first), Some("n"))
        );
    }
    // A failed send is due again when its retry comes; a sent one is not.
    let (hook_id, mail_id) = (list[0].id.clone(), list[1].id.clone());
    let sent = Sent::Failed {
        error: "connection refused".into(),
        retry_at: Some(t + MIN),
    };
    w(s, move |c| c.record_sent(&hook_id, &sent, t + 2 * S));
    let mail = mail_id.clone();
    w(s, move |c| {
        c.record_sent(&mail, &Sent::Delivered, t + 2 * S)
    });
    let (list, next) = due(t + 3 * S);
    assert!(list.is_empty(), "{list:?}");
    assert_eq!(next, Some(t + MIN));
    let (list, _) = due(t + MIN);
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].channel.as_str(), list[0].attempts),
        ("alert_webhook", 1)
    );
    let retried = list[0].id.clone();
    w(s, move |c| {
        c.record_sent(&retried, &Sent::Delivered, t + MIN)
    });
    assert!(due(t + 2 * MIN).0.is_empty());
    // The same trouble within the re-alert interval counts on the open alert and notifies nobody.
    fail(t + 10 * MIN);
    let raised = alerts(s, &owner, None);
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0]["occurrences"], 2);
    assert!(due(t + 11 * MIN).0.is_empty());
    // Acknowledged by its owner only.
    let alert_id = raised[0]["id"].as_str().expect("id").to_string();
    let (uid, aid) = (owner.clone(), alert_id.clone());
    let acked = w(s, move |c| c.acknowledge_alert(&uid, &aid, t + 15 * MIN));
    assert_eq!(acked["acknowledged"], true);
    let sends: Vec<&str> = acked["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .map(|n| n["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(sends, ["sent", "sent"]);
    let by = |acknowledged: bool| {
        let f = AlertFilter {
            acknowledged: Some(acknowledged),
            limit: 10,
            ..Default::default()
        };
        r(s, |c| c.alerts(&owner, &f)).1
    };
    assert_eq!((by(true), by(false)), (1, 0));
    let aid = alert_id.clone();
    let e = error(s.write(move |c| c.acknowledge_alert(OTHER, &aid, t + 15 * MIN)));
    assert!(matches!(e, Error::AlertNotFound(_)), "{e:?}");
    // A success closes the incident with one recovered notice.
    let e = fire_one(s, &id, t + 20 * MIN);
    claim(s, &e, t + 20 * MIN).expect("claim");
    complete(s, &e, 1, success(), t + 20 * MIN + S).expect("complete");
    let raised = alerts(s, &owner, None);
    assert_eq!(raised.len(), 2);
    assert_eq!(raised[0]["alert_type"], "recovered");
    assert!(raised[1]["resolved_at"].is_i64(), "{raised:?}");
    let (list, _) = due(t + 20 * MIN + S);
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|d| d.alert["alert_type"] == "recovered"));
    let (kinds, sends) = r(s, |c| c.alert_counts());
    assert_eq!(
        kinds,
        [
            ("recovered".to_string(), 1),
            ("retries_exhausted".to_string(), 1)
        ]
    );
    let sends: Vec<(&str, &str, i64)> = sends
        .iter()
        .map(|(c, st, n)| (c.as_str(), st.as_str(), *n))
        .collect();
    assert_eq!(
        sends,
        [
            ("alert_webhook", "pending", 1),
            ("alert_webhook", "sent", 1),
            ("email", "pending", 1),
            ("email", "sent", 1),
        ]
    );
    assert_eq!(r(s, |c| c.alert_webhook_url(&owner)).as_deref(), Some(hook));
}

fn an_unverified_address_is_never_emailed_and_the_realert_interval_is_a_setting(s: &Store) {
    let (user, _) = w(s, |c| c.create_user("anyone@example.com", T0));
    let uid = user.id.clone();
    w(s, move |c| c.mark_unverified(&uid));
    w(s, |c| c.set_realert_ms(0));
    let id = new_cue(s, &user.id, json!({"name": "n", "every": "10m"}), T0);
    for tick in [T0 + 10 * MIN, T0 + 20 * MIN] {
        let e = fire_one(s, &id, tick);
        claim(s, &e, tick).expect("claim");
        complete(s, &e, 1, failure(false), tick + S).expect("complete");
    }
    // No re-alert interval: each failure is an alert of its own.
    let raised = alerts(s, &user.id, Some("retries_exhausted"));
    assert_eq!(raised.len(), 2, "{raised:?}");
    // Nothing to send; the email each would have been is recorded as skipped, with the reason.
    assert_eq!(r(s, |c| c.due_notifications(T0 + HOUR, 10)).0.len(), 0);
    let shown = r(s, |c| {
        c.alert(&user.id, raised[0]["id"].as_str().unwrap_or(""))
    });
    let sends = shown["notifications"].as_array().expect("notifications");
    assert_eq!(sends.len(), 1);
    assert_has(&sends[0], json!({"channel": "email", "status": "skipped"}));
    assert!(sends[0]["last_error"].is_string(), "{shown}");
}

fn a_user_is_found_by_its_key_until_the_key_is_regenerated(s: &Store) {
    assert_eq!(r(s, |c| c.user_count()), 0);
    let (ann, key) = w(s, |c| c.create_user("Ann@Example.COM", T0));
    assert_eq!(ann.email, "Ann@example.com");
    assert!(
        key.starts_with("cue_sk_") && key.starts_with(&ann.api_key_prefix),
        "{key}"
    );
    assert!(ann.webhook_secret.starts_with("whsec_"));
    let found = r(s, |c| c.user_by_key(&key)).expect("found");
    assert_eq!(
        (found.id.as_str(), found.email.as_str()),
        (ann.id.as_str(), "Ann@example.com")
    );
    assert!(r(s, |c| c
        .user_by_key("cue_sk_00000000000000000000000000000000"))
    .is_none());
    let twice = error(s.write(|c| c.create_user("Ann@example.com", T0 + S)));
    assert!(matches!(twice, Error::Conflict(_)), "{twice:?}");
    let bad = error(s.write(|c| c.create_user("not an address", T0 + S)));
    assert!(
        matches!(bad, Error::Invalid { field: "email", .. }),
        "{bad:?}"
    );
    let uid = ann.id.clone();
    let new_key = w(s, move |c| c.regenerate_key(&uid, T0 + MIN));
    assert_ne!(new_key, key);
    assert!(r(s, |c| c.user_by_key(&key)).is_none());
    assert_eq!(r(s, |c| c.user_by_key(&new_key)).expect("found").id, ann.id);
    let (bob, _) = w(s, |c| c.create_user("bob@example.com", T0 + 2 * MIN));
    new_cue(
        s,
        LOCAL_OWNER,
        json!({"name": "embedded", "every": "1h"}),
        T0,
    );
    new_cue(s, &bob.id, json!({"name": "bobs", "every": "1h"}), T0);
    assert_eq!(r(s, |c| c.user_count()), 2);
    assert_eq!(
        r(s, |c| c.owners()),
        vec![
            (ann.id.clone(), Some("Ann@example.com".to_string())),
            (bob.id.clone(), Some("bob@example.com".to_string())),
            (LOCAL_OWNER.to_string(), None),
        ]
    );
}

fn operations_figures_count_what_is_in_flight_and_what_was_done(s: &Store) {
    let (user, _) = w(s, |c| c.create_user("figures@example.com", T0));
    let owner = user.id.as_str();
    let local = new_cue(s, owner, json!({"name": "l", "every": "1h"}), T0);
    let v = json!({"name": "h", "every": "1h", "transport": "webhook", "callback_url": HOOK});
    let hook = new_cue(s, owner, v, T0);
    let v = json!({"name": "w", "every": "1h", "transport": "worker"});
    let worker = new_cue(s, owner, v, T0);
    let t = T0 + HOUR;
    let done = fire_one(s, &local, t);
    claim(s, &done, t).expect("claim");
    complete(s, &done, 1, success(), t + 5 * S).expect("complete");
    fire_one(s, &local, t + HOUR);
    let h = fire_one(s, &hook, t);
    claim_to_send(s, &h, t);
    deliver(s, &h, 1, answered(503), t + S).expect("recorded");
    let wk = fire_one(s, &worker, t);
    let (o, e) = (owner.to_string(), wk.clone());
    w(s, move |c| {
        c.claim_for_worker(&o, Some(&e), "w1", None, t, LEASE)
    })
    .expect("claimed");
    let open = r(s, |c| c.open_executions());
    let open: Vec<(&str, &str, i64)> = open
        .iter()
        .map(|(t, st, n)| (t.as_str(), st.as_str(), *n))
        .collect();
    assert_eq!(
        open,
        [
            ("local", "pending", 1),
            ("webhook", "retrying", 1),
            ("worker", "delivering", 1),
        ]
    );
    let stats = r(s, |c| c.cue_stats(&local, T0));
    assert_has(
        &stats,
        json!({"total": 2, "counts": {"success": 1, "pending": 1}, "success_rate": 1.0}),
    );
    assert_eq!(stats["duration_ms_p50"], 5 * S);
    let usage = r(s, |c| c.usage(owner, T0));
    assert_eq!(
        (usage.active_cues, usage.paused_cues, usage.all_cues),
        (3, 0, 3)
    );
    assert_eq!(
        (
            usage.executions,
            usage.reported,
            usage.succeeded,
            usage.failed,
            usage.timed_out
        ),
        (4, 1, 1, 0, 0)
    );
    assert_eq!(r(s, |c| c.user_usage(owner, T0)), (3, 3, 4));
    assert_eq!(r(s, |c| c.user_usage(owner, t + 2 * HOUR)), (3, 3, 0));
}

// -- transactions --

fn a_write_that_fails_after_several_changes_leaves_nothing_behind(s: &Store) {
    let e = error(s.write(|c| {
        let up = c.upsert_cue(LOCAL_OWNER, &spec(json!({"name": "x", "every": "1m"})), T0)?;
        c.fire_at(&up.id, None, None, None, T0)?;
        c.fire_due(&up.id, T0 + MIN, 0)?;
        c.create_user("gone@example.com", T0)?;
        c.heartbeat(OWNER, "w", None, T0)?;
        Err::<(), _>(Error::Conflict("boom".into()))
    }));
    assert!(matches!(&e, Error::Conflict(m) if m == "boom"), "{e:?}");
    assert!(r(s, |c| c.cue_ids(LOCAL_OWNER)).is_empty());
    assert!(r(s, |c| c.due_index()).is_empty());
    let all = ExecutionFilter::default();
    assert_eq!(r(s, |c| c.count_executions(LOCAL_OWNER, &all)), 0);
    assert_eq!(r(s, |c| c.user_count()), 0);
    assert!(r(s, |c| c.owners()).is_empty());
    assert!(r(s, |c| c.watched_workers()).is_empty());
    // The store takes writes as before.
    w(s, |c| c.probe(T0 + S));
    new_cue(s, LOCAL_OWNER, json!({"name": "x", "every": "1m"}), T0 + S);
}

fn a_failing_write_does_not_undo_a_neighbour_submitted_while_it_ran(s: &Store) {
    // On SQLite the neighbour lands in the failing write's batch: one transaction, a savepoint
    // each. A backend with a transaction per write passes it as well.
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (queued_tx, queued_rx) = mpsc::channel::<()>();
    let (failed, kept) = std::thread::scope(|scope| {
        let failing = scope.spawn(move || {
            s.write(move |c| {
                c.upsert_cue(
                    LOCAL_OWNER,
                    &spec(json!({"name": "undone", "every": "1m"})),
                    T0,
                )?;
                started_tx.send(()).map_err(|_| Error::Closed)?;
                // The neighbour's write is submitted while this one is open, then this one fails.
                queued_rx
                    .recv_timeout(Duration::from_secs(10))
                    .map_err(|_| Error::Closed)?;
                c.create_user("undone@example.com", T0)?;
                Err::<(), _>(Error::Conflict("boom".into()))
            })
        });
        let neighbour = scope.spawn(move || {
            started_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("the failing write started");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let write = s.write_async(|c| {
                    let kept = spec(json!({"name": "kept", "every": "1m"}));
                    c.upsert_cue(LOCAL_OWNER, &kept, T0)
                });
                let mut write = std::pin::pin!(write);
                // Polled once, the write is submitted; then the other one may fail.
                let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
                queued_tx.send(()).expect("the failing write waits");
                match first {
                    Poll::Ready(done) => done,
                    Poll::Pending => write.await,
                }
            })
        });
        (
            failing.join().expect("failing thread"),
            neighbour.join().expect("neighbour thread"),
        )
    });
    assert!(
        matches!(&failed, Err(Error::Conflict(m)) if m == "boom"),
        "{failed:?}"
    );
    let kept = kept.expect("the neighbour commits");
    assert!(kept.created);
    assert_eq!(r(s, |c| c.cue_ids(LOCAL_OWNER)), vec![kept.id.clone()]);
    assert_eq!(r(s, |c| c.resolve_cue(LOCAL_OWNER, "kept")), kept.id);
    assert_eq!(r(s, |c| c.user_count()), 0);
}
