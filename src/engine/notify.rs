//! The notifier: sends the notifications alerts queued (the user's alert webhook, a cue's
//! `on_failure` webhook, email) and records how each went, retrying failures with backoff.
//!
//! It sleeps until the next retry is due or until the writer commits a new notification (the
//! store calls back after that commit), so an alert goes out as soon as its cause is committed.
//! Notifications are rows in the store until sent: a restart resends what was not confirmed.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};

use super::Inner;
use crate::clock::Millis;
use crate::delivery::python_isoformat;
use crate::signing::{canonical_json, sign_v1};
use crate::store::alerts::{self, Due, Sent};

/// Waits before the 2nd, 3rd… attempt of a notification; after the last, it is given up.
const BACKOFF_MS: &[i64] = &[5_000, 30_000, 120_000, 600_000, 3_600_000];
/// Notifications read per pass, and sent at once at most.
const BATCH: i64 = 64;
/// A sent notification: (id, how it went, when).
type Outcome = (String, Sent, Millis);

/// How long a node that took a notification to send holds it from the others: longer than any
/// send may take, after which another node sends it (this one died before recording it).
const TAKE_HOLD_MS: i64 = 120_000;

/// A total deadline for one webhook notification.
const WEBHOOK_TIMEOUT_MS: i64 = 10_000;

/// The times in an alert as they are written in notifications (ISO-8601, Python's form).
fn alert_body(d: &Due) -> Value {
    let mut a = d.alert.clone();
    if let Some(m) = a.as_object_mut() {
        for k in ["created_at", "last_seen_at", "resolved_at"] {
            if let Some(ms) = m.get(k).and_then(Value::as_i64) {
                m.insert(k.into(), Value::String(python_isoformat(ms)));
            }
        }
        m.insert(
            "alert_id".into(),
            m.get("id").cloned().unwrap_or(Value::Null),
        );
        m.insert("cue_name".into(), json!(d.cue_name));
    }
    a
}

/// The body of a cue's `on_failure` webhook.
fn failure_body(d: &Due) -> Value {
    let a = &d.alert;
    let meta = a.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({
        "event": "cue.failed",
        "alert_id": a["id"],
        "alert_type": a["alert_type"],
        "cue_id": a["cue_id"],
        "cue_name": d.cue_name,
        "execution_id": a["execution_id"],
        "message": a["message"],
        "attempts": meta.get("attempts").cloned().unwrap_or(Value::Null),
        "last_error": meta.get("last_error").cloned().unwrap_or(Value::Null),
        "last_http_status": meta.get("last_http_status").cloned().unwrap_or(Value::Null),
        "failed_at": a["created_at"].as_i64().map(python_isoformat),
    })
}

