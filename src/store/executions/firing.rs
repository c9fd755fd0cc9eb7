//! Making executions: a cue's due ticks fired (with catch-up and overlap policies), manual fires
//! (with idempotency keys), chain steps and replays, and pausing and resuming a cue.

use super::*;

/// Missed ticks recorded one row each per catch-up; beyond this, one summary row.
const MISSED_ROWS_CAP: usize = 1_000;
/// Schedule steps walked to find missed ticks; beyond this the rest is summarised by count only.
const MISSED_WALK_CAP: usize = 1_000_000;

/// What firing a cue produced.
#[derive(Debug, Default)]
pub struct FireResult {
    /// Executions created in `pending`, to be dispatched.
    pub created: Vec<String>,
    /// The cue's transport: where the created executions go.
    pub transport: String,
    /// The cue's next fire time after this firing.
    pub next_run: Option<Millis>,
}

fn idempotency_key(cue_id: &str, scheduled_for: Millis) -> String {
    format!("{cue_id}:{scheduled_for}")
}

#[allow(clippy::too_many_arguments)]
fn insert_execution(
    conn: &Db<'_>,
    cue: &CueRow,
    scheduled_for: Millis,
    state: &str,
    triggered_by: &str,
    error: Option<&str>,
    payload: &str,
    key: Option<String>,
    replay_of: Option<&str>,
    now: Millis,
) -> Result<Option<String>> {
    let id = new_id("exec", now);
    let key = key.unwrap_or_else(|| idempotency_key(&cue.id, scheduled_for));
    let mut stmt = conn.prepare_cached(
        "INSERT INTO executions (id, cue_id, scheduled_for, status, triggered_by, replay_of, idempotency_key, payload,
            error_message, outcome_deadline_seconds, created_at, updated_at, claim_deadline_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11,
            CASE WHEN ?12 THEN ?11 + (SELECT claim_timeout_seconds * 1000 FROM cues WHERE id = ?2) END)
         ON CONFLICT DO NOTHING",
    )?;
    let n = stmt.execute(params![
        id,
        cue.id,
        scheduled_for,
        state,
        triggered_by,
        replay_of,
        key,
        payload,
        error,
        cue.outcome_deadline_seconds,
        now,
        cue.transport == "worker" && state == status::PENDING
    ])?;
    Ok((n == 1).then_some(id))
}

/// A run of the cue that is still going, for `overlap=skip`: one being delivered or run, or one
/// queued that has not started yet. A run waiting for its retry (`retrying`, or `pending` again
/// after a failed or interrupted attempt) is not running: later ticks go ahead.
fn open_execution(conn: &Db<'_>, cue_id: &str) -> Result<Option<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM executions
         WHERE cue_id = ?1 AND status IN ('pending', 'delivering', 'retrying')
           AND (status = 'delivering' OR (status = 'pending' AND attempts = 0)) LIMIT 1",
    )?;
    stmt.query_row(params![cue_id], |r| r.get(0)).optional()
}

/// Writes ticks that did not run, one row each up to a cap, then one summary row.
fn record_missed(
    conn: &Db<'_>,
    cue: &CueRow,
    ticks: &[Millis],
    extra: usize,
    reason: &str,
    now: Millis,
) -> Result<()> {
    let (each, rest) = ticks.split_at(ticks.len().min(MISSED_ROWS_CAP));
    for t in each {
        insert_execution(
            conn,
            cue,
            *t,
            status::MISSED,
            "schedule",
            Some(reason),
            "{}",
            None,
            None,
            now,
        )?;
    }
    let more = rest.len() + extra;
    if let Some(first) = rest.first() {
        let last = rest.last().copied().unwrap_or(*first);
        let msg = format!(
            "{reason}; this row stands for {more} missed ticks from {} to {} or later, not recorded one by one",
            format_utc(*first),
            format_utc(last)
        );
        insert_execution(
            conn,
            cue,
            *first,
            status::MISSED,
            "schedule",
            Some(&msg),
            "{}",
            None,
            None,
            now,
        )?;
    }
    Ok(())
}

