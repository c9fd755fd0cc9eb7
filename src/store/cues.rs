//! Cue rows: definition, validation, upsert by name, state changes.

use std::collections::BTreeMap;

use crate::store::sql::{json_items, params, Db, OptionalExt, Row};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::clock::Millis;
use crate::delivery;
use crate::error::{Error, Result};
use crate::model::{new_id, VERIFICATION_MODES};
use crate::schedule::{parse_every, parse_instant, parse_timezone, Kind, Schedule};

/// The owner of cues created by the embedded library.
pub const LOCAL_OWNER: &str = "local";

/// A cue definition as a program states it (decorator arguments, later the HTTP body).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CueSpec {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "default_transport")]
    pub transport: String,
    #[serde(default)]
    pub cron: Option<String>,
    #[serde(default)]
    pub at: Option<String>,
    #[serde(default)]
    pub every: Option<String>,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default = "empty_object")]
    pub payload: Value,
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    #[serde(default)]
    pub outcome_deadline_seconds: Option<i64>,
    #[serde(default)]
    pub verification_mode: Option<String>,
    #[serde(default = "default_overlap")]
    pub overlap: String,
    #[serde(default = "default_catch_up")]
    pub catch_up: String,
    #[serde(default = "default_catch_up_max")]
    pub catch_up_max: i64,
    #[serde(default)]
    pub on_failure_pause: bool,
    /// Webhook transport: where to deliver.
    #[serde(default)]
    pub callback_url: Option<String>,
    #[serde(default = "default_method")]
    pub callback_method: String,
    /// Extra request headers; they can never replace the headers cueapi signs with.
    #[serde(default)]
    pub callback_headers: BTreeMap<String, String>,
    /// A total deadline for one delivery attempt (connect, send, response).
    #[serde(default = "default_delivery_timeout")]
    pub delivery_timeout_seconds: i64,
    /// `v1` (the CueAPI scheme) or `sha256` (the older `sha256=<hex of the body>`).
    #[serde(default = "default_scheme")]
    pub signature_scheme: String,
    #[serde(default = "default_true")]
    pub on_failure_email: bool,
    #[serde(default)]
    pub on_failure_webhook: Option<String>,
    /// Worker transport: how long an execution may wait for a worker's claim before it is missed.
    #[serde(default = "default_claim_timeout")]
    pub claim_timeout_seconds: i64,
    /// Reported failures in a row that raise a `consecutive_failures` alert.
    #[serde(default = "default_alert_streak")]
    pub alert_consecutive_failures: i64,
    /// The owner's cue to fire when an execution of this one succeeds.
    #[serde(default)]
    pub on_success_fire: Option<String>,
    /// Keys a manual fire's payload must have (after `payload_override` is applied).
    #[serde(default)]
    pub required_payload_keys: Option<Vec<String>>,
    /// Whether a manual fire must carry a `payload_override`.
    #[serde(default)]
    pub require_payload_override: bool,
}

/// Retry policy: after the first try fails, up to `max_attempts` retries, `backoff_minutes` apart
/// (the last value repeats).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    #[serde(default = "default_max_attempts")]
    pub max_attempts: i64,
    #[serde(default = "default_backoff")]
    pub backoff_minutes: Vec<f64>,
    /// Whether a reported failure (`success: false`) is retried too. By default it is final: it is
    /// the handler's verdict, while a failed delivery (or an exception) is retried.
    #[serde(default)]
    pub retry_reported_failures: bool,
}

fn default_transport() -> String {
    "local".into()
}
fn default_timezone() -> String {
    "UTC".into()
}
fn empty_object() -> Value {
    json!({})
}
fn default_overlap() -> String {
    "skip".into()
}
fn default_catch_up() -> String {
    "once".into()
}
fn default_catch_up_max() -> i64 {
    100
}
fn default_method() -> String {
    "POST".into()
}
fn default_delivery_timeout() -> i64 {
    30
}
fn default_claim_timeout() -> i64 {
    900
}

fn default_alert_streak() -> i64 {
    3
}

fn default_scheme() -> String {
    "v1".into()
}
fn default_true() -> bool {
    true
}
fn default_max_attempts() -> i64 {
    3
}
fn default_backoff() -> Vec<f64> {
    vec![1.0, 5.0, 15.0]
}

/// A validated definition, in the shape of the `cues` columns.
#[derive(Clone, Debug, PartialEq)]
struct Def {
    name: String,
    description: Option<String>,
    transport: String,
    schedule_type: &'static str,
    cron: Option<String>,
    at: Option<Millis>,
    every_ms: Option<i64>,
    timezone: String,
    payload: String,
    max_attempts: i64,
    backoff: String,
    deadline: Option<i64>,
    verification_mode: Option<String>,
    overlap: String,
    catch_up: String,
    catch_up_max: i64,
    on_failure_pause: bool,
    callback_url: Option<String>,
    callback_method: String,
    callback_headers: String,
    delivery_timeout_seconds: i64,
    signature_scheme: String,
    on_failure_email: bool,
    on_failure_webhook: Option<String>,
    claim_timeout_seconds: i64,
    alert_consecutive_failures: i64,
    on_success_fire: Option<String>,
    required_payload_keys: Option<String>,
    require_payload_override: bool,
    retry_reported_failures: bool,
}

