//! Pull workers: heartbeats, claims with leases, and the windows that keep claims honest.
//!
//! An execution of a `worker` cue waits in `pending` until a worker claims it (listing it first or
//! taking the next one). A claim is a lease: it is released only when the lease has expired *and*
//! the worker has not been heard from (worker or execution heartbeat) within the worker timeout,
//! so a job that outlives its lease on a live worker is never run twice. A released claim is
//! recorded as an `abandoned` attempt and goes back to the queue, within the cue's retry budget.
//! An execution nobody claims within its cue's claim window becomes `missed`.

use crate::store::sql::{json_items, params, Db, Dialect, OptionalExt, Row};
use serde_json::{json, Value};

use super::executions::{self, claim, Claimed};
use crate::clock::Millis;
use crate::error::{Error, Result};
use crate::limits;
use crate::model::status;

/// The longest worker id and task name accepted.
pub const MAX_WORKER_ID: usize = 255;

/// The task an execution asks for: its payload's `task`, when that is a string (the expression
/// of the `executions_waiting_by_task` index in each database).
fn task(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => {
            "CASE WHEN json_type(e.payload, '$.task') = 'text' THEN json_extract(e.payload, '$.task') END"
        }
        Dialect::Postgres => {
            "(CASE WHEN json_typeof(e.payload::json -> 'task') = 'string' THEN e.payload::json ->> 'task' END)"
        }
    }
}

/// Records a worker's heartbeat; `handlers`, when given, replaces the task names it runs.
/// Returns whether its silence should be watched from now on (a new worker, or one back from
/// being reported offline — which sends a `recovered` notice).
pub fn heartbeat(
    conn: &Db<'_>,
    owner: &str,
    worker_id: &str,
    handlers: Option<&[String]>,
    now: Millis,
) -> Result<bool> {
    let before: Option<Option<Millis>> = conn
        .prepare_cached("SELECT offline_since FROM workers WHERE owner = ?1 AND worker_id = ?2")?
        .query_row(params![owner, worker_id], |r| r.get(0))
        .optional()?;
    let handlers = handlers.map(|h| Value::from(h.to_vec()).to_string());
    conn.prepare_cached(
        "INSERT INTO workers (owner, worker_id, handlers, last_heartbeat, registered_at) VALUES (?1, ?2, ?3, ?4, ?4)
         ON CONFLICT (owner, worker_id) DO UPDATE SET last_heartbeat = excluded.last_heartbeat,
             handlers = COALESCE(excluded.handlers, workers.handlers), offline_since = NULL",
    )?
    .execute(params![owner, worker_id, handlers, now])?;
    Ok(match before {
        None => true,
        Some(Some(_)) => {
            super::alerts::worker_back(conn, owner, worker_id, now)?;
            true
        }
        Some(None) => false,
    })
}

/// What a check of a worker's silence found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// Gone, or already reported offline: nothing more to watch until it is heard from.
    Over,
    /// Heard from recently; look again then.
    HeardUntil(Millis),
}

