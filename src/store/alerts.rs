//! Alerts and the notifications that carry them, written in the same transaction as their cause,
//! so that an alert exists exactly when its cause was committed and a restart loses none.
//!
//! An alert is raised once per incident: the same kind of trouble with the same cue (or worker)
//! within the re-alert interval is counted on the open alert instead of notifying again, and a
//! cue that succeeds after a failure alert sends one `recovered` notice, which closes the incident.
//! Each new alert queues a notification per channel (the user's alert webhook, the cue's
//! `on_failure` webhook, email); the notifier sends them and records how it went.

use std::cell::Cell;

use crate::store::sql::{params, Db, OptionalExt, Row};
use serde_json::{json, Value};

use crate::clock::Millis;
use crate::error::{Error, Result};
use crate::model::new_id;

/// Same trouble within this long is the same alert (unless a `recovered` notice closed it).
pub const DEFAULT_REALERT_MS: i64 = crate::limits::REALERT_MS;

/// Why an email notification was skipped for a user whose address nobody verified.
const UNVERIFIED_EMAIL: &str = "the address was registered while registration was open to anyone and is not verified: alert email goes only to users the operator created (cueapi keys create) or who registered on the server's machine";

/// Alert kinds.
pub mod kind {
    pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";
    pub const OUTCOME_TIMEOUT: &str = "outcome_timeout";
    pub const VERIFICATION_FAILED: &str = "verification_failed";
    pub const CONSECUTIVE_FAILURES: &str = "consecutive_failures";
    pub const MISSED: &str = "missed";
    pub const WORKER_OFFLINE: &str = "worker_offline";
    pub const RECOVERED: &str = "recovered";
    pub const ALL: &[&str] = &[
        RETRIES_EXHAUSTED,
        OUTCOME_TIMEOUT,
        VERIFICATION_FAILED,
        CONSECUTIVE_FAILURES,
        MISSED,
        WORKER_OFFLINE,
        RECOVERED,
    ];
}

thread_local! {
    /// Set on the writer thread when an operation queued a notification; the writer wakes the
    /// notifier once the transaction holding it has committed.
    static QUEUED: Cell<bool> = const { Cell::new(false) };
}

/// Whether notifications were queued since the last call (and clears the mark).
pub(crate) fn take_queued() -> bool {
    QUEUED.with(|q| q.replace(false))
}

/// The re-alert interval stored with the database.
fn realert_ms(conn: &Db<'_>) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT value FROM settings WHERE key = 'realert_ms'")?
        .query_row(params![], |r| r.get::<String>(0))
        .optional()?
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_REALERT_MS))
}

/// Sets the re-alert interval.
pub fn set_realert_ms(conn: &Db<'_>, ms: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO settings (key, value) VALUES ('realert_ms', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![ms.to_string()],
    )?;
    Ok(())
}

/// What an alert is about.
struct Raise<'a> {
    owner: &'a str,
    cue_id: Option<&'a str>,
    execution_id: Option<&'a str>,
    kind: &'static str,
    severity: &'static str,
    message: String,
    metadata: Value,
    dedup_key: String,
    /// Whether the cue's own `on_failure` webhook hears of it.
    cue_webhook: Option<String>,
    /// Whether the user is emailed.
    email: bool,
    /// Whether a new alert opens an incident of its cue (whose next success sends `recovered`).
    opens_incident: bool,
}