impl Def {
    fn same_schedule(&self, other: &Def) -> bool {
        (
            self.schedule_type,
            &self.cron,
            self.at,
            self.every_ms,
            &self.timezone,
        ) == (
            other.schedule_type,
            &other.cron,
            other.at,
            other.every_ms,
            &other.timezone,
        )
    }
}

fn one_of(field: &'static str, value: &str, allowed: &[&str]) -> Result<()> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("{value:?} is not one of {}", allowed.join(", ")),
        ))
    }
}

impl CueSpec {
    fn validate(&self) -> Result<(Def, Schedule)> {
        let name = self.name.trim();
        if name.is_empty() || name.len() > 255 {
            return Err(Error::invalid("name", "must be 1 to 255 characters"));
        }
        one_of(
            "transport",
            &self.transport,
            &["local", "webhook", "worker"],
        )?;
        one_of("overlap", &self.overlap, &["skip", "allow"])?;
        let catch_up = catch_up_policy(&self.catch_up).ok_or_else(|| {
            Error::invalid(
                "catch_up",
                format!(
                    "{:?} is not one of run_once_if_missed, skip_missed, replay_all (or once, skip, all)",
                    self.catch_up
                ),
            )
        })?;
        if !(1..=100_000).contains(&self.catch_up_max) {
            return Err(Error::invalid(
                "catch_up_max",
                "must be between 1 and 100000",
            ));
        }
        if let Some(mode) = &self.verification_mode {
            one_of("verification_mode", mode, VERIFICATION_MODES)?;
        }
        if !self.payload.is_object() {
            return Err(Error::invalid("payload", "must be a JSON object"));
        }
        if has_nul(&self.payload) {
            return Err(Error::invalid("payload", "must not contain NUL characters"));
        }
        let payload = serde_json::to_string(&self.payload)?;
        if payload.len() > 1 << 20 {
            return Err(Error::invalid("payload", "is larger than 1 MiB"));
        }
        let method = self.callback_method.to_ascii_uppercase();
        one_of("callback.method", &method, &["POST", "GET", "PUT", "PATCH"])?;
        one_of(
            "signature_scheme",
            &self.signature_scheme,
            &["v1", "sha256"],
        )?;
        if !(1..=3600).contains(&self.delivery_timeout_seconds) {
            return Err(Error::invalid(
                "delivery.timeout_seconds",
                "must be between 1 and 3600",
            ));
        }
        if !(1..=10_000).contains(&self.alert_consecutive_failures) {
            return Err(Error::invalid(
                "alerts.consecutive_failures",
                "must be between 1 and 10000",
            ));
        }
        if !(1..=30 * 86_400).contains(&self.claim_timeout_seconds) {
            return Err(Error::invalid(
                "delivery.claim_timeout_seconds",
                "must be between 1 and 2592000 (30 days)",
            ));
        }
        let callback_url = match self.callback_url.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(u) => {
                Some(delivery::check_url_syntax(u).map_err(|m| Error::invalid("callback.url", m))?)
            }
        };
        if self.transport == "webhook" && callback_url.is_none() {
            return Err(Error::invalid(
                "callback.url",
                "is required for the webhook transport",
            ));
        }
        let on_failure_webhook = match self.on_failure_webhook.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(u) => Some(
                delivery::check_url_syntax(u)
                    .map_err(|m| Error::invalid("on_failure.webhook", m))?,
            ),
        };
        delivery::check_headers(&self.callback_headers)
            .map_err(|m| Error::invalid("callback.headers", m))?;
        let retry = self.retry.clone().unwrap_or(RetrySpec {
            max_attempts: 3,
            backoff_minutes: default_backoff(),
            retry_reported_failures: false,
        });
        let on_success_fire = match self.on_success_fire.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(id) if id.len() > 64 || !id.starts_with("cue_") => {
                return Err(Error::invalid(
                    "on_success_fire",
                    format!("{id:?} is not a cue id (cue_...)"),
                ))
            }
            Some(id) => Some(id.to_string()),
        };
        let required_payload_keys = match &self.required_payload_keys {
            None => None,
            Some(keys) => {
                if keys.len() > 50 || keys.iter().any(|k| k.is_empty() || k.len() > 255) {
                    return Err(Error::invalid(
                        "required_payload_keys",
                        "must be at most 50 keys of 1 to 255 characters",
                    ));
                }
                let mut unique = keys.clone();
                unique.sort();
                unique.dedup();
                Some(serde_json::to_string(&unique)?)
            }
        };
        if !(0..=10).contains(&retry.max_attempts) {
            return Err(Error::invalid(
                "retry.max_attempts",
                "must be between 0 and 10",
            ));
        }
        if retry.backoff_minutes.len() > 10
            || retry
                .backoff_minutes
                .iter()
                .any(|m| !m.is_finite() || *m < 0.0 || *m > 7.0 * 24.0 * 60.0)
        {
            return Err(Error::invalid(
                "retry.backoff_minutes",
                "must be at most 10 numbers of minutes between 0 and one week",
            ));
        }
        if let Some(d) = self.outcome_deadline_seconds {
            if !(1..=7 * 24 * 3600).contains(&d) {
                return Err(Error::invalid(
                    "outcome_deadline",
                    "must be between 1 second and one week",
                ));
            }
        }
        let tz = parse_timezone(&self.timezone)?;
        let given = [self.cron.is_some(), self.at.is_some(), self.every.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if given != 1 {
            return Err(Error::InvalidSchedule(
                "give exactly one of a cron expression, `every` or `at`".into(),
            ));
        }
        let (schedule_type, schedule, cron, at, every_ms) = if let Some(expr) = &self.cron {
            // Validity is checked against "now" when stored; a placeholder instant here.
            let s = Schedule::cron(expr, tz.name(), crate::clock::system_now())?;
            ("recurring", s, Some(expr.trim().to_string()), None, None)
        } else if let Some(every) = &self.every {
            let ms = parse_every(every)?;
            (
                "interval",
                Schedule::every(ms, tz.name())?,
                None,
                None,
                Some(ms),
            )
        } else {
            let at = parse_instant(self.at.as_deref().unwrap_or_default(), tz)?;
            (
                "once",
                Schedule::once_unchecked(at, tz.name())?,
                None,
                Some(at),
                None,
            )
        };
        let def = Def {
            name: name.to_string(),
            description: self.description.clone(),
            transport: self.transport.clone(),
            schedule_type,
            cron,
            at,
            every_ms,
            timezone: tz.name().to_string(),
            payload,
            max_attempts: retry.max_attempts,
            backoff: serde_json::to_string(&retry.backoff_minutes)?,
            deadline: self.outcome_deadline_seconds,
            verification_mode: self.verification_mode.clone().filter(|m| m != "none"),
            overlap: self.overlap.clone(),
            catch_up: catch_up.to_string(),
            catch_up_max: self.catch_up_max,
            on_failure_pause: self.on_failure_pause,
            callback_url,
            callback_method: method,
            callback_headers: serde_json::to_string(&self.callback_headers)?,
            delivery_timeout_seconds: self.delivery_timeout_seconds,
            signature_scheme: self.signature_scheme.clone(),
            on_failure_email: self.on_failure_email,
            on_failure_webhook,
            claim_timeout_seconds: self.claim_timeout_seconds,
            alert_consecutive_failures: self.alert_consecutive_failures,
            on_success_fire,
            required_payload_keys,
            require_payload_override: self.require_payload_override,
            retry_reported_failures: retry.retry_reported_failures,
        };
        Ok((def, schedule))
    }
}