/// Checks whether a worker has been silent past `timeout_ms` (counting nothing before
/// `alive_since`, when this process opened the store); if so, reports it offline once.
pub fn silence_due(
    conn: &Db<'_>,
    owner: &str,
    worker_id: &str,
    now: Millis,
    timeout_ms: i64,
    alive_since: Millis,
) -> Result<Silence> {
    let row: Option<(Millis, Option<Millis>)> = conn
        .prepare_cached(
            "SELECT last_heartbeat, offline_since FROM workers WHERE owner = ?1 AND worker_id = ?2",
        )?
        .query_row(params![owner, worker_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((last, offline)) = row else {
        return Ok(Silence::Over);
    };
    if offline.is_some() {
        return Ok(Silence::Over);
    }
    let seen = last.max(alive_since);
    if seen + timeout_ms > now {
        return Ok(Silence::HeardUntil(seen + timeout_ms));
    }
    conn.prepare_cached(
        "UPDATE workers SET offline_since = ?3 WHERE owner = ?1 AND worker_id = ?2",
    )?
    .execute(params![owner, worker_id, now])?;
    super::alerts::worker_offline(conn, owner, worker_id, now - last, now)?;
    Ok(Silence::Over)
}

/// Workers whose silence is watched (not reported offline): (owner, worker id).
pub fn watched(conn: &Db<'_>) -> Result<Vec<(String, String)>> {
    let mut stmt =
        conn.prepare("SELECT owner, worker_id FROM workers WHERE offline_since IS NULL")?;
    let rows = stmt.query_map(params![], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows)
}

/// A worker's liveness by the time since its last heartbeat: `active` within the timeout,
/// `stale` within five times it, `dead` after that.
fn liveness(since_ms: i64, timeout_ms: i64) -> &'static str {
    if since_ms < timeout_ms {
        "active"
    } else if since_ms < timeout_ms.saturating_mul(5) {
        "stale"
    } else {
        "dead"
    }
}

/// An owner's workers, the most recently heard from first.
pub fn list(conn: &Db<'_>, owner: &str, now: Millis, timeout_ms: i64) -> Result<Vec<Value>> {
    let mut stmt = conn.prepare_cached(
        "SELECT w.worker_id, w.handlers, w.last_heartbeat, w.registered_at,
            (SELECT count(*) FROM executions e JOIN cues c ON c.id = e.cue_id
             WHERE e.status = 'delivering' AND e.claimed_by = w.worker_id AND c.owner = w.owner
               AND c.transport = 'worker')
         FROM workers w WHERE w.owner = ?1 ORDER BY w.last_heartbeat DESC, w.worker_id",
    )?;
    let rows = stmt.query_map(params![owner], |r| {
        let handlers: Option<String> = r.get(1)?;
        let last: Millis = r.get(2)?;
        let since = (now - last).max(0);
        Ok(json!({
            "worker_id": r.get::<String>(0)?,
            // null: it never said (any task may go to it); a list: the tasks it runs.
            "handlers": handlers
                .and_then(|h| serde_json::from_str::<Value>(&h).ok())
                .unwrap_or(Value::Null),
            "last_heartbeat": last,
            "seconds_since_heartbeat": since / 1000,
            "heartbeat_status": liveness(since, timeout_ms),
            "registered_since": r.get::<Millis>(3)?,
            "claims": r.get::<i64>(4)?,
        }))
    })?;
    Ok(rows)
}

/// Forgets a worker and puts the claims it holds back in the queue. Returns the executions that
/// are claimable again.
pub fn delete(conn: &Db<'_>, owner: &str, worker_id: &str, now: Millis) -> Result<Vec<String>> {
    let held = held_by(conn, owner, worker_id)?;
    let gone = conn
        .prepare_cached("DELETE FROM workers WHERE owner = ?1 AND worker_id = ?2")?
        .execute(params![owner, worker_id])?;
    if gone == 0 && held.is_empty() {
        return Err(Error::WorkerNotFound(worker_id.to_string()));
    }
    let why = format!("abandoned: worker {worker_id:?} was deleted while it held this claim");
    let mut again = Vec::new();
    for (id, attempt) in held {
        if release(conn, &id, attempt, &why, now)? {
            again.push(id);
        }
    }
    Ok(again)
}

/// The claims a worker holds now: (execution id, attempt).
fn held_by(conn: &Db<'_>, owner: &str, worker_id: &str) -> Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT e.id, e.attempts FROM executions e JOIN cues c ON c.id = e.cue_id
         WHERE e.status = 'delivering' AND e.claimed_by = ?2 AND c.owner = ?1 AND c.transport = 'worker'",
    )?;
    let rows = stmt.query_map(params![owner, worker_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows)
}

/// The task names a worker registered (None: it never said, so it may take any task).
fn handlers_of(conn: &Db<'_>, owner: &str, worker_id: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT handlers FROM workers WHERE owner = ?1 AND worker_id = ?2")?
        .query_row(params![owner, worker_id], |r| r.get::<Option<String>>(0))
        .optional()?
        .flatten())
}

/// Which claimable executions to list.
#[derive(Debug, Default, Clone)]
pub struct ClaimFilter {
    /// Only executions whose payload's `task` is this.
    pub task: Option<String>,
    /// Only executions this worker has a handler for (by the task names it registered).
    pub worker_id: Option<String>,
    pub limit: i64,
    /// How recently a worker must have been heard from to count as live (ms): without a filter,
    /// the tasks live workers run are listed first.
    pub live_ms: i64,
}