/// Stores an alert unless it is the same trouble as an open alert seen within the re-alert
/// interval (then that alert counts one more occurrence). Returns the new alert's id.
fn raise(conn: &Db<'_>, a: Raise<'_>, now: Millis) -> Result<Option<String>> {
    let window = realert_ms(conn)?;
    let seen = conn
        .prepare_cached(
            "UPDATE alerts SET occurrences = occurrences + 1, last_seen_at = ?3
             WHERE id = (SELECT id FROM alerts WHERE owner = ?1 AND dedup_key = ?2 AND resolved_at IS NULL
                         AND created_at + ?4 > ?3 ORDER BY created_at DESC LIMIT 1)",
        )?
        .execute(params![a.owner, a.dedup_key, now, window])?;
    if seen > 0 {
        return Ok(None);
    }
    if let (true, Some(cue_id)) = (a.opens_incident, a.cue_id) {
        set_alerting(conn, cue_id, true)?;
    }
    let id = new_id("alert", now);
    conn.prepare_cached(
        "INSERT INTO alerts (id, owner, cue_id, execution_id, alert_type, severity, message, metadata, dedup_key,
            last_seen_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
    )?
    .execute(params![
        id,
        a.owner,
        a.cue_id,
        a.execution_id,
        a.kind,
        a.severity,
        a.message,
        a.metadata.to_string(),
        a.dedup_key,
        now
    ])?;
    let user: Option<(String, Option<String>, bool)> = conn
        .prepare_cached("SELECT email, alert_webhook_url, email_verified FROM users WHERE id = ?1")?
        .query_row(params![a.owner], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let mut channels: Vec<(&str, String)> = Vec::new();
    if let Some((email, hook, verified)) = user {
        if let Some(url) = hook {
            channels.push(("alert_webhook", url));
        }
        if a.email && verified {
            channels.push(("email", email));
        } else if a.email {
            // Recorded, so the alert shows why nobody was emailed.
            conn.prepare_cached(
                "INSERT INTO notifications (id, alert_id, channel, target, status, next_attempt_at, last_error,
                    created_at)
                 VALUES (?1, ?2, 'email', ?3, 'skipped', ?4, ?5, ?4)",
            )?
            .execute(params![
                new_id("notif", now),
                id,
                email,
                now,
                UNVERIFIED_EMAIL
            ])?;
        }
    }
    if let Some(url) = a.cue_webhook {
        channels.push(("failure_webhook", url));
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO notifications (id, alert_id, channel, target, status, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5)",
    )?;
    for (channel, target) in channels {
        insert.execute(params![new_id("notif", now), id, channel, target, now])?;
        QUEUED.with(|q| q.set(true));
    }
    Ok(Some(id))
}

/// What alerting needs to know about a cue.
struct CueInfo {
    owner: String,
    name: String,
    email: bool,
    webhook: Option<String>,
    threshold: i64,
    streak: i64,
    alerting: bool,
}

fn cue_info(conn: &Db<'_>, cue_id: &str) -> Result<Option<CueInfo>> {
    conn
        .prepare_cached(
            "SELECT owner, name, on_failure_email, on_failure_webhook, alert_consecutive_failures, failure_streak,
                alerting
             FROM cues WHERE id = ?1",
        )?
        .query_row(params![cue_id], |r| {
            Ok(CueInfo {
                owner: r.get(0)?,
                name: r.get(1)?,
                email: r.get(2)?,
                webhook: r.get(3)?,
                threshold: r.get(4)?,
                streak: r.get(5)?,
                alerting: r.get(6)?,
            })
        })
        .optional()
}