/// A catch-up policy in the store's words (`once`, `skip`, `all`) from either vocabulary: the
/// hosted service's (`run_once_if_missed`, `skip_missed`, `replay_all`) or ours.
pub fn catch_up_policy(name: &str) -> Option<&'static str> {
    match name {
        "once" | "run_once_if_missed" => Some("once"),
        "skip" | "skip_missed" => Some("skip"),
        "all" | "replay_all" => Some("all"),
        _ => None,
    }
}

/// A stored catch-up policy as the hosted service names it.
pub fn catch_up_name(policy: &str) -> &'static str {
    match policy {
        "skip" => "skip_missed",
        "all" => "replay_all",
        _ => "run_once_if_missed",
    }
}

/// What the engine needs to know about a cue to fire it.
#[derive(Clone, Debug)]
pub struct CueRow {
    pub id: String,
    pub name: String,
    pub status: String,
    pub transport: String,
    pub schedule: Schedule,
    pub payload: String,
    pub max_attempts: i64,
    pub backoff_minutes: Vec<f64>,
    pub outcome_deadline_seconds: Option<i64>,
    pub verification_mode: Option<String>,
    pub overlap: String,
    pub catch_up: String,
    pub catch_up_max: i64,
    pub on_failure_pause: bool,
    pub next_run: Option<Millis>,
}

const CUE_COLUMNS: &str = "id, name, status, transport, schedule_type, schedule_cron, schedule_at, schedule_every_ms, \
     schedule_timezone, payload, retry_max_attempts, retry_backoff_minutes, outcome_deadline_seconds, \
     verification_mode, overlap_policy, catch_up_policy, catch_up_max, on_failure_pause, next_run";

fn cue_from_row(r: &Row<'_>) -> Result<Result<CueRow>> {
    let schedule_type: String = r.get(4)?;
    let cron: Option<String> = r.get(5)?;
    let at: Option<Millis> = r.get(6)?;
    let every: Option<i64> = r.get(7)?;
    let tz: String = r.get(8)?;
    let backoff: String = r.get(11)?;
    let schedule = match schedule_type.as_str() {
        "recurring" => Schedule::cron_stored(cron.as_deref().unwrap_or_default(), &tz),
        "interval" => Schedule::every(every.unwrap_or_default(), &tz),
        _ => Schedule::once_unchecked(at.unwrap_or_default(), &tz),
    };
    let backoff_minutes = serde_json::from_str::<Vec<f64>>(&backoff);
    Ok((|| {
        Ok(CueRow {
            id: r.get(0)?,
            name: r.get(1)?,
            status: r.get(2)?,
            transport: r.get(3)?,
            schedule: schedule?,
            payload: r.get(9)?,
            max_attempts: r.get(10)?,
            backoff_minutes: backoff_minutes?,
            outcome_deadline_seconds: r.get(12)?,
            verification_mode: r.get(13)?,
            overlap: r.get(14)?,
            catch_up: r.get(15)?,
            catch_up_max: r.get(16)?,
            on_failure_pause: r.get(17)?,
            next_run: r.get(18)?,
        })
    })())
}