/// Fires every tick of `cue_id` that is due by `now`, applying the catch-up policy to ticks that
/// are more than `grace_ms` late and the overlap policy to all. Returns `None` when nothing is due
/// (the timer entry that asked is stale: the cue was paused, moved or deleted since).
pub fn fire_due(
    conn: &Db<'_>,
    cue_id: &str,
    now: Millis,
    grace_ms: i64,
) -> Result<Option<FireResult>> {
    let Some(cue) = cues::load(conn, cue_id)? else {
        return Ok(None);
    };
    let Some(expected) = cue.next_run.filter(|t| cue.status == "active" && *t <= now) else {
        return Ok(None);
    };
    // Every tick from `expected` up to now.
    let mut due = Vec::new();
    let mut unrecorded = 0usize;
    let mut next = Some(expected);
    while let Some(t) = next {
        if t > now {
            break;
        }
        if due.len() < MISSED_WALK_CAP {
            due.push(t);
        } else {
            unrecorded += 1;
            if unrecorded > MISSED_WALK_CAP {
                next = cue.schedule.next_after(now);
                break;
            }
        }
        next = cue.schedule.next_after(t);
    }
    let split = due.partition_point(|t| *t < now - grace_ms);
    let (late, on_time) = due.split_at(split);
    let (fire, missed, reason): (Vec<Millis>, Vec<Millis>, String) = match cue.catch_up.as_str() {
        "skip" => (
            on_time.to_vec(),
            late.to_vec(),
            "missed: cueapi was not running at this time (catch_up=skip)".into(),
        ),
        "all" => {
            let keep = late.len().saturating_sub(cue.catch_up_max as usize);
            let mut f = late[keep..].to_vec();
            f.extend_from_slice(on_time);
            (
                f,
                late[..keep].to_vec(),
                format!(
                    "missed: more than catch_up_max={} ticks were late",
                    cue.catch_up_max
                ),
            )
        }
        _ => {
            if on_time.is_empty() && !late.is_empty() {
                let (last, older) = late
                    .split_last()
                    .map(|(l, o)| (*l, o.to_vec()))
                    .unwrap_or((expected, vec![]));
                (
                    vec![last],
                    older,
                    format!(
                        "missed: folded into one catch-up run for {} (catch_up=once)",
                        format_utc(last)
                    ),
                )
            } else {
                (
                    on_time.to_vec(),
                    late.to_vec(),
                    "missed: a later tick ran instead (catch_up=once)".into(),
                )
            }
        }
    };
    record_missed(conn, &cue, &missed, unrecorded, &reason, now)?;
    let running = if cue.overlap == "skip" {
        open_execution(conn, &cue.id)?
    } else {
        None
    };
    let mut created = Vec::new();
    for t in &fire {
        match &running {
            Some(other) => {
                let why = format!(
                    "skipped: execution {other} of this cue was still running (overlap=skip)"
                );
                insert_execution(
                    conn,
                    &cue,
                    *t,
                    status::SKIPPED,
                    "schedule",
                    Some(&why),
                    "{}",
                    None,
                    None,
                    now,
                )?;
            }
            None => {
                if let Some(id) = insert_execution(
                    conn,
                    &cue,
                    *t,
                    status::PENDING,
                    "schedule",
                    None,
                    &cue.payload,
                    None,
                    None,
                    now,
                )? {
                    created.push(id);
                }
            }
        }
    }
    let new_status = final_status(&cue, next, !created.is_empty());
    conn.prepare_cached(
        "UPDATE cues SET next_run = ?2, fired_count = fired_count + ?3, status = ?4, updated_at = ?5 WHERE id = ?1",
    )?
    .execute(params![cue.id, next, created.len() as i64, new_status, now])?;
    Ok(Some(FireResult {
        created,
        transport: cue.transport.clone(),
        next_run: next,
    }))
}

/// A manual fire: the execution and when it goes out.
#[derive(Debug, Clone)]
pub struct Fired {
    pub id: String,
    /// False when an earlier fire with the same idempotency key is returned instead.
    pub created: bool,
    /// True when that earlier fire was made with another request (`id` is the earlier one): the
    /// key cannot be used again for something else.
    pub conflicting: bool,
    pub scheduled_for: Millis,
    /// Set when the fire was sent for later: it is dispatched at this instant.
    pub later: Option<Millis>,
    pub transport: String,
}

/// How long an idempotency key of a manual fire is remembered.
pub const FIRE_KEY_TTL_MS: Millis = 24 * 3600 * 1000;

/// An idempotency key of a manual fire, and a digest of the request it came with.
pub struct FireKey<'a> {
    pub key: &'a str,
    pub request: &'a str,
}