/// The claimable executions of an owner. Without an id, waiting executions are read in claim
/// order from the `executions_waiting` index (the outer loop, by CROSS JOIN), so a claim or a
/// page stops at its limit instead of sorting every execution the owner's cues ever had; with
/// one, the execution is found by its key.
fn claimable_sql(d: Dialect, with_id: bool) -> String {
    let (from, by_id) = if with_id {
        (
            "executions e JOIN cues c ON c.id = e.cue_id",
            "AND e.id = ?6",
        )
    } else {
        (
            "executions e INDEXED BY executions_waiting CROSS JOIN cues c ON c.id = e.cue_id",
            "",
        )
    };
    format!(
        "SELECT {}
         FROM {from}
         WHERE e.status = 'pending' AND e.next_retry IS NULL AND e.scheduled_for <= ?2
           AND c.owner = ?1 AND c.transport = 'worker'
           AND (?3 IS NULL OR {task} = ?3)
           AND (?4 IS NULL OR {task} IS NULL OR {task} IN {handled})
           {by_id}
         ORDER BY e.scheduled_for, e.id LIMIT ?5",
        waiting_columns(d),
        task = task(d),
        handled = json_items(d, "?4"),
    )
}

/// The columns of a waiting execution (read by [`Waiting::read`]).
fn waiting_columns(d: Dialect) -> String {
    format!(
        "e.id, e.cue_id, c.name, {} AS task, e.scheduled_for, e.payload, e.attempts + 1",
        task(d)
    )
}

/// An owner's waiting executions of one task in claim order, read from the
/// `executions_waiting_by_task` index (it stops at `limit` whatever else is queued).
fn task_sql(d: Dialect) -> String {
    format!(
        "SELECT {}
         FROM executions e INDEXED BY executions_waiting_by_task CROSS JOIN cues c ON c.id = e.cue_id
         WHERE {} = ?3 AND e.status = 'pending' AND e.next_retry IS NULL AND e.scheduled_for <= ?2
           AND c.owner = ?1 AND c.transport = 'worker'
         ORDER BY e.scheduled_for, e.id LIMIT ?4",
        waiting_columns(d),
        task(d),
    )
}

/// The owner's waiting executions whose task is none of `tasks` (a JSON list), in claim order.
fn other_tasks_sql(d: Dialect) -> String {
    format!(
        "SELECT {}
         FROM executions e INDEXED BY executions_waiting CROSS JOIN cues c ON c.id = e.cue_id
         WHERE e.status = 'pending' AND e.next_retry IS NULL AND e.scheduled_for <= ?2
           AND c.owner = ?1 AND c.transport = 'worker'
           AND ({task} IS NULL OR {task} NOT IN {others})
         ORDER BY e.scheduled_for, e.id LIMIT ?4",
        waiting_columns(d),
        task = task(d),
        others = json_items(d, "?3"),
    )
}

/// An execution waiting for a claim, as the claimable listing shows it.
#[derive(Debug, Clone)]
struct Waiting {
    id: String,
    cue_id: String,
    cue_name: String,
    task: Option<String>,
    scheduled_for: Millis,
    payload: String,
    attempt: i64,
}

impl Waiting {
    fn read(r: &Row<'_>) -> Result<Waiting> {
        Ok(Waiting {
            id: r.get(0)?,
            cue_id: r.get(1)?,
            cue_name: r.get(2)?,
            task: r.get(3)?,
            scheduled_for: r.get(4)?,
            payload: r.get(5)?,
            attempt: r.get(6)?,
        })
    }

    fn json(self) -> Value {
        json!({
            "execution_id": self.id,
            "cue_id": self.cue_id,
            "cue_name": self.cue_name,
            "task": self.task,
            "scheduled_for": self.scheduled_for,
            "payload": serde_json::from_str::<Value>(&self.payload).unwrap_or(Value::Null),
            "attempt": self.attempt,
        })
    }
}

/// The oldest `limit` waiting executions of one task of an owner.
fn waiting_of_task(
    conn: &Db<'_>,
    owner: &str,
    task: &str,
    now: Millis,
    limit: i64,
) -> Result<Vec<Waiting>> {
    let mut stmt = conn.prepare_cached(&task_sql(conn.dialect()))?;
    let rows = stmt.query_map(params![owner, now, task, limit], Waiting::read)?;
    Ok(rows)
}