/// Loads a cue by id.
pub fn load(conn: &Db<'_>, id: &str) -> Result<Option<CueRow>> {
    let sql = format!("SELECT {CUE_COLUMNS} FROM cues WHERE id = ?1");
    conn.prepare_cached(&sql)?
        .query_row(params![id], cue_from_row)
        .optional()?
        .transpose()
}

/// What completing a run needs to know about its cue: cheaper to read than a whole [`CueRow`].
#[derive(Clone, Debug)]
pub struct Policy {
    pub id: String,
    pub status: String,
    pub one_shot: bool,
    pub max_attempts: i64,
    pub backoff_minutes: Vec<f64>,
    pub verification_mode: Option<String>,
    pub on_failure_pause: bool,
    /// Whether alerting has anything to track for this cue's next success: a failure streak
    /// to reset or an open failure alert to close.
    pub alert_state: bool,
    /// Whether reported failures are retried like failed runs.
    pub retry_reported_failures: bool,
}

/// Loads a cue's retry, verification and failure policy.
pub fn load_policy(conn: &Db<'_>, id: &str) -> Result<Option<Policy>> {
    let row = conn
        .prepare_cached(
            "SELECT status, schedule_type, retry_max_attempts, retry_backoff_minutes, verification_mode,
                    on_failure_pause, failure_streak != 0 OR alerting, retry_reported_failures
             FROM cues WHERE id = ?1",
        )?
        .query_row(params![id], |r| {
            Ok((
                r.get::<String>(0)?,
                r.get::<String>(1)?,
                r.get::<i64>(2)?,
                r.get::<String>(3)?,
                r.get::<Option<String>>(4)?,
                r.get::<bool>(5)?,
                r.get::<bool>(6)?,
                r.get::<bool>(7)?,
            ))
        })
        .optional()?;
    let Some((
        status,
        schedule_type,
        max_attempts,
        backoff,
        verification_mode,
        on_failure_pause,
        alert_state,
        retry_reported_failures,
    )) = row
    else {
        return Ok(None);
    };
    Ok(Some(Policy {
        id: id.to_string(),
        status,
        one_shot: schedule_type == "once",
        max_attempts,
        backoff_minutes: serde_json::from_str(&backoff)?,
        verification_mode,
        on_failure_pause,
        alert_state,
        retry_reported_failures,
    }))
}

/// Resolves a cue reference (id or name) to its id.
pub fn resolve(conn: &Db<'_>, owner: &str, id_or_name: &str) -> Result<String> {
    conn.query_row(
        "SELECT id FROM cues WHERE owner = ?1 AND (id = ?2 OR name = ?2) ORDER BY id = ?2 DESC LIMIT 1",
        params![owner, id_or_name],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| Error::CueNotFound(id_or_name.to_string()))
}

/// The result of storing a definition: the cue id and its (possibly new) next fire time.
#[derive(Debug)]
pub struct Upserted {
    pub id: String,
    pub next_run: Option<Millis>,
    pub created: bool,
    pub changed: bool,
}

fn first_fire(schedule: &Schedule, now: Millis) -> Option<Millis> {
    schedule.next_after(now)
}

const DEF_COLUMNS: &str = "id, name, description, transport, schedule_type, schedule_cron, schedule_at, schedule_every_ms,
    schedule_timezone, payload, retry_max_attempts, retry_backoff_minutes, outcome_deadline_seconds,
    verification_mode, overlap_policy, catch_up_policy, catch_up_max, on_failure_pause, status, next_run,
    callback_url, callback_method, callback_headers, delivery_timeout_seconds, signature_scheme,
    on_failure_email, on_failure_webhook, claim_timeout_seconds, alert_consecutive_failures,
    on_success_fire, required_payload_keys, require_payload_override, retry_reported_failures";

/// A stored definition: (id, definition, status, next_run).
type Stored = (String, Def, String, Option<Millis>);

fn def_from_row(r: &Row<'_>) -> Result<Stored> {
    let schedule_type: String = r.get(4)?;
    let st: &'static str = match schedule_type.as_str() {
        "recurring" => "recurring",
        "interval" => "interval",
        _ => "once",
    };
    Ok((
        r.get(0)?,
        Def {
            name: r.get(1)?,
            description: r.get(2)?,
            transport: r.get(3)?,
            schedule_type: st,
            cron: r.get(5)?,
            at: r.get(6)?,
            every_ms: r.get(7)?,
            timezone: r.get(8)?,
            payload: r.get(9)?,
            max_attempts: r.get(10)?,
            backoff: r.get(11)?,
            deadline: r.get(12)?,
            verification_mode: r.get(13)?,
            overlap: r.get(14)?,
            catch_up: r.get(15)?,
            catch_up_max: r.get(16)?,
            on_failure_pause: r.get(17)?,
            callback_url: r.get(20)?,
            callback_method: r.get(21)?,
            callback_headers: r.get(22)?,
            delivery_timeout_seconds: r.get(23)?,
            signature_scheme: r.get(24)?,
            on_failure_email: r.get(25)?,
            on_failure_webhook: r.get(26)?,
            claim_timeout_seconds: r.get(27)?,
            alert_consecutive_failures: r.get(28)?,
            on_success_fire: r.get(29)?,
            required_payload_keys: r.get(30)?,
            require_payload_override: r.get(31)?,
            retry_reported_failures: r.get(32)?,
        },
        r.get(18)?,
        r.get(19)?,
    ))
}