/// Creates an execution outside the schedule, now or at `send_at` (when that is in the future),
/// with `payload` instead of the cue's. With an idempotency key, a second fire with the same key
/// within a day returns the first execution (`conflicting` when it came with another request).
pub fn fire_at(
    conn: &Db<'_>,
    cue_id: &str,
    payload: Option<&Value>,
    send_at: Option<Millis>,
    fire_key: Option<FireKey<'_>>,
    now: Millis,
) -> Result<Fired> {
    let key = fire_key.as_ref().map(|k| k.key);
    let cue = cues::load(conn, cue_id)?.ok_or_else(|| Error::CueNotFound(cue_id.to_string()))?;
    let payload = match payload {
        Some(p) if p.is_object() && !cues::has_nul(p) => p.to_string(),
        Some(p) if p.is_object() => {
            return Err(Error::invalid("payload", "must not contain NUL characters"))
        }
        Some(_) => return Err(Error::invalid("payload", "must be a JSON object")),
        None => cue.payload.clone(),
    };
    let stored_key = key.map(|k| format!("{}:fire:key:{k}", cue.id));
    if let Some(k) = &stored_key {
        let found = conn
            .prepare_cached(
                "SELECT id, scheduled_for, next_retry, fire_request FROM executions
                 WHERE cue_id = ?1 AND triggered_by = 'manual_fire' AND idempotency_key = ?2 AND created_at > ?3
                 ORDER BY created_at DESC LIMIT 1",
            )?
            .query_row(params![cue.id, k, now - FIRE_KEY_TTL_MS], |r| {
                Ok((
                    r.get::<String>(0)?,
                    r.get::<Millis>(1)?,
                    r.get(2)?,
                    r.get::<Option<String>>(3)?,
                ))
            })
            .optional()?;
        if let Some((id, scheduled_for, later, request)) = found {
            let asked = fire_key.as_ref().map(|k| k.request);
            return Ok(Fired {
                id,
                created: false,
                conflicting: request.is_some() && request.as_deref() != asked,
                scheduled_for,
                later,
                transport: cue.transport,
            });
        }
    }
    let later = send_at.filter(|t| *t > now);
    let scheduled_for = later.unwrap_or(now);
    let id = insert_execution(
        conn,
        &cue,
        scheduled_for,
        status::PENDING,
        "manual_fire",
        None,
        &payload,
        stored_key.clone(),
        None,
        now,
    )?
    .ok_or_else(|| Error::Conflict("could not create the execution".into()))?;
    if stored_key.is_none() || later.is_some() || fire_key.is_some() {
        conn.execute(
            "UPDATE executions SET idempotency_key = COALESCE(?3, ?2), next_retry = ?4, fire_request = ?5
             WHERE id = ?1",
            params![
                id,
                format!("{}:fire:{id}", cue.id),
                stored_key,
                later,
                fire_key.as_ref().map(|k| k.request)
            ],
        )?;
    }
    Ok(Fired {
        id,
        created: true,
        conflicting: false,
        scheduled_for,
        later,
        transport: cue.transport,
    })
}

/// Creates an execution now, outside the schedule.
pub fn fire_now(
    conn: &Db<'_>,
    cue_id: &str,
    payload: Option<&Value>,
    now: Millis,
) -> Result<String> {
    Ok(fire_at(conn, cue_id, payload, None, None, now)?.id)
}

/// Chains deeper than this are not followed (loops are refused when a cue is stored; this bounds
/// what a long chain can do).
pub const MAX_CHAIN_DEPTH: i64 = 100;