/// An execution failed for good (`kind`: retries exhausted, missed, outcome deadline passed).
pub fn execution_failed(
    conn: &Db<'_>,
    cue_id: &str,
    execution_id: &str,
    kind: &'static str,
    error: &str,
    now: Millis,
) -> Result<()> {
    let Some(cue) = cue_info(conn, cue_id)? else {
        return Ok(());
    };
    let (attempts, http_status): (i64, Option<i64>) = conn
        .prepare_cached("SELECT attempts, http_status FROM executions WHERE id = ?1")?
        .query_row(params![execution_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((0, None));
    let what = match kind {
        kind::RETRIES_EXHAUSTED => format!("failed after {attempts} attempt(s)"),
        kind::MISSED => "was not claimed by any worker in time".to_string(),
        kind::OUTCOME_TIMEOUT => "reported no outcome before its deadline".to_string(),
        _ => "failed".to_string(),
    };
    let error: String = error.chars().take(500).collect();
    raise(
        conn,
        Raise {
            owner: &cue.owner,
            cue_id: Some(cue_id),
            execution_id: Some(execution_id),
            kind,
            severity: "critical",
            message: format!("Cue {:?} {what}: {error}", cue.name),
            metadata: json!({"attempts": attempts, "last_error": error, "last_http_status": http_status}),
            dedup_key: format!("{kind}:{cue_id}"),
            cue_webhook: cue.webhook.clone(),
            email: cue.email,
            opens_incident: true,
        },
        now,
    )?;
    Ok(())
}

fn set_alerting(conn: &Db<'_>, cue_id: &str, on: bool) -> Result<()> {
    conn.prepare_cached("UPDATE cues SET alerting = ?2 WHERE id = ?1")?
        .execute(params![cue_id, on])?;
    Ok(())
}

/// An outcome was reported (or given inline): counts failures in a row, raises
/// `consecutive_failures` at the cue's threshold and `verification_failed` when a success lacked
/// its evidence, and closes the incident with `recovered` on a success after a failure alert.
pub fn outcome_reported(
    conn: &Db<'_>,
    cue_id: &str,
    execution_id: &str,
    success: bool,
    state: &str,
    now: Millis,
) -> Result<()> {
    let Some(cue) = cue_info(conn, cue_id)? else {
        return Ok(());
    };
    if state == "verification_failed" {
        raise(
            conn,
            Raise {
                owner: &cue.owner,
                cue_id: Some(cue_id),
                execution_id: Some(execution_id),
                kind: kind::VERIFICATION_FAILED,
                severity: "warning",
                message: format!(
                    "Cue {:?}: execution {execution_id} reported success without the evidence its verification mode requires",
                    cue.name
                ),
                metadata: json!({"outcome_state": state}),
                dedup_key: format!("{}:{cue_id}", kind::VERIFICATION_FAILED),
                cue_webhook: cue.webhook.clone(),
                email: cue.email,
                opens_incident: true,
            },
            now,
        )?;
        return Ok(());
    }
    if !success {
        let streak = cue.streak + 1;
        conn.prepare_cached("UPDATE cues SET failure_streak = ?2 WHERE id = ?1")?
            .execute(params![cue_id, streak])?;
        // At the threshold a new alert; beyond it, the same one seen again (or, past the
        // re-alert interval, a new one): a cue that keeps failing keeps being counted.
        if streak >= cue.threshold {
            raise(
                conn,
                Raise {
                    owner: &cue.owner,
                    cue_id: Some(cue_id),
                    execution_id: Some(execution_id),
                    kind: kind::CONSECUTIVE_FAILURES,
                    severity: "warning",
                    message: format!("Cue {:?} reported {streak} failures in a row", cue.name),
                    metadata: json!({"consecutive_failures": streak, "threshold": cue.threshold}),
                    dedup_key: format!("{}:{cue_id}", kind::CONSECUTIVE_FAILURES),
                    cue_webhook: None,
                    email: cue.email,
                    opens_incident: true,
                },
                now,
            )?;
        }
        return Ok(());
    }
    if cue.streak != 0 {
        conn.prepare_cached("UPDATE cues SET failure_streak = 0 WHERE id = ?1")?
            .execute(params![cue_id])?;
    }
    succeeded(conn, cue_id, execution_id, now)
}

/// An execution of the cue succeeded: after a failure alert, one `recovered` notice that closes
/// the incident (a later failure is a new alert, however soon).
pub fn succeeded(conn: &Db<'_>, cue_id: &str, execution_id: &str, now: Millis) -> Result<()> {
    let Some(cue) = cue_info(conn, cue_id)? else {
        return Ok(());
    };
    if !cue.alerting {
        return Ok(());
    }
    set_alerting(conn, cue_id, false)?;
    conn.prepare_cached(
        "UPDATE alerts SET resolved_at = ?3 WHERE owner = ?1 AND cue_id = ?2 AND resolved_at IS NULL",
    )?
    .execute(params![cue.owner, cue_id, now])?;
    raise(
        conn,
        Raise {
            owner: &cue.owner,
            cue_id: Some(cue_id),
            execution_id: Some(execution_id),
            kind: kind::RECOVERED,
            severity: "info",
            message: format!("Cue {:?} succeeded again", cue.name),
            metadata: json!({}),
            dedup_key: format!("{}:{cue_id}:{now}", kind::RECOVERED),
            cue_webhook: None,
            email: cue.email,
            opens_incident: false,
        },
        now,
    )?;
    Ok(())
}

/// A worker has not been heard from for `silent_ms`: one `worker_offline` alert (emailed to its
/// owner) until it is heard from again.
pub fn worker_offline(
    conn: &Db<'_>,
    owner: &str,
    worker_id: &str,
    silent_ms: i64,
    now: Millis,
) -> Result<()> {
    let waiting: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM executions e JOIN cues c ON c.id = e.cue_id
             WHERE c.owner = ?1 AND c.transport = 'worker' AND e.status IN ('pending', 'delivering')",
        )?
        .query_row(params![owner], |r| r.get(0))?;
    raise(
        conn,
        Raise {
            owner,
            cue_id: None,
            execution_id: None,
            kind: kind::WORKER_OFFLINE,
            severity: "critical",
            message: format!(
                "Worker {worker_id:?} has not been heard from for {} s ({waiting} worker execution(s) waiting or claimed)",
                silent_ms / 1000
            ),
            metadata: json!({"worker_id": worker_id, "silent_seconds": silent_ms / 1000, "executions_waiting": waiting}),
            dedup_key: format!("{}:{worker_id}", kind::WORKER_OFFLINE),
            cue_webhook: None,
            email: true,
            opens_incident: false,
        },
        now,
    )?;
    Ok(())
}

/// A worker that was reported offline is heard from again: one `recovered` notice.
pub fn worker_back(conn: &Db<'_>, owner: &str, worker_id: &str, now: Millis) -> Result<()> {
    let key = format!("{}:{worker_id}", kind::WORKER_OFFLINE);
    conn.prepare_cached(
        "UPDATE alerts SET resolved_at = ?3 WHERE owner = ?1 AND dedup_key = ?2 AND resolved_at IS NULL",
    )?
    .execute(params![owner, key, now])?;
    raise(
        conn,
        Raise {
            owner,
            cue_id: None,
            execution_id: None,
            kind: kind::RECOVERED,
            severity: "info",
            message: format!("Worker {worker_id:?} is heard from again"),
            metadata: json!({"worker_id": worker_id}),
            dedup_key: format!("{}:worker:{worker_id}:{now}", kind::RECOVERED),
            cue_webhook: None,
            email: true,
            opens_incident: false,
        },
        now,
    )?;
    Ok(())
}

/// An execution of the cue was delivered (2xx) with its outcome still to come: that closes an
/// incident of failed deliveries, but not one opened by what handlers reported
/// (`consecutive_failures`, `verification_failed`, `outcome_timeout`), which a successful report
/// closes.
pub fn delivered_again(conn: &Db<'_>, cue_id: &str, execution_id: &str, now: Millis) -> Result<()> {
    let outcome_trouble: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM alerts WHERE cue_id = ?1 AND resolved_at IS NULL
                AND alert_type IN ('consecutive_failures', 'verification_failed', 'outcome_timeout'))",
        )?
        .query_row(params![cue_id], |r| r.get(0))?;
    if outcome_trouble {
        return Ok(());
    }
    succeeded(conn, cue_id, execution_id, now)
}