fn load_def(conn: &Db<'_>, owner: &str, column: &str, key: &str) -> Result<Option<Stored>> {
    let sql = format!("SELECT {DEF_COLUMNS} FROM cues WHERE owner = ?1 AND {column} = ?2");
    conn.prepare_cached(&sql)?
        .query_row(params![owner, key], def_from_row)
        .optional()
}

/// The definition of the owner's cue `id`, as a spec that can be changed and stored again.
pub fn spec_of(conn: &Db<'_>, owner: &str, id: &str) -> Result<CueSpec> {
    let (_, d, _, _) =
        load_def(conn, owner, "id", id)?.ok_or_else(|| Error::CueNotFound(id.to_string()))?;
    Ok(CueSpec {
        name: d.name,
        description: d.description,
        transport: d.transport,
        cron: d.cron,
        at: d.at.map(crate::schedule::format_utc),
        every: d.every_ms.map(|ms| format!("{}s", ms / 1000)),
        timezone: d.timezone,
        payload: serde_json::from_str(&d.payload)?,
        retry: Some(RetrySpec {
            max_attempts: d.max_attempts,
            backoff_minutes: serde_json::from_str(&d.backoff)?,
            retry_reported_failures: d.retry_reported_failures,
        }),
        outcome_deadline_seconds: d.deadline,
        verification_mode: d.verification_mode,
        overlap: d.overlap,
        catch_up: d.catch_up,
        catch_up_max: d.catch_up_max,
        on_failure_pause: d.on_failure_pause,
        callback_url: d.callback_url,
        callback_method: d.callback_method,
        callback_headers: serde_json::from_str(&d.callback_headers)?,
        delivery_timeout_seconds: d.delivery_timeout_seconds,
        signature_scheme: d.signature_scheme,
        on_failure_email: d.on_failure_email,
        on_failure_webhook: d.on_failure_webhook,
        claim_timeout_seconds: d.claim_timeout_seconds,
        alert_consecutive_failures: d.alert_consecutive_failures,
        on_success_fire: d.on_success_fire,
        required_payload_keys: d
            .required_payload_keys
            .as_deref()
            .map(serde_json::from_str)
            .transpose()?,
        require_payload_override: d.require_payload_override,
    })
}

/// Refuses an `on_success_fire` target that is not one of the owner's cues, or that would close a
/// loop back to `this` cue (None: a cue not stored yet, which nothing can point to).
fn check_chain(conn: &Db<'_>, owner: &str, this: Option<&str>, target: &str) -> Result<()> {
    let next_of = |id: &str| -> Result<Option<Option<String>>> {
        conn.prepare_cached("SELECT on_success_fire FROM cues WHERE id = ?1 AND owner = ?2")?
            .query_row(params![id, owner], |r| r.get::<Option<String>>(0))
            .optional()
    };
    if next_of(target)?.is_none() {
        return Err(Error::invalid(
            "on_success_fire",
            format!("there is no cue {target:?} (of this account) to fire"),
        ));
    }
    let Some(this) = this else {
        return Ok(());
    };
    let mut path = vec![this.to_string()];
    let mut at = Some(target.to_string());
    while let Some(id) = at {
        if path.contains(&id) {
            path.push(id);
            return Err(Error::invalid(
                "on_success_fire",
                format!("would make a loop: {}", path.join(" -> ")),
            ));
        }
        at = next_of(&id)?.flatten();
        path.push(id);
    }
    Ok(())
}

/// Stores `spec` under its name: creates the cue, or updates it in place when the program states
/// it again (a changed schedule restarts it from now; an unchanged one keeps its place).
pub fn upsert(conn: &Db<'_>, owner: &str, spec: &CueSpec, now: Millis) -> Result<Upserted> {
    let (def, schedule) = spec.validate()?;
    let existing = load_def(conn, owner, "name", &def.name)?;
    if let Some(target) = &def.on_success_fire {
        check_chain(conn, owner, existing.as_ref().map(|e| e.0.as_str()), target)?;
    }
    match existing {
        None => {
            if let Some(at) = def.at {
                Schedule::once(at, &def.timezone, now)?;
            }
            let id = new_id("cue", now);
            let next_run = first_fire(&schedule, now);
            insert(conn, owner, &id, &def, next_run, now)?;
            Ok(Upserted {
                id,
                next_run,
                created: true,
                changed: true,
            })
        }
        Some(existing) => apply(conn, existing, def, &schedule, now),
    }
}