/// The task names the owner's live workers (heard from within `live_ms`) registered, sorted.
fn live_tasks(conn: &Db<'_>, owner: &str, now: Millis, live_ms: i64) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(match conn.dialect() {
        Dialect::Sqlite => {
            "SELECT DISTINCT h.value FROM workers w, json_each(w.handlers) h
             WHERE w.owner = ?1 AND w.handlers IS NOT NULL AND w.last_heartbeat + ?3 > ?2
               AND w.offline_since IS NULL AND h.type = 'text'
             ORDER BY h.value"
        }
        Dialect::Postgres => {
            "SELECT DISTINCT (h.item #>> '{}') COLLATE \"C\" AS value
             FROM workers w, json_array_elements(w.handlers::json) AS h(item)
             WHERE w.owner = ?1 AND w.handlers IS NOT NULL AND w.last_heartbeat + ?3 > ?2
               AND w.offline_since IS NULL AND json_typeof(h.item) = 'string'
             ORDER BY value"
        }
    })?;
    let rows = stmt.query_map(params![owner, now, live_ms], |r| r.get(0))?;
    Ok(rows)
}

/// The unfiltered listing: the executions whose task a live worker of the owner runs come first,
/// taken in turns by task (the oldest of every such task, then the second oldest of each, ...),
/// so that a worker reading only the first page — the official daemon, which never filters —
/// finds its own work there whatever else is queued; then everything else, oldest first. Each
/// task's executions are read from the task index, a first round `limit / tasks` deep and a second
/// (only for tasks that filled the first) `limit` deep, so a page costs at most
/// `tasks + limit²` rows however long the queue.
fn handled_first(conn: &Db<'_>, owner: &str, f: &ClaimFilter, now: Millis) -> Result<Vec<Value>> {
    let tasks = live_tasks(conn, owner, now, f.live_ms)?;
    let limit = usize::try_from(f.limit).unwrap_or(0);
    if tasks.is_empty() || limit == 0 {
        let mut stmt = conn.prepare_cached(&claimable_sql(conn.dialect(), false))?;
        let rows = stmt.query_map(
            params![owner, now, None::<String>, None::<String>, f.limit],
            Waiting::read,
        )?;
        return Ok(rows.into_iter().map(Waiting::json).collect());
    }
    let depth = limit.div_ceil(tasks.len()).max(1);
    let mut by_task = Vec::with_capacity(tasks.len());
    let mut total = 0;
    for t in &tasks {
        let rows = waiting_of_task(conn, owner, t, now, depth as i64)?;
        total += rows.len();
        by_task.push(rows);
    }
    if total < limit && depth < limit {
        for (t, rows) in tasks.iter().zip(by_task.iter_mut()) {
            if rows.len() == depth {
                *rows = waiting_of_task(conn, owner, t, now, f.limit)?;
            }
        }
    }
    let mut handled: Vec<(usize, Waiting)> = by_task
        .into_iter()
        .flat_map(|rows| rows.into_iter().enumerate())
        .collect();
    handled.sort_by(|(ra, a), (rb, b)| {
        (ra, a.scheduled_for, &a.id).cmp(&(rb, b.scheduled_for, &b.id))
    });
    handled.truncate(limit);
    let mut out: Vec<Value> = handled.into_iter().map(|(_, w)| w.json()).collect();
    if out.len() < limit {
        let names = Value::from(tasks).to_string();
        let mut stmt = conn.prepare_cached(&other_tasks_sql(conn.dialect()))?;
        let rows = stmt.query_map(
            params![owner, now, names, (limit - out.len()) as i64],
            Waiting::read,
        )?;
        for r in rows {
            out.push(r.json());
        }
    }
    Ok(out)
}

/// The owner's executions a worker may claim now: due, waiting, of worker cues; every filter
/// applies before the limit. With a filter (a task, or a worker's registered tasks), oldest
/// first; without one, the tasks live workers run first (see [`handled_first`]).
pub fn claimable(conn: &Db<'_>, owner: &str, f: &ClaimFilter, now: Millis) -> Result<Vec<Value>> {
    let handlers = match &f.worker_id {
        Some(w) => handlers_of(conn, owner, w)?,
        None => None,
    };
    if let Some(task) = &f.task {
        if !handles(handlers.as_deref(), task) {
            return Ok(Vec::new());
        }
        let rows = waiting_of_task(conn, owner, task, now, f.limit)?;
        return Ok(rows.into_iter().map(Waiting::json).collect());
    }
    if f.worker_id.is_none() {
        return handled_first(conn, owner, f, now);
    }
    let mut stmt = conn.prepare_cached(&claimable_sql(conn.dialect(), false))?;
    let rows = stmt.query_map(
        params![owner, now, None::<String>, handlers, f.limit],
        Waiting::read,
    )?;
    Ok(rows.into_iter().map(Waiting::json).collect())
}