/// Filters for listing alerts.
#[derive(Debug, Default, Clone)]
pub struct AlertFilter {
    pub alert_type: Option<String>,
    pub cue_id: Option<String>,
    pub since: Option<Millis>,
    pub acknowledged: Option<bool>,
    pub limit: i64,
    pub offset: i64,
}

fn alert_json(r: &Row<'_>) -> Result<Value> {
    let metadata: String = r.get(7)?;
    let acked: Option<Millis> = r.get(10)?;
    Ok(json!({
        "id": r.get::<String>(0)?,
        "cue_id": r.get::<Option<String>>(1)?,
        "execution_id": r.get::<Option<String>>(2)?,
        "alert_type": r.get::<String>(3)?,
        "severity": r.get::<String>(4)?,
        "message": r.get::<String>(5)?,
        "occurrences": r.get::<i64>(6)?,
        "metadata": serde_json::from_str::<Value>(&metadata).unwrap_or_else(|_| json!({})),
        "last_seen_at": r.get::<Millis>(8)?,
        "resolved_at": r.get::<Option<Millis>>(9)?,
        "acknowledged": acked.is_some(),
        "acknowledged_at": acked,
        "created_at": r.get::<Millis>(11)?,
    }))
}

const ALERT_COLUMNS: &str =
    "id, cue_id, execution_id, alert_type, severity, message, occurrences, metadata,
    last_seen_at, resolved_at, acknowledged_at, created_at";