/// Replaces the definition of the owner's cue `id` (a rename included).
pub fn update(
    conn: &Db<'_>,
    owner: &str,
    id: &str,
    spec: &CueSpec,
    now: Millis,
) -> Result<Upserted> {
    let (def, schedule) = spec.validate()?;
    let existing =
        load_def(conn, owner, "id", id)?.ok_or_else(|| Error::CueNotFound(id.to_string()))?;
    if let Some(target) = &def.on_success_fire {
        check_chain(conn, owner, Some(id), target)?;
    }
    if existing.1.transport != def.transport {
        return Err(Error::invalid(
            "transport",
            "cannot be changed; create a new cue instead",
        ));
    }
    if existing.1.name != def.name && load_def(conn, owner, "name", &def.name)?.is_some() {
        return Err(Error::Conflict(format!(
            "a cue named {:?} already exists",
            def.name
        )));
    }
    apply(conn, existing, def, &schedule, now)
}

fn apply(
    conn: &Db<'_>,
    (id, old, status, old_next): Stored,
    def: Def,
    schedule: &Schedule,
    now: Millis,
) -> Result<Upserted> {
    if old == def {
        return Ok(Upserted {
            id,
            next_run: old_next,
            created: false,
            changed: false,
        });
    }
    let (next_run, status) = if old.same_schedule(&def) {
        (old_next, status)
    } else {
        if let Some(at) = def.at {
            Schedule::once(at, &def.timezone, now)?;
        }
        let st = if status == "paused" {
            status
        } else {
            "active".to_string()
        };
        (first_fire(schedule, now), st)
    };
    conn.execute(
        "UPDATE cues SET name = ?21, description = ?2, transport = ?3, schedule_type = ?4, schedule_cron = ?5,
            schedule_at = ?6, schedule_every_ms = ?7, schedule_timezone = ?8, payload = ?9, retry_max_attempts = ?10,
            retry_backoff_minutes = ?11, outcome_deadline_seconds = ?12, verification_mode = ?13,
            overlap_policy = ?14, catch_up_policy = ?15, catch_up_max = ?16, on_failure_pause = ?17,
            status = ?18, next_run = ?19, updated_at = ?20, callback_url = ?22, callback_method = ?23,
            callback_headers = ?24, delivery_timeout_seconds = ?25, signature_scheme = ?26,
            on_failure_email = ?27, on_failure_webhook = ?28, claim_timeout_seconds = ?29,
            alert_consecutive_failures = ?30, on_success_fire = ?31, required_payload_keys = ?32,
            require_payload_override = ?33, retry_reported_failures = ?34
         WHERE id = ?1",
        params![
            id, def.description, def.transport, def.schedule_type, def.cron, def.at, def.every_ms, def.timezone,
            def.payload, def.max_attempts, def.backoff, def.deadline, def.verification_mode, def.overlap,
            def.catch_up, def.catch_up_max, def.on_failure_pause, status, next_run, now, def.name,
            def.callback_url, def.callback_method, def.callback_headers, def.delivery_timeout_seconds,
            def.signature_scheme, def.on_failure_email, def.on_failure_webhook, def.claim_timeout_seconds,
            def.alert_consecutive_failures, def.on_success_fire, def.required_payload_keys,
            def.require_payload_override, def.retry_reported_failures
        ],
    )?;
    Ok(Upserted {
        id,
        next_run,
        created: false,
        changed: true,
    })
}

fn insert(
    conn: &Db<'_>,
    owner: &str,
    id: &str,
    def: &Def,
    next_run: Option<Millis>,
    now: Millis,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO cues (id, owner, name, description, status, transport, schedule_type, schedule_cron, schedule_at,
            schedule_every_ms, schedule_timezone, payload, retry_max_attempts, retry_backoff_minutes,
            outcome_deadline_seconds, verification_mode, overlap_policy, catch_up_policy, catch_up_max,
            on_failure_pause, next_run, created_at, updated_at, callback_url, callback_method, callback_headers,
            delivery_timeout_seconds, signature_scheme, on_failure_email, on_failure_webhook, claim_timeout_seconds,
            alert_consecutive_failures, on_success_fire, required_payload_keys, require_payload_override,
            retry_reported_failures)
         VALUES (?1, ?2, ?3, ?4, 'active', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20,
            ?21, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34)",
    )?;
    stmt.execute(params![
        id,
        owner,
        def.name,
        def.description,
        def.transport,
        def.schedule_type,
        def.cron,
        def.at,
        def.every_ms,
        def.timezone,
        def.payload,
        def.max_attempts,
        def.backoff,
        def.deadline,
        def.verification_mode,
        def.overlap,
        def.catch_up,
        def.catch_up_max,
        def.on_failure_pause,
        next_run,
        now,
        def.callback_url,
        def.callback_method,
        def.callback_headers,
        def.delivery_timeout_seconds,
        def.signature_scheme,
        def.on_failure_email,
        def.on_failure_webhook,
        def.claim_timeout_seconds,
        def.alert_consecutive_failures,
        def.on_success_fire,
        def.required_payload_keys,
        def.require_payload_override,
        def.retry_reported_failures
    ])
    .map_err(|e| {
        if crate::store::sql::is_constraint(&e) {
            Error::Conflict(format!("a cue named {:?} already exists", def.name))
        } else {
            e
        }
    })?;
    Ok(())
}