/// Whether a worker with these registered handlers (a JSON list; None: it never said) runs `task`.
fn handles(handlers: Option<&str>, task: &str) -> bool {
    match handlers {
        None => true,
        Some(list) => serde_json::from_str::<Vec<String>>(list)
            .map(|names| names.iter().any(|n| n == task))
            .unwrap_or(false),
    }
}

/// A claim a worker holds: the attempt, its task and when its lease ends.
#[derive(Debug, Clone)]
pub struct WorkerClaim {
    pub job: Claimed,
    pub task: Option<String>,
    pub lease_expires_at: Millis,
}

/// Claims an execution for `worker_id`: the one named, or else the oldest one it can handle
/// (matching `task` when given). `Ok(None)` when there is nothing to claim; a named execution
/// that cannot be claimed is a conflict that says why.
pub fn claim_for(
    conn: &Db<'_>,
    owner: &str,
    execution_id: Option<&str>,
    worker_id: &str,
    task: Option<&str>,
    now: Millis,
    lease_ms: i64,
) -> Result<Option<WorkerClaim>> {
    let handlers = handlers_of(conn, owner, worker_id)?;
    let found: Option<(String, Option<String>)> = match execution_id {
        Some(id) => {
            let found = conn
                .prepare_cached(&claimable_sql(conn.dialect(), true))?
                .query_row(params![owner, now, task, handlers, 1_i64, id], |r| {
                    Ok((r.get(0)?, r.get(3)?))
                })
                .optional()?;
            if found.is_none() {
                return Err(not_claimable(
                    conn,
                    owner,
                    id,
                    worker_id,
                    handlers.is_some(),
                    now,
                ));
            }
            found
        }
        None => match task {
            Some(t) if handles(handlers.as_deref(), t) => waiting_of_task(conn, owner, t, now, 1)?
                .into_iter()
                .next()
                .map(|w| (w.id, w.task)),
            Some(_) => None,
            None => conn
                .prepare_cached(&claimable_sql(conn.dialect(), false))?
                .query_row(params![owner, now, task, handlers, 1_i64], |r| {
                    Ok((r.get(0)?, r.get(3)?))
                })
                .optional()?,
        },
    };
    let Some((id, task)) = found else {
        return Ok(None);
    };
    // A worker's job is governed by its lease and heartbeats, not by the outcome deadline: a
    // long job on a live worker is not late.
    let Some(job) = claim(conn, &id, worker_id, now, lease_ms, false)? else {
        return Ok(None);
    };
    conn.prepare_cached(
        "UPDATE executions SET heartbeat_at = ?2, claim_deadline_at = NULL WHERE id = ?1",
    )?
    .execute(params![id, now])?;
    Ok(Some(WorkerClaim {
        job,
        task,
        lease_expires_at: now + lease_ms,
    }))
}

/// Why an owned execution cannot be claimed (or that it is not the owner's at all).
fn not_claimable(
    conn: &Db<'_>,
    owner: &str,
    id: &str,
    worker_id: &str,
    has_handlers: bool,
    now: Millis,
) -> Error {
    let row = conn
        .prepare_cached(&format!(
            "SELECT e.status, c.transport, e.next_retry, e.scheduled_for, {}
             FROM executions e JOIN cues c ON c.id = e.cue_id WHERE e.id = ?1 AND c.owner = ?2",
            task(conn.dialect())
        ))
        .and_then(|mut s| {
            s.query_row(params![id, owner], |r| {
                Ok((
                    r.get::<String>(0)?,
                    r.get::<String>(1)?,
                    r.get::<Option<Millis>>(2)?,
                    r.get::<Millis>(3)?,
                    r.get::<Option<String>>(4)?,
                ))
            })
            .optional()
        });
    let (state, transport, later, scheduled_for, task) = match row {
        Ok(Some(r)) => r,
        Ok(None) => return Error::ExecutionNotFound(id.to_string()),
        Err(e) => return e,
    };
    let why = if transport != "worker" {
        format!("execution {id} is delivered by the {transport} transport, not claimed by workers")
    } else if state != status::PENDING {
        format!("execution {id} is {state}, not waiting for a claim")
    } else if later.is_some() || scheduled_for > now {
        format!("execution {id} is not due yet")
    } else if has_handlers {
        format!(
            "worker {worker_id:?} has no handler for task {:?} (it registered others)",
            task.unwrap_or_default()
        )
    } else {
        format!("execution {id} does not match the requested task")
    };
    Error::Conflict(why)
}