/// After execution `parent` succeeded: fires the cue its cue chains to (`on_success_fire`), once.
/// The step is an execution like any other (`triggered_by: "chain"`, with `chain_parent_id` and
/// `chain_depth`); one that cannot run — its cue paused or finished, a payload it requires, a chain
/// too deep — is recorded as `skipped` with the reason. Returns the execution to dispatch.
pub(crate) fn chain_after(conn: &Db<'_>, parent: &str, now: Millis) -> Result<Option<Chained>> {
    let found = conn
        .prepare_cached(
            "SELECT c.on_success_fire, e.chain_depth FROM executions e JOIN cues c ON c.id = e.cue_id
             WHERE e.id = ?1 AND c.on_success_fire IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM executions x WHERE x.chain_parent_id = e.id)",
        )?
        .query_row(params![parent], |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)))
        .optional()?;
    let Some((target, depth)) = found else {
        return Ok(None);
    };
    let Some(cue) = cues::load(conn, &target)? else {
        return Ok(None);
    };
    let depth = depth + 1;
    let required: Option<(bool, Option<String>)> = conn
        .prepare_cached(
            "SELECT require_payload_override, required_payload_keys FROM cues WHERE id = ?1",
        )?
        .query_row(params![&target], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (needs_override, keys) = required.unwrap_or((false, None));
    let missing: Vec<String> = keys
        .as_deref()
        .and_then(|k| serde_json::from_str::<Vec<String>>(k).ok())
        .unwrap_or_default()
        .into_iter()
        .filter(|k| {
            serde_json::from_str::<Value>(&cue.payload)
                .ok()
                .and_then(|p| p.get(k).map(|_| ()))
                .is_none()
        })
        .collect();
    let why_not = if cue.status != "active" {
        Some(format!(
            "cue is {}: the chain step from {parent} did not run",
            cue.status
        ))
    } else if depth > MAX_CHAIN_DEPTH {
        Some(format!(
            "the chain from {parent} is deeper than {MAX_CHAIN_DEPTH} steps"
        ))
    } else if needs_override {
        Some(format!(
            "the cue requires a payload_override, which a chain step from {parent} does not carry"
        ))
    } else if !missing.is_empty() {
        Some(format!(
            "the cue's payload lacks the keys it requires ({}): the chain step from {parent} did not run",
            missing.join(", ")
        ))
    } else {
        None
    };
    let state = if why_not.is_some() {
        status::SKIPPED
    } else {
        status::PENDING
    };
    let key = format!("{}:chain:{parent}", cue.id);
    let Some(id) = insert_execution(
        conn,
        &cue,
        now,
        state,
        "chain",
        why_not.as_deref(),
        &cue.payload,
        Some(key),
        None,
        now,
    )?
    else {
        return Ok(None);
    };
    conn.prepare_cached(
        "UPDATE executions SET chain_parent_id = ?2, chain_depth = ?3 WHERE id = ?1",
    )?
    .execute(params![id, parent, depth])?;
    Ok(why_not.is_none().then_some(Chained {
        id,
        transport: cue.transport,
    }))
}

/// Runs an execution again as a new execution with the same payload.
pub fn replay(conn: &Db<'_>, execution_id: &str, now: Millis) -> Result<String> {
    let (cue_id, payload): (String, String) = conn
        .query_row(
            "SELECT cue_id, payload FROM executions WHERE id = ?1",
            params![execution_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .ok_or_else(|| Error::ExecutionNotFound(execution_id.to_string()))?;
    let cue = cues::load(conn, &cue_id)?.ok_or_else(|| Error::CueNotFound(cue_id.clone()))?;
    let key = format!("{cue_id}:replay:{execution_id}:{now}");
    insert_execution(
        conn,
        &cue,
        now,
        status::PENDING,
        "replay",
        None,
        &payload,
        Some(key),
        Some(execution_id),
        now,
    )?
    .ok_or_else(|| Error::Conflict("could not create the execution".into()))
}

/// Pauses an active cue; its next run is kept, so that resuming records the ticks the pause missed.
pub fn pause(conn: &Db<'_>, cue_id: &str, now: Millis) -> Result<()> {
    let cue = cues::load(conn, cue_id)?.ok_or_else(|| Error::CueNotFound(cue_id.to_string()))?;
    if cue.status == "active" {
        cues::set_status(conn, cue_id, "paused", cue.next_run, now)?;
    }
    Ok(())
}

/// Resumes a paused cue: ticks that fell in the pause are recorded as missed; the schedule
/// continues from now.
pub fn resume(conn: &Db<'_>, cue_id: &str, now: Millis) -> Result<Option<Millis>> {
    let cue = cues::load(conn, cue_id)?.ok_or_else(|| Error::CueNotFound(cue_id.to_string()))?;
    if cue.status != "paused" {
        return Ok(cue.next_run);
    }
    let mut ticks = Vec::new();
    let mut extra = 0usize;
    let mut t = cue.next_run;
    while let Some(at) = t {
        if at > now {
            break;
        }
        if ticks.len() < MISSED_ROWS_CAP + 1 {
            ticks.push(at);
        } else {
            extra += 1;
            if extra > MISSED_WALK_CAP {
                break;
            }
        }
        t = cue.schedule.next_after(at);
    }
    record_missed(conn, &cue, &ticks, extra, "missed: the cue was paused", now)?;
    let next = cue.schedule.next_after(now);
    cues::set_status(conn, cue_id, final_status(&cue, next, false), next, now)?;
    Ok(next)
}

/// The status of a cue after its ticks up to now were handled: a schedule with no tick left is
/// done — a recurring one `completed`; a one-shot stays `active` until its run finishes, or is
/// `failed` when its only tick did not run (missed or skipped).
fn final_status(cue: &CueRow, next: Option<Millis>, ran: bool) -> &'static str {
    match (next, cues::is_one_shot(cue), ran) {
        (Some(_), _, _) => "active",
        (None, false, _) => "completed",
        (None, true, true) => "active",
        (None, true, false) => "failed",
    }
}