/// One page of an owner's alerts, newest first, and how many match.
pub fn list(conn: &Db<'_>, owner: &str, f: &AlertFilter) -> Result<(Vec<Value>, i64)> {
    let cond = "owner = ?1 AND (?2 IS NULL OR alert_type = ?2) AND (?3 IS NULL OR cue_id = ?3)
        AND (?4 IS NULL OR created_at >= ?4)
        AND (?5 IS NULL OR (acknowledged_at IS NOT NULL) = ?5)";
    let total: i64 = conn
        .prepare_cached(&format!("SELECT count(*) FROM alerts WHERE {cond}"))?
        .query_row(
            params![owner, f.alert_type, f.cue_id, f.since, f.acknowledged],
            |r| r.get(0),
        )?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE {cond} ORDER BY created_at DESC, id DESC LIMIT ?6 OFFSET ?7"
    ))?;
    let rows = stmt.query_map(
        params![
            owner,
            f.alert_type,
            f.cue_id,
            f.since,
            f.acknowledged,
            f.limit,
            f.offset
        ],
        alert_json,
    )?;
    Ok((rows, total))
}

/// One of the owner's alerts, with how each of its notifications went.
pub fn get(conn: &Db<'_>, owner: &str, id: &str) -> Result<Value> {
    let mut alert = conn
        .prepare_cached(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1 AND owner = ?2"
        ))?
        .query_row(params![id, owner], alert_json)
        .optional()?
        .ok_or_else(|| Error::AlertNotFound(id.to_string()))?;
    let mut stmt = conn.prepare_cached(
        "SELECT channel, status, attempts, last_error, sent_at, next_attempt_at FROM notifications
         WHERE alert_id = ?1 ORDER BY created_at, id",
    )?;
    let sent: Vec<Value> = stmt.query_map(params![id], |r| {
        let status: String = r.get(1)?;
        Ok(json!({
            "channel": r.get::<String>(0)?,
            "status": status,
            "attempts": r.get::<i64>(2)?,
            "last_error": r.get::<Option<String>>(3)?,
            "sent_at": r.get::<Option<Millis>>(4)?,
            "next_attempt_at": if status == "pending" { Some(r.get::<Millis>(5)?) } else { None },
        }))
    })?;
    alert["notifications"] = Value::Array(sent);
    Ok(alert)
}

/// Acknowledges one of the owner's alerts (again is a no-op). Returns it.
pub fn acknowledge(conn: &Db<'_>, owner: &str, id: &str, now: Millis) -> Result<Value> {
    conn.prepare_cached(
        "UPDATE alerts SET acknowledged_at = COALESCE(acknowledged_at, ?3) WHERE id = ?1 AND owner = ?2",
    )?
    .execute(params![id, owner, now])?;
    get(conn, owner, id)
}

/// A notification due to be sent, with what its message is made of.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: String,
    pub channel: String,
    pub target: String,
    pub attempts: i64,
    /// The alert as the API shows it (times in UTC milliseconds).
    pub alert: Value,
    pub cue_name: Option<String>,
    /// The secret that signs it: the user's alert secret, or (for the cue's failure webhook) the
    /// user's webhook secret.
    pub secret: Option<String>,
}