/// Extends the lease of a claimed worker execution to `now + lease_ms`; with `worker_id`, only
/// for the worker that holds it. Returns the new end of the lease.
pub fn extend_lease(
    conn: &Db<'_>,
    owner: &str,
    id: &str,
    worker_id: Option<&str>,
    now: Millis,
    lease_ms: i64,
) -> Result<Millis> {
    let (state, transport, holder): (String, String, Option<String>) = conn
        .prepare_cached(
            "SELECT e.status, c.transport, e.claimed_by FROM executions e JOIN cues c ON c.id = e.cue_id
             WHERE e.id = ?1 AND c.owner = ?2",
        )?
        .query_row(params![id, owner], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?
        .ok_or_else(|| Error::ExecutionNotFound(id.to_string()))?;
    if state != status::DELIVERING || transport != "worker" {
        return Err(Error::Conflict(format!(
            "execution {id} is not claimed by a worker (status {state})"
        )));
    }
    if let Some(w) = worker_id {
        if holder.as_deref() != Some(w) {
            return Err(Error::NotClaimHolder(format!(
                "execution {id} is claimed by another worker, not {w:?}"
            )));
        }
    }
    let until = now + lease_ms;
    conn.prepare_cached(
        "UPDATE executions SET lease_expires_at = ?2, heartbeat_at = ?3, updated_at = ?3 WHERE id = ?1",
    )?
    .execute(params![id, until, now])?;
    Ok(until)
}

/// What a lease check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseCheck {
    /// The claim is over (completed, released, or the execution is gone).
    Over,
    /// The claim holds; look again then.
    HoldsUntil(Millis),
    /// Released: the execution waits for a claim again (true) or failed for good (false).
    Released(bool),
}