/// Creates many cues in one transaction (names must be new). Returns (id, next_run) of each.
pub fn insert_many(
    conn: &Db<'_>,
    owner: &str,
    specs: &[CueSpec],
    now: Millis,
) -> Result<Vec<(String, Option<Millis>)>> {
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let (def, schedule) = spec.validate()?;
        if let Some(at) = def.at {
            Schedule::once(at, &def.timezone, now)?;
        }
        if let Some(target) = &def.on_success_fire {
            check_chain(conn, owner, None, target)?;
        }
        let id = new_id("cue", now);
        let next_run = first_fire(&schedule, now);
        insert(conn, owner, &id, &def, next_run, now)?;
        out.push((id, next_run));
    }
    Ok(out)
}

/// A cue as a JSON object (times as UTC milliseconds).
pub fn to_json(conn: &Db<'_>, id: &str) -> Result<Value> {
    conn.query_row(
        "SELECT id, name, description, status, transport, schedule_type, schedule_cron, schedule_at, schedule_every_ms,
                schedule_timezone, payload, retry_max_attempts, retry_backoff_minutes, outcome_deadline_seconds,
                verification_mode, overlap_policy, catch_up_policy, catch_up_max, on_failure_pause, next_run, last_run,
                run_count, fired_count, created_at, updated_at, callback_url, callback_method, callback_headers,
                delivery_timeout_seconds, signature_scheme, on_failure_email, on_failure_webhook, owner,
                claim_timeout_seconds, alert_consecutive_failures, on_success_fire, required_payload_keys,
                require_payload_override, retry_reported_failures
         FROM cues WHERE id = ?1",
        params![id],
        |r| {
            let payload: String = r.get(10)?;
            let backoff: String = r.get(12)?;
            let headers: String = r.get(27)?;
            Ok(json!({
                "id": r.get::<String>(0)?,
                "name": r.get::<String>(1)?,
                "description": r.get::<Option<String>>(2)?,
                "status": r.get::<String>(3)?,
                "transport": r.get::<String>(4)?,
                "schedule": {
                    "type": r.get::<String>(5)?,
                    "cron": r.get::<Option<String>>(6)?,
                    "at": r.get::<Option<i64>>(7)?,
                    "every_ms": r.get::<Option<i64>>(8)?,
                    "timezone": r.get::<String>(9)?,
                },
                "payload": serde_json::from_str::<Value>(&payload).unwrap_or(Value::Null),
                "retry": {
                    "max_attempts": r.get::<i64>(11)?,
                    "backoff_minutes": serde_json::from_str::<Value>(&backoff).unwrap_or(Value::Null),
                    "retry_reported_failures": r.get::<bool>(38)?,
                },
                "on_success_fire": r.get::<Option<String>>(35)?,
                "required_payload_keys": r
                    .get::<Option<String>>(36)?
                    .and_then(|k| serde_json::from_str::<Value>(&k).ok()),
                "require_payload_override": r.get::<bool>(37)?,
                "outcome_deadline_seconds": r.get::<Option<i64>>(13)?,
                "verification": r.get::<Option<String>>(14)?.map(|m| json!({"mode": m})),
                "overlap": r.get::<String>(15)?,
                "catch_up": r.get::<String>(16)?,
                "catch_up_max": r.get::<i64>(17)?,
                "on_failure": {
                    "pause": r.get::<bool>(18)?,
                    "email": r.get::<bool>(30)?,
                    "webhook": r.get::<Option<String>>(31)?,
                },
                "callback": {
                    "url": r.get::<Option<String>>(25)?,
                    "method": r.get::<String>(26)?,
                    "headers": serde_json::from_str::<Value>(&headers).unwrap_or_else(|_| json!({})),
                },
                "delivery": {
                    "timeout_seconds": r.get::<i64>(28)?,
                    "outcome_deadline_seconds": r.get::<Option<i64>>(13)?,
                    "signature_scheme": r.get::<String>(29)?,
                    "claim_timeout_seconds": r.get::<i64>(33)?,
                },
                "owner": r.get::<String>(32)?,
                "alerts": {"consecutive_failures": r.get::<i64>(34)?},
                "next_run": r.get::<Option<i64>>(19)?,
                "last_run": r.get::<Option<i64>>(20)?,
                "run_count": r.get::<i64>(21)?,
                "fired_count": r.get::<i64>(22)?,
                "created_at": r.get::<i64>(23)?,
                "updated_at": r.get::<i64>(24)?,
            }))
        },
    )
    .optional()?
    .ok_or_else(|| Error::CueNotFound(id.to_string()))
}

/// Ids of the owner's cues, newest first.
pub fn list_ids(conn: &Db<'_>, owner: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT id FROM cues WHERE owner = ?1 ORDER BY created_at, id")?;
    let ids = stmt.query_map(params![owner], |r| r.get(0))?;
    Ok(ids)
}