/// Notifications due by `now`, oldest first, and when the next later one is due.
pub fn due(conn: &Db<'_>, now: Millis, limit: i64) -> Result<(Vec<Due>, Option<Millis>)> {
    // The alert's columns first, so that `alert_json` reads them where it always does.
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {}, n.id, n.channel, n.target, n.attempts, c.name, u.alert_webhook_secret, u.webhook_secret
         FROM notifications n JOIN alerts a ON a.id = n.alert_id
         LEFT JOIN cues c ON c.id = a.cue_id LEFT JOIN users u ON u.id = a.owner
         WHERE n.status = 'pending' AND n.next_attempt_at <= ?1
         ORDER BY n.next_attempt_at, n.id LIMIT ?2",
        ALERT_COLUMNS
            .split(',')
            .map(|c| format!("a.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    ))?;
    let rows = stmt.query_map(params![now, limit], |r| {
        let mut alert = alert_json(r)?;
        // Notifications carry the alert as it was raised, without its acknowledgement time.
        if let Some(m) = alert.as_object_mut() {
            m.remove("acknowledged_at");
        }
        let channel: String = r.get(13)?;
        let (alert_secret, webhook_secret): (Option<String>, Option<String>) =
            (r.get(17)?, r.get(18)?);
        Ok(Due {
            id: r.get(12)?,
            secret: if channel == "failure_webhook" {
                webhook_secret
            } else {
                alert_secret
            },
            channel,
            target: r.get(14)?,
            attempts: r.get(15)?,
            cue_name: r.get(16)?,
            alert,
        })
    })?;
    let list: Vec<Due> = rows;
    let next = conn
        .prepare_cached(
            "SELECT min(next_attempt_at) FROM notifications WHERE status = 'pending' AND next_attempt_at > ?1",
        )?
        .query_row(params![now], |r| r.get::<Option<Millis>>(0))?;
    Ok((list, next))
}

/// Takes the notifications among `ids` still due at `now`, holding them until `now + hold_ms`.
pub fn take_due(conn: &Db<'_>, ids: &[String], now: Millis, hold_ms: i64) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "UPDATE notifications SET next_attempt_at = ?3
         WHERE id = ?1 AND status = 'pending' AND next_attempt_at <= ?2",
    )?;
    let mut taken = Vec::with_capacity(ids.len());
    for id in ids {
        if stmt.execute(params![id, now, now + hold_ms])? == 1 {
            taken.push(id.clone());
        }
    }
    Ok(taken)
}

/// How sending a notification went.
#[derive(Debug, Clone)]
pub enum Sent {
    Delivered,
    /// Failed; try again then (None: give up).
    Failed {
        error: String,
        retry_at: Option<Millis>,
    },
    /// Not sent, on purpose (the channel is not configured).
    Skipped(String),
}

/// Records how sending a notification went.
pub fn record_sent(conn: &Db<'_>, id: &str, sent: &Sent, now: Millis) -> Result<()> {
    let (status, error, next) = match sent {
        Sent::Delivered => ("sent", None, None),
        Sent::Failed {
            error,
            retry_at: Some(at),
        } => ("pending", Some(error.as_str()), Some(*at)),
        Sent::Failed {
            error,
            retry_at: None,
        } => ("failed", Some(error.as_str()), None),
        Sent::Skipped(why) => ("skipped", Some(why.as_str()), None),
    };
    conn.prepare_cached(
        "UPDATE notifications SET status = ?2, attempts = attempts + 1, last_error = ?3,
            next_attempt_at = COALESCE(?4, next_attempt_at), sent_at = CASE WHEN ?2 = 'sent' THEN ?5 END
         WHERE id = ?1",
    )?
    .execute(params![id, status, error, next, now])?;
    Ok(())
}

/// An owner's alert webhook: sets (or with `None` clears) the URL; a secret is made on first use.
pub fn set_alert_webhook(conn: &Db<'_>, owner: &str, url: Option<&str>, now: Millis) -> Result<()> {
    conn.prepare_cached(
        "UPDATE users SET alert_webhook_url = ?2, updated_at = ?3,
            alert_webhook_secret = COALESCE(alert_webhook_secret, ?4) WHERE id = ?1",
    )?
    .execute(params![owner, url, now, super::users::new_alert_secret()])?;
    Ok(())
}

/// The owner's alert webhook URL and secret (the secret is made on first ask and kept).
pub fn alert_webhook(conn: &Db<'_>, owner: &str, now: Millis) -> Result<(Option<String>, String)> {
    conn.prepare_cached(
        "UPDATE users SET alert_webhook_secret = ?2, updated_at = ?3
         WHERE id = ?1 AND alert_webhook_secret IS NULL",
    )?
    .execute(params![owner, super::users::new_alert_secret(), now])?;
    conn.prepare_cached("SELECT alert_webhook_url, alert_webhook_secret FROM users WHERE id = ?1")?
        .query_row(params![owner], |r| Ok((r.get(0)?, r.get(1)?)))
}

/// Replaces the owner's alert secret; returns the new one.
pub fn regenerate_alert_secret(conn: &Db<'_>, owner: &str, now: Millis) -> Result<String> {
    let secret = super::users::new_alert_secret();
    conn.prepare_cached(
        "UPDATE users SET alert_webhook_secret = ?2, updated_at = ?3 WHERE id = ?1",
    )?
    .execute(params![owner, secret, now])?;
    Ok(secret)
}