/// Checks a worker's claim whose lease was due to end: it holds while the lease runs or while
/// its worker has been heard from within `timeout_ms` (counting no sign of life from before
/// `alive_since`, the time this process opened the store, against it), but no longer than
/// [`limits::MAX_CLAIM_HOLD_MS`] after it was claimed; otherwise it is released.
pub fn lease_due(
    conn: &Db<'_>,
    id: &str,
    now: Millis,
    timeout_ms: i64,
    alive_since: Millis,
) -> Result<LeaseCheck> {
    type Row = (
        String,
        String,
        Option<String>,
        Option<Millis>,
        Option<Millis>,
        i64,
        Option<Millis>,
        Option<Millis>,
    );
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT e.status, c.transport, e.claimed_by, e.lease_expires_at, e.heartbeat_at, e.attempts,
                w.last_heartbeat, e.claimed_at
             FROM executions e JOIN cues c ON c.id = e.cue_id
             LEFT JOIN workers w ON w.owner = c.owner AND w.worker_id = e.claimed_by
             WHERE e.id = ?1",
        )?
        .query_row(params![id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .optional()?;
    let Some((state, transport, holder, lease, beat, attempt, worker_beat, claimed_at)) = row
    else {
        return Ok(LeaseCheck::Over);
    };
    if state != status::DELIVERING || transport != "worker" {
        return Ok(LeaseCheck::Over);
    }
    let lease = lease.unwrap_or(now);
    if lease > now {
        return Ok(LeaseCheck::HoldsUntil(lease));
    }
    let seen = beat
        .unwrap_or(0)
        .max(worker_beat.unwrap_or(0))
        .max(alive_since);
    let held_until = claimed_at.unwrap_or(lease) + limits::MAX_CLAIM_HOLD_MS;
    if seen + timeout_ms > now && held_until > now {
        return Ok(LeaseCheck::HoldsUntil((seen + timeout_ms).min(held_until)));
    }
    let why = if seen + timeout_ms > now {
        format!(
            "abandoned: worker {:?} is alive but has held this claim for {} s without an \
             execution heartbeat since its lease expired (a worker's heartbeat keeps a claim at \
             most {} s; was it restarted under the same id?)",
            holder.unwrap_or_default(),
            (now - claimed_at.unwrap_or(lease)) / 1000,
            limits::MAX_CLAIM_HOLD_MS / 1000
        )
    } else {
        format!(
            "abandoned: worker {:?} was not heard from for {} s and its lease expired",
            holder.unwrap_or_default(),
            (now - seen) / 1000
        )
    };
    Ok(LeaseCheck::Released(release(conn, id, attempt, &why, now)?))
}

/// Ends a claim nobody will complete: the attempt is recorded as abandoned and the execution waits
/// for a claim again, or fails when the cue's retries are spent. Returns whether it waits again.
fn release(conn: &Db<'_>, id: &str, attempt: i64, why: &str, now: Millis) -> Result<bool> {
    conn.prepare_cached(
        "UPDATE attempts SET status = 'abandoned', finished_at = ?3, duration_ms = ?3 - started_at, error = ?4
         WHERE execution_id = ?1 AND number = ?2",
    )?
    .execute(params![id, attempt, now, why])?;
    let cue_id: String = conn
        .prepare_cached("SELECT cue_id FROM executions WHERE id = ?1")?
        .query_row(params![id], |r| r.get(0))?;
    let policy = super::cues::load_policy(conn, &cue_id)?
        .ok_or_else(|| Error::CueNotFound(cue_id.clone()))?;
    let again = attempt - 1 < policy.max_attempts;
    conn.prepare_cached(
        "UPDATE executions SET status = ?2, error_message = ?3, claimed_by = NULL, lease_expires_at = NULL,
            heartbeat_at = NULL, updated_at = ?4,
            claim_deadline_at = CASE WHEN ?5 THEN ?4 + (SELECT claim_timeout_seconds * 1000 FROM cues WHERE cues.id = executions.cue_id) END
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        if again { status::PENDING } else { status::FAILED },
        why,
        now,
        again
    ])?;
    if !again {
        executions::finish_cue(conn, &policy, false, now)?;
        super::alerts::execution_failed(
            conn,
            &cue_id,
            id,
            super::alerts::kind::RETRIES_EXHAUSTED,
            why,
            now,
        )?;
    }
    Ok(again)
}

/// Marks an execution `missed` when its claim window passed with no claim. Returns whether it did.
pub fn claim_window_due(conn: &Db<'_>, id: &str, now: Millis) -> Result<bool> {
    let cue_id: Option<String> = conn
        .prepare_cached(
            "UPDATE executions SET status = 'missed', claim_deadline_at = NULL, updated_at = ?2,
                error_message = 'missed: no worker claimed it within ' ||
                    (SELECT claim_timeout_seconds FROM cues WHERE cues.id = executions.cue_id) || ' s'
             WHERE id = ?1 AND status = 'pending' AND next_retry IS NULL AND claim_deadline_at <= ?2
             RETURNING cue_id",
        )?
        .query_row(params![id, now], |r| r.get(0))
        .optional()?;
    let Some(cue_id) = cue_id else {
        return Ok(false);
    };
    if let Some(policy) = super::cues::load_policy(conn, &cue_id)? {
        executions::escalate_cue(conn, &policy, now)?;
    }
    super::alerts::execution_failed(
        conn,
        &cue_id,
        id,
        super::alerts::kind::MISSED,
        "no worker claimed it within its claim window",
        now,
    )?;
    Ok(true)
}

/// When each of these executions stops waiting for a claim (those that wait for one).
pub fn claim_deadlines(conn: &Db<'_>, ids: &[String]) -> Result<Vec<(Millis, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT claim_deadline_at FROM executions WHERE id = ?1 AND status = 'pending'
            AND next_retry IS NULL AND claim_deadline_at IS NOT NULL",
    )?;
    let mut out = Vec::new();
    for id in ids {
        if let Some(at) = stmt.query_row(params![id], |r| r.get(0)).optional()? {
            out.push((at, id.clone()));
        }
    }
    Ok(out)
}