/// Names of the owner's active local cues whose name is not in `handled`, at most `limit`.
pub fn unhandled_names(
    conn: &Db<'_>,
    owner: &str,
    handled: &[String],
    limit: usize,
) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT name FROM cues WHERE owner = ?1 AND transport = 'local' AND status = 'active'
           AND name NOT IN {} ORDER BY name LIMIT ?3",
        json_items(conn.dialect(), "?2")
    ))?;
    let names = serde_json::to_string(handled)?;
    let rows = stmt.query_map(params![owner, names, limit as i64], |r| r.get(0))?;
    Ok(rows)
}

/// Every active cue's next fire time, for building the timer at start.
pub fn due_index(conn: &Db<'_>) -> Result<Vec<(Millis, String)>> {
    let mut stmt = conn.prepare(
        "SELECT next_run, id FROM cues WHERE status = 'active' AND next_run IS NOT NULL",
    )?;
    let rows = stmt.query_map(params![], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows)
}

/// The next tick of each of these cues that is active and has one.
pub fn next_runs(conn: &Db<'_>, ids: &[String]) -> Result<Vec<(Millis, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT next_run, id FROM cues WHERE id = ?1 AND status = 'active' AND next_run IS NOT NULL",
    )?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.extend(stmt.query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))?);
    }
    Ok(out)
}

/// Sets a cue's status (pause/resume bookkeeping is in the engine).
pub fn set_status(
    conn: &Db<'_>,
    id: &str,
    status: &str,
    next_run: Option<Millis>,
    now: Millis,
) -> Result<()> {
    conn.execute(
        "UPDATE cues SET status = ?2, next_run = ?3, updated_at = ?4 WHERE id = ?1",
        params![id, status, next_run, now],
    )?;
    Ok(())
}

/// Deletes a cue and its history.
///
/// The store runs with SQLite's foreign-key enforcement off (it made every insert and update pay
/// for a statement journal: 30 % of run throughput), so the cascade is spelled out here.
pub fn delete(conn: &Db<'_>, id: &str) -> Result<()> {
    if conn.execute("DELETE FROM cues WHERE id = ?1", params![id])? == 0 {
        return Err(Error::CueNotFound(id.to_string()));
    }
    conn.execute(
        "DELETE FROM attempts WHERE execution_id IN (SELECT id FROM executions WHERE cue_id = ?1)",
        params![id],
    )?;
    conn.execute("DELETE FROM executions WHERE cue_id = ?1", params![id])?;
    // A cue that chained to this one chains to nothing now.
    conn.execute(
        "UPDATE cues SET on_success_fire = NULL WHERE on_success_fire = ?1",
        params![id],
    )?;
    Ok(())
}

/// Whether the cue fires once (a one-shot `at` schedule).
pub fn is_one_shot(row: &CueRow) -> bool {
    matches!(row.schedule.kind, Kind::Once { .. })
}

/// Whether a JSON value holds a NUL character in any key or string.
pub(crate) fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// One page of the owner's cue ids, newest first, and how many match in all.
pub fn page(
    conn: &Db<'_>,
    owner: &str,
    status: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<String>, i64)> {
    let total: i64 = conn.query_row(
        "SELECT count(*) FROM cues WHERE owner = ?1 AND (?2 IS NULL OR status = ?2)",
        params![owner, status],
        |r| r.get(0),
    )?;
    let mut stmt = conn.prepare(
        "SELECT id FROM cues WHERE owner = ?1 AND (?2 IS NULL OR status = ?2)
         ORDER BY created_at DESC, id DESC LIMIT ?3 OFFSET ?4",
    )?;
    let ids = stmt.query_map(params![owner, status, limit, offset], |r| r.get(0))?;
    Ok((ids, total))
}

/// Where and how to deliver a webhook cue's executions.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub method: String,
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: i64,
    pub scheme: String,
    pub secret: String,
    /// The cue's owner: deliveries are queued per owner.
    pub owner: String,
}

/// The delivery target of a cue: its callback and its owner's signing secret. (Two plain
/// lookups: the same query as a LEFT JOIN was re-prepared by SQLite on every run.)
pub fn target(conn: &Db<'_>, cue_id: &str) -> Result<Option<Target>> {
    let row = conn
        .prepare_cached(
            "SELECT callback_url, callback_method, callback_headers, delivery_timeout_seconds,
                    signature_scheme, owner
             FROM cues WHERE id = ?1",
        )?
        .query_row(params![cue_id], |r| {
            Ok((
                r.get::<Option<String>>(0)?,
                r.get::<String>(1)?,
                r.get::<String>(2)?,
                r.get::<i64>(3)?,
                r.get::<String>(4)?,
                r.get::<String>(5)?,
            ))
        })
        .optional()?;
    let Some((Some(url), method, headers, timeout, scheme, owner)) = row else {
        return Ok(None);
    };
    let secret: Option<String> = conn
        .prepare_cached("SELECT webhook_secret FROM users WHERE id = ?1")?
        .query_row(params![&owner], |r| r.get(0))
        .optional()?;
    Ok(Some(Target {
        url,
        method,
        headers: serde_json::from_str(&headers)?,
        timeout_ms: timeout * 1000,
        scheme,
        secret: secret.unwrap_or_default(),
        owner,
    }))
}