fn headers(pairs: &[(&'static str, String)]) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        let value = HeaderValue::from_str(v).map_err(|e| format!("header {k}: {e}"))?;
        h.insert(HeaderName::from_static(k), value);
    }
    Ok(h)
}

/// The next try after a failed attempt number `attempts` (1-based), or None to give up.
fn retry_at(attempts: i64, now: Millis) -> Option<Millis> {
    BACKOFF_MS
        .get((attempts.max(1) - 1) as usize)
        .map(|wait| now + wait)
}

impl Inner {
    /// The notifier loop; returns when the engine closes.
    pub(super) async fn run_notifier(self: Arc<Self>) {
        let mut sending: HashSet<String> = HashSet::new();
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        // Results go to one recorder, which writes them many per writer operation.
        let (record_tx, record_rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
        tokio::spawn(Arc::clone(&self).record_notifications(record_rx, done_tx));
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return;
            }
            while let Ok(id) = done_rx.try_recv() {
                sending.remove(&id);
            }
            let now = self.clock.now();
            let me = Arc::clone(&self);
            // Notifications still being sent are due too, and come first (the oldest): read past
            // them, or a relay that holds sends until its deadline would hold back every other
            // notification (a cue's failure webhook behind 64 stuck emails) until then.
            let limit = BATCH + sending.len() as i64;
            let read = tokio::task::spawn_blocking(move || {
                me.store.read(|c| c.due_notifications(now, limit))
            })
            .await;
            let (due, next) = match read {
                Ok(Ok(found)) => found,
                Ok(Err(e)) => {
                    if !self.closed.load(Ordering::SeqCst) {
                        self.problem(format!("reading due notifications failed: {e}"));
                    }
                    (Vec::new(), Some(now + 1_000))
                }
                Err(_) => (Vec::new(), Some(now + 1_000)),
            };
            let due = if self.store.is_shared() {
                self.take_notifications(due, &sending, now).await
            } else {
                due
            };
            for d in due {
                if !sending.insert(d.id.clone()) {
                    continue;
                }
                let me = Arc::clone(&self);
                let record = record_tx.clone();
                tokio::spawn(async move {
                    let sent = me.send_notification(&d).await;
                    let _ = record.send((d.id, sent, me.clock.now()));
                });
            }
            // On a shared database another node may have queued notifications and died before
            // sending them: look again within a node lease, not only when woken here.
            let next = if self.store.is_shared() {
                let soon = self.clock.now() + self.config.node_lease_ms;
                Some(next.map_or(soon, |at| at.min(soon)))
            } else {
                next
            };
            tokio::select! {
                _ = async {
                    match next {
                        Some(at) => self.clock.sleep_until(at).await,
                        None => std::future::pending::<()>().await,
                    }
                } => {}
                _ = self.notify_wake.notified() => {}
            }
        }
    }

    /// On a database shared by several nodes: the notifications among `due` this node takes to
    /// send (others' nodes may have read them too), held from the others for [`TAKE_HOLD_MS`].
    async fn take_notifications(
        self: &Arc<Self>,
        due: Vec<Due>,
        sending: &HashSet<String>,
        now: Millis,
    ) -> Vec<Due> {
        let ids: Vec<String> = due
            .iter()
            .filter(|d| !sending.contains(&d.id))
            .map(|d| d.id.clone())
            .collect();
        if ids.is_empty() {
            return Vec::new();
        }
        match self
            .store
            .write_async(move |c| c.take_notifications(&ids, now, TAKE_HOLD_MS))
            .await
        {
            Ok(taken) => due.into_iter().filter(|d| taken.contains(&d.id)).collect(),
            Err(e) => {
                if !self.closed.load(Ordering::SeqCst) {
                    self.problem(format!("taking notifications to send failed: {e}"));
                }
                Vec::new()
            }
        }
    }

    /// Writes how notifications went, many per writer operation, then lets the loop look for
    /// more (a batch was full, or a retry is now the next thing due).
    async fn record_notifications(
        self: Arc<Self>,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<Outcome>,
        done: tokio::sync::mpsc::UnboundedSender<String>,
    ) {
        let mut batch = Vec::with_capacity(BATCH as usize);
        while rx.recv_many(&mut batch, BATCH as usize).await > 0 {
            let items = std::mem::take(&mut batch);
            let ids: Vec<String> = items.iter().map(|(id, _, _)| id.clone()).collect();
            let write = self
                .store
                .write_async(move |c| {
                    for (id, sent, at) in &items {
                        c.record_sent(id, sent, *at)?;
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = write {
                if !self.closed.load(Ordering::SeqCst) {
                    self.problem(format!(
                        "recording {} notification(s) failed: {e}",
                        ids.len()
                    ));
                }
            }
            for id in ids {
                let _ = done.send(id);
            }
            self.notify_wake.notify_one();
        }
    }

    /// Sends one notification.
    async fn send_notification(&self, d: &Due) -> Sent {
        let now = self.clock.now();
        let outcome = match d.channel.as_str() {
            "email" => return self.send_email(d).await,
            "alert_webhook" => self.send_webhook(d, alert_body(d), now).await,
            _ => self.send_webhook(d, failure_body(d), now).await,
        };
        match outcome {
            Ok(()) => Sent::Delivered,
            Err((error, permanent)) => Sent::Failed {
                retry_at: if permanent {
                    None
                } else {
                    retry_at(d.attempts + 1, now)
                },
                error,
            },
        }
    }

    /// A signed POST: `X-CueAPI-Signature: v1=…` over `"<ts>." + body` with the channel's secret.
    async fn send_webhook(&self, d: &Due, body: Value, now: Millis) -> Result<(), (String, bool)> {
        let Some(secret) = d.secret.as_deref() else {
            return Err(("no signing secret for this notification".into(), true));
        };
        let deliverer = self.deliverer().map_err(|e| (e, false))?;
        let body = canonical_json(&body).into_bytes();
        let ts = now.div_euclid(1000);
        let a = &d.alert;
        let pairs = [
            ("content-type", "application/json".to_string()),
            (
                "user-agent",
                format!("cueapi/{}", env!("CARGO_PKG_VERSION")),
            ),
            ("x-cueapi-signature", sign_v1(secret, ts, &body)),
            ("x-cueapi-timestamp", ts.to_string()),
            (
                "x-cueapi-alert-id",
                a["id"].as_str().unwrap_or_default().to_string(),
            ),
            (
                "x-cueapi-alert-type",
                a["alert_type"].as_str().unwrap_or_default().to_string(),
            ),
        ];
        let h = headers(&pairs).map_err(|e| (e, true))?;
        let attempt = deliverer
            .send_to(&d.target, "POST", h, body, WEBHOOK_TIMEOUT_MS, now)
            .await;
        if attempt.delivered {
            return Ok(());
        }
        let error = attempt.error.unwrap_or_else(|| "not delivered".into());
        let permanent = attempt.gone || error.starts_with("refused");
        Err((error, permanent))
    }

    /// Email is sent when SMTP is configured; otherwise it is recorded as skipped, and said once.
    async fn send_email(&self, d: &Due) -> Sent {
        let Some(mailer) = self.mailer.get() else {
            if !self.email_unconfigured_said.swap(true, Ordering::SeqCst) {
                tracing::warn!(
                    "email alerts are not configured (set CUEAPI_SMTP_HOST and CUEAPI_SMTP_FROM); \
                     alert emails are recorded as skipped"
                );
            }
            return Sent::Skipped("email is not configured on this server".into());
        };
        let (subject, body) = email_text(d, self.public_url.get().map(String::as_str));
        match mailer.send(&d.target, &subject, &body).await {
            Ok(()) => Sent::Delivered,
            Err(e) => Sent::Failed {
                retry_at: if e.transient {
                    retry_at(d.attempts + 1, self.clock.now())
                } else {
                    None
                },
                error: e.message,
            },
        }
    }
}

/// The subject and plain-text body of an alert email.
fn email_text(d: &Due, base: Option<&str>) -> (String, String) {
    let a = &d.alert;
    let kind = a["alert_type"].as_str().unwrap_or("alert");
    let cue = d.cue_name.as_deref().unwrap_or("(no cue)");
    let subject = if kind == alerts::kind::RECOVERED {
        format!("[cueapi] recovered: {cue}")
    } else {
        format!("[cueapi] {kind}: {cue}")
    };
    let mut body = format!(
        "{}\n\nAlert:     {kind} ({})\nCue:       {cue} ({})\n",
        a["message"].as_str().unwrap_or_default(),
        a["severity"].as_str().unwrap_or_default(),
        a["cue_id"].as_str().unwrap_or("-"),
    );
    let meta = &a["metadata"];
    if let Some(err) = meta.get("last_error").and_then(Value::as_str) {
        body.push_str(&format!("Error:     {err}\n"));
    }
    if let Some(status) = meta.get("last_http_status").and_then(Value::as_i64) {
        body.push_str(&format!("HTTP:      {status}\n"));
    }
    if let Some(eid) = a["execution_id"].as_str() {
        body.push_str(&format!("Execution: {eid}\n"));
        if let Some(base) = base {
            body.push_str(&format!("Link:      {base}/v1/executions/{eid}\n"));
        }
    }
    if let Some(at) = a["created_at"].as_i64() {
        body.push_str(&format!("When:      {}\n", crate::schedule::format_utc(at)));
    }
    body.push_str("\nAcknowledge it with POST /v1/alerts/");
    body.push_str(a["id"].as_str().unwrap_or_default());
    body.push_str("/acknowledge.\n");
    (subject, body)
}