/// An outcome reported for a worker's claim, and what it did.
#[derive(Debug, Clone)]
pub struct WorkerOutcome {
    /// What follows (a retry to schedule, or nothing).
    pub finished: executions::Finished,
    pub status: String,
    pub outcome_state: Option<String>,
    pub next_retry: Option<Millis>,
}

/// Completes a worker execution with the outcome reported for it: the running attempt of a claim,
/// or — when nobody holds a claim (a worker whose claim was released reports late, or someone
/// reports by hand) — an attempt of its own, recorded without a claimer, so the report is kept
/// rather than refused and the work is not run again. A success ends the execution; a failure
/// follows the cue's retry policy. `Ok(None)` when the execution is not of a worker cue (its
/// outcome is recorded the webhook way).
pub fn report(
    conn: &Db<'_>,
    owner: &str,
    id: &str,
    o: &executions::ReportedOutcome,
    now: Millis,
) -> Result<Option<WorkerOutcome>> {
    type Row = (String, String, Option<Millis>, Option<Millis>, Millis);
    let (state, transport, recorded, later, scheduled_for): Row = conn
        .prepare_cached(
            "SELECT e.status, c.transport, e.outcome_recorded_at, e.next_retry, e.scheduled_for
             FROM executions e JOIN cues c ON c.id = e.cue_id WHERE e.id = ?1 AND c.owner = ?2",
        )?
        .query_row(params![id, owner], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?
        .ok_or_else(|| Error::ExecutionNotFound(id.to_string()))?;
    if transport != "worker" {
        return Ok(None);
    }
    executions::check_outcome(o)?;
    let attempt = match state.as_str() {
        status::DELIVERING => conn
            .prepare_cached("SELECT attempts FROM executions WHERE id = ?1")?
            .query_row(params![id], |r| r.get::<i64>(0))?,
        // Due and waiting: a report without a claim (a released claim's worker reporting late,
        // or a hand) is kept as an attempt of its own.
        status::PENDING if later.is_none() && scheduled_for <= now => {
            unclaimed_attempt(conn, id, now)?
        }
        status::PENDING | status::RETRYING => {
            return Err(Error::Conflict(format!(
                "{}: execution {id} is {} until {}",
                executions::conflict::NOT_CLAIMED,
                if state == status::RETRYING {
                    "waiting for its retry"
                } else {
                    "not due"
                },
                crate::schedule::format_utc(later.unwrap_or(scheduled_for))
            )))
        }
        _ if recorded.is_some() => {
            return Err(Error::Conflict(
                executions::conflict::ALREADY_RECORDED.into(),
            ))
        }
        _ => {
            return Err(Error::Conflict(format!(
                "execution {id} is {state}: it is finished and takes no outcome"
            )))
        }
    };
    let finished = executions::complete(conn, id, attempt, o, now)?;
    let (status, outcome_state, next_retry) = conn
        .prepare_cached("SELECT status, outcome_state, next_retry FROM executions WHERE id = ?1")?
        .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(Some(WorkerOutcome {
        finished,
        status,
        outcome_state,
        next_retry,
    }))
}

/// Starts an attempt that no worker claimed, for an outcome reported without a claim.
fn unclaimed_attempt(conn: &Db<'_>, id: &str, now: Millis) -> Result<i64> {
    let attempt: i64 = conn
        .prepare_cached(
            "UPDATE executions SET status = 'delivering', attempts = attempts + 1,
                started_at = COALESCE(started_at, ?2), last_attempt_at = ?2, claimed_by = NULL, claimed_at = NULL,
                lease_expires_at = NULL, heartbeat_at = NULL, next_retry = NULL, claim_deadline_at = NULL,
                updated_at = ?2
             WHERE id = ?1 AND status = 'pending'
             RETURNING attempts",
        )?
        .query_row(params![id, now], |r| r.get(0))?;
    conn.prepare_cached(
        "INSERT INTO attempts (execution_id, number, status, started_at, claimed_by)
         VALUES (?1, ?2, 'running', ?3, NULL)
         ON CONFLICT (execution_id, number) DO UPDATE SET status = excluded.status,
             started_at = excluded.started_at, claimed_by = excluded.claimed_by, finished_at = NULL,
             duration_ms = NULL, error = NULL, error_type = NULL, traceback = NULL,
             http_status = NULL, outcome = NULL",
    )?
    .execute(params![id, attempt, now])?;
    Ok(attempt)
}
