//! Operations: `/health` (every check, queue depths; 503 when the server cannot do its work),
//! `/status` (the same verdict, small), `/v1/info` and `/metrics` (Prometheus text format 0.0.4).
//! None needs a key or is rate limited; `/metrics` and `/health` say how busy the server is and
//! are meant for monitoring on a trusted network.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::{iso, json_response, AppState};
use crate::engine::metrics::{self, Health, LAG_BUCKETS_MS};

/// The store check fails when the writer has not committed an operation within this long.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// ... or when a write failed (a full disk, an I/O error) within this long: on a full disk a
/// small write can still fit where the engine's larger ones fail, so a probe that succeeds does
/// not prove the store takes writes. While writes fail the engine tries its own again every
/// second (timer entries, delivery results), which keeps the failure recent; once space returns
/// the check passes again after this long.
const RECENT_WRITE_FAILURE: Duration = Duration::from_secs(5);
const VERSION: &str = env!("CARGO_PKG_VERSION");
const TRANSPORTS: [&str; 3] = ["webhook", "worker", "local"];
const OPEN_STATUSES: [&str; 3] = ["pending", "delivering", "retrying"];

/// A round trip through the store's writer (`write`): it takes the database's write lock, runs
/// and commits, within [`STORE_TIMEOUT`]. Returns what it returned and how long it took, or why
/// the store is not writable.
async fn through_writer<R>(
    write: impl std::future::Future<Output = crate::Result<R>>,
) -> Result<(R, f64), String> {
    let started = Instant::now();
    match tokio::time::timeout(STORE_TIMEOUT, write).await {
        Ok(Ok(r)) => Ok((r, started.elapsed().as_secs_f64() * 1000.0)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "the writer did not commit within {} s",
            STORE_TIMEOUT.as_secs()
        )),
    }
}

/// The store check: a write goes through the writer, and no write failed lately.
async fn store_check(st: &AppState) -> Result<((), f64), String> {
    // The probe rewrites one row, so the round trip needs a page written (an empty transaction
    // commits even on a full disk).
    let probe = through_writer(st.engine.probe_store()).await?;
    match st.engine.write_failed_within(RECENT_WRITE_FAILURE) {
        Some(f) => Err(format!(
            "a write failed {:.1} s ago: {}",
            f.at.elapsed().as_secs_f64(),
            f.error
        )),
        None => Ok(probe),
    }
}

/// The fire loop's verdict: `ok`, `not_running` or `stalled`.
fn loop_status(h: &Health) -> &'static str {
    if !h.loop_running {
        "not_running"
    } else if h.stalled() {
        "stalled"
    } else {
        "ok"
    }
}

fn loop_reason(h: &Health) -> String {
    if !h.loop_running {
        "the fire loop is not running".into()
    } else {
        format!(
            "the fire loop has left due work waiting for {} s",
            h.overdue_ms() / 1000
        )
    }
}

/// Executions in flight by transport and status, every pair present (0 when none). Read on a
/// blocking thread and given up after [`STORE_TIMEOUT`]: a health check answers even when the
/// database does not (PostgreSQL out of reach).
async fn open_executions(st: &AppState) -> crate::Result<Vec<(&'static str, &'static str, i64)>> {
    let engine = st.engine.clone();
    let read = tokio::task::spawn_blocking(move || engine.read(|c| c.open_executions()));
    let rows = match tokio::time::timeout(STORE_TIMEOUT, read).await {
        Ok(Ok(rows)) => rows?,
        Ok(Err(_)) => return Err(crate::Error::Closed),
        Err(_) => {
            return Err(crate::Error::Io(std::io::Error::other(format!(
                "the store did not answer within {} s",
                STORE_TIMEOUT.as_secs()
            ))))
        }
    };
    let mut out = Vec::new();
    for t in TRANSPORTS {
        for s in OPEN_STATUSES {
            let n = rows
                .iter()
                .find(|(rt, rs, _)| rt == t && rs == s)
                .map_or(0, |r| r.2);
            out.push((t, s, n));
        }
    }
    Ok(out)
}

pub(super) async fn health(State(st): State<AppState>) -> Response {
    let store = store_check(&st).await;
    let h = st.engine.health();
    let opt_iso = |ms: Option<i64>| ms.map_or(Value::Null, |m| Value::String(iso(m)));
    let mut failing = Vec::new();
    let store_check = match &store {
        Ok(((), ms)) => json!({"status": "ok", "latency_ms": (ms * 10.0).round() / 10.0}),
        Err(why) => {
            failing.push("store");
            json!({"status": "error", "error": why})
        }
    };
    let fire_loop = loop_status(&h);
    if fire_loop != "ok" {
        failing.push("fire_loop");
    }
    let deliveries = delivery_check(&h);
    if deliveries["status"] != "ok" {
        failing.push("deliveries");
    }
    let mut queue = Map::new();
    match open_executions(&st).await {
        Ok(rows) => {
            let n = |t: &str, s: &str| {
                rows.iter()
                    .find(|r| r.0 == t && r.1 == s)
                    .map_or(0, |r| r.2)
            };
            queue.insert("pending_webhooks".into(), n("webhook", "pending").into());
            queue.insert("pending_retries".into(), n("webhook", "retrying").into());
            queue.insert(
                "pending_worker_claims".into(),
                n("worker", "pending").into(),
            );
            let mut by = Map::new();
            for (t, s, count) in rows {
                if let Value::Object(m) = by.entry(t).or_insert_with(|| json!({})) {
                    m.insert(s.into(), count.into());
                }
            }
            queue.insert("executions".into(), Value::Object(by));
        }
        Err(e) => {
            queue.insert("error".into(), e.to_string().into());
        }
    }
    queue.insert("deliveries_in_flight".into(), h.deliveries_in_flight.into());
    queue.insert("local_queue".into(), h.local_queue.into());
    let healthy = failing.is_empty();
    let c = st.engine.cluster();
    let nodes: Vec<Value> = c
        .nodes
        .iter()
        .map(|n| {
            // This node's own figures are read now; the others' are what they said at their
            // last beat.
            let this = n.id == c.node;
            let said = |k: &str| n.info.get(k).cloned().unwrap_or(Value::Null);
            json!({
                "id": n.id,
                "this": this,
                "host": said("host"),
                "pid": said("pid"),
                "partitions": if this { c.partitions_held.into() } else { said("partitions") },
                "fired": if this { st.engine.metrics().fired().into() } else { said("fired") },
                "started_at": iso(n.started_at),
                "seen_at": iso(n.seen_at),
            })
        })
        .collect();
    let cluster = json!({
        "shared": c.shared,
        "node": c.node,
        "partitions_held": c.partitions_held,
        "partitions": crate::store::cluster::PARTITIONS,
        "node_lease_ms": c.lease_ms,
        "last_beat": opt_iso(c.last_beat),
        "nodes": nodes,
    });
    let body = json!({
        "status": if healthy { "healthy" } else { "degraded" },
        "version": VERSION,
        "timestamp": iso(h.now),
        "failing": failing,
        "checks": {
            "store": store_check,
            "fire_loop": {
                "status": fire_loop,
                "started_at": opt_iso(h.loop_started_at),
                "last_wake": opt_iso(h.last_wake),
                "next_due": opt_iso(h.next_due),
                "overdue_ms": h.overdue_ms(),
                "last_fire_lag_ms": h.last_fire_lag_ms,
            },
            "deliveries": deliveries,
        },
        "queue": queue,
        "cluster": cluster,
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
}

/// The delivery queue: the server's slots and the deliveries waiting for one; `stuck` once a
/// delivery has waited longer than a delivery may take.
fn delivery_check(h: &Health) -> Value {
    let q = |q: &metrics::QueueHealth| json!({"waiting": q.waiting, "oldest_wait_ms": q.oldest_wait_ms});
    let mut v = json!({
        "status": if h.deliveries_stuck() { "stuck" } else { "ok" },
        "slots": h.delivery_slots,
        "slots_busy": h.delivery_slots_busy,
        "tenant_slots": h.tenant_slots,
        "destination_slots": h.destination_slots,
        "max_timeout_ms": h.max_delivery_timeout_ms,
        "waiting": h.server_queue.waiting,
        "oldest_wait_ms": h.server_queue.oldest_wait_ms,
        "stuck_after_ms": h.stuck_after_ms,
        "behind_tenant_limit": q(&h.tenant_queue),
        "behind_destination_limit": q(&h.destination_queue),
    });
    if h.deliveries_stuck() {
        v["reason"] = stuck_reason(h).into();
    }
    v
}

fn stuck_reason(h: &Health) -> String {
    format!(
        "webhook deliveries cannot drain: all {} delivery slots are busy and a delivery has waited \
         {:.1} s for one (longer than a delivery may take, {} s); see --max-deliveries and \
         --max-delivery-timeout",
        h.delivery_slots,
        h.server_queue.oldest_wait_ms.unwrap_or(0) as f64 / 1000.0,
        h.stuck_after_ms / 1000
    )
}

pub(super) async fn status(State(st): State<AppState>) -> Response {
    let store = store_check(&st).await;
    let h = st.engine.health();
    let reason = match (store, loop_status(&h)) {
        (Err(why), _) => Some(format!("the store is not writable: {why}")),
        (Ok(_), "ok") if h.deliveries_stuck() => Some(stuck_reason(&h)),
        (Ok(_), "ok") => None,
        (Ok(_), _) => Some(loop_reason(&h)),
    };
    match reason {
        None => json_response(StatusCode::OK, &json!({"status": "healthy"})),
        Some(reason) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "down", "reason": reason}),
        ),
    }
}

pub(super) async fn info(State(st): State<AppState>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "server": "cueapi",
            "version": VERSION,
            "authorization_backend": "per_user_api_key",
            "authentication_paths": {
                "per_user_api_key": true,
                "internal_token_with_on_behalf_of": false,
            },
            "disabled_primitives": ["device_code", "quotas"],
            "registration": match st.opts.registration {
                super::Registration::Closed => "closed",
                super::Registration::Local => "local",
                super::Registration::Open => "open",
            },
            "rate_limit": {"requests_per_minute": st.limiter.per_minute()},
        }),
    )
}

/// Prometheus text exposition, format 0.0.4.
#[derive(Default)]
struct Exposition(String);

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.0, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

pub(super) async fn metrics(State(st): State<AppState>) -> Response {
    let outcomes = through_writer(st.engine.outcome_counts()).await;
    let h = st.engine.health();
    let m = st.engine.metrics().snapshot();
    let mut x = Exposition::default();
    x.family(
        "cueapi_build_info",
        "gauge",
        "The running cueapi's version (always 1).",
    );
    x.sample("cueapi_build_info", &[("version", VERSION)], 1);

    x.family(
        "cueapi_fire_lag_seconds",
        "histogram",
        "Time from the instant of a cue tick, retry or delayed fire to the release of its work.",
    );
    for (b, n) in LAG_BUCKETS_MS.iter().zip(m.lag_cumulative) {
        let le = (*b as f64 / 1000.0).to_string();
        x.sample("cueapi_fire_lag_seconds_bucket", &[("le", &le)], n);
    }
    x.sample(
        "cueapi_fire_lag_seconds_bucket",
        &[("le", "+Inf")],
        m.lag_count,
    );
    x.sample(
        "cueapi_fire_lag_seconds_sum",
        &[],
        m.lag_sum_ms as f64 / 1000.0,
    );
    x.sample("cueapi_fire_lag_seconds_count", &[], m.lag_count);

    x.family(
        "cueapi_deliveries_total",
        "counter",
        "Webhook attempts by how they ended: delivered (2xx), failed (another status), gone (410), \
         timeout, refused (SSRF guard), error (no answer: connection failed).",
    );
    for (r, n) in &m.deliveries {
        x.sample("cueapi_deliveries_total", &[("result", r.as_str())], n);
    }
    x.single(
        "cueapi_retries_scheduled_total",
        "counter",
        "Retries put on the timer after a failed attempt.",
        m.retries_scheduled,
    );
    x.single(
        "cueapi_store_up",
        "gauge",
        "1 when the store's writer committed an operation within 2 s for this scrape and no \
         write failed in the last 5 s.",
        u8::from(
            outcomes.is_ok()
                && st
                    .engine
                    .write_failed_within(RECENT_WRITE_FAILURE)
                    .is_none(),
        ),
    );
    if let Ok((counts, _)) = &outcomes {
        x.family(
            "cueapi_outcomes_total",
            "counter",
            "Outcome states recorded on executions (reported, verified, timed out, ...).",
        );
        for (state, n) in counts {
            x.sample("cueapi_outcomes_total", &[("state", state)], n);
        }
    }
    if let Ok((kinds, sent)) = st.engine.read(|c| c.alert_counts()) {
        x.family(
            "cueapi_alerts_total",
            "counter",
            "Alerts raised, by type (a de-duplicated repeat counts on its alert, not here).",
        );
        for (kind, n) in &kinds {
            x.sample("cueapi_alerts_total", &[("type", kind)], n);
        }
        x.family(
            "cueapi_notifications",
            "gauge",
            "Alert notifications by channel and status (pending, sent, failed, skipped).",
        );
        for (channel, status, n) in &sent {
            x.sample(
                "cueapi_notifications",
                &[("channel", channel), ("status", status)],
                n,
            );
        }
    }
    if let Ok(rows) = open_executions(&st).await {
        x.family(
            "cueapi_executions_open",
            "gauge",
            "Executions in flight by their cue's transport and status (pending: waiting to be \
             sent or claimed; retrying: waiting for a retry).",
        );
        for (t, s, n) in rows {
            x.sample(
                "cueapi_executions_open",
                &[("transport", t), ("status", s)],
                n,
            );
        }
    }
    x.single(
        "cueapi_deliveries_in_flight",
        "gauge",
        "Webhook deliveries started and not yet recorded.",
        h.deliveries_in_flight,
    );
    x.single(
        "cueapi_delivery_slots",
        "gauge",
        "The server's webhook delivery slots (--max-deliveries).",
        h.delivery_slots,
    );
    x.single(
        "cueapi_delivery_slots_busy",
        "gauge",
        "Server delivery slots held by deliveries in flight.",
        h.delivery_slots_busy,
    );
    let queues = [
        ("server", h.server_queue),
        ("tenant", h.tenant_queue),
        ("destination", h.destination_queue),
    ];
    x.family(
        "cueapi_deliveries_waiting",
        "gauge",
        "Deliveries waiting for a slot, by the limit they wait behind.",
    );
    for (limit, q) in queues {
        x.sample("cueapi_deliveries_waiting", &[("limit", limit)], q.waiting);
    }
    x.family(
        "cueapi_delivery_oldest_wait_seconds",
        "gauge",
        "How long the first delivery waiting behind each limit has waited (0 when none waits).",
    );
    for (limit, q) in queues {
        let secs = q.oldest_wait_ms.unwrap_or(0) as f64 / 1000.0;
        x.sample(
            "cueapi_delivery_oldest_wait_seconds",
            &[("limit", limit)],
            secs,
        );
    }
    x.single(
        "cueapi_local_queue_length",
        "gauge",
        "Executions of in-process handlers waiting for a handler thread.",
        h.local_queue,
    );
    x.single(
        "cueapi_fire_loop_up",
        "gauge",
        "1 while the fire loop runs and keeps up with due work.",
        u8::from(loop_status(&h) == "ok"),
    );
    let c = st.engine.cluster();
    x.single(
        "cueapi_node_partitions_held",
        "gauge",
        "Partitions of the cues whose ticks this node fires (all of them on SQLite).",
        c.partitions_held,
    );
    x.single(
        "cueapi_cluster_nodes_live",
        "gauge",
        "Nodes heard from within a lease at this node's last beat (PostgreSQL; 1 on SQLite).",
        if c.shared { c.nodes.len() } else { 1 },
    );
    x.family(
        "cueapi_cluster_node_partitions",
        "gauge",
        "Each live node's partitions, as it said at its last beat (PostgreSQL).",
    );
    for n in &c.nodes {
        let held = n
            .info
            .get("partitions")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        x.sample("cueapi_cluster_node_partitions", &[("node", &n.id)], held);
    }
    x.family(
        "cueapi_cluster_node_ticks_fired",
        "gauge",
        "Ticks each live node has fired since it started, as it said at its last beat \
         (PostgreSQL).",
    );
    for n in &c.nodes {
        let fired = n.info.get("fired").and_then(Value::as_u64).unwrap_or(0);
        x.sample("cueapi_cluster_node_ticks_fired", &[("node", &n.id)], fired);
    }
    x.single(
        "cueapi_rate_limited_total",
        "counter",
        "Requests refused by the rate limiter.",
        st.limiter.refused(),
    );
    x.single(
        "cueapi_rate_limit_buckets",
        "gauge",
        "Keys and client addresses the rate limiter holds state for.",
        st.limiter.buckets(),
    );
    x.single(
        "cueapi_echo_tokens",
        "gauge",
        "Echo deliveries kept (POST /v1/echo/{token}).",
        st.echoes.len(),
    );
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        x.0,
    )
        .into_response()
}

// -- routes ------------------------------------------------------------------------------------

fn health_schema() -> Value {
    use super::spec::{instant, instant_or_null, obj, obj_some};
    let own_queue = obj(json!({
        "waiting": {"type": "integer", "description": "Deliveries waiting behind their own limit"},
        "oldest_wait_ms": {"type": ["integer", "null"]},
    }));
    let counts = obj(json!({
        "pending": {"type": "integer"},
        "delivering": {"type": "integer"},
        "retrying": {"type": "integer"},
    }));
    obj(json!({
        "status": {"enum": ["healthy", "degraded"]},
        "version": {"type": "string"},
        "timestamp": instant(),
        "failing": {"type": "array", "items": {"enum": ["store", "fire_loop", "deliveries"]}},
        "checks": obj(json!({
            "store": obj_some(json!({
                "status": {"enum": ["ok", "error"]},
                "latency_ms": {"type": "number", "description": "A round trip through the writer"},
                "error": {"type": "string"},
            }), &["status"]),
            "fire_loop": obj(json!({
                "status": {"enum": ["ok", "not_running", "stalled"]},
                "started_at": instant_or_null(),
                "last_wake": instant_or_null(),
                "next_due": instant_or_null(),
                "overdue_ms": {"type": "integer"},
                "last_fire_lag_ms": {"type": ["integer", "null"]},
            })),
            "deliveries": obj_some(json!({
                "status": {"enum": ["ok", "stuck"]},
                "slots": {"type": "integer", "description": "The server's delivery slots"},
                "slots_busy": {"type": "integer"},
                "tenant_slots": {"type": "integer", "description": "One user's delivery slots"},
                "destination_slots": {"type": "integer", "description": "One user's slots per scheme://host:port"},
                "max_timeout_ms": {"type": "integer", "description": "The longest a delivery may take"},
                "waiting": {"type": "integer", "description": "Deliveries waiting for a server slot"},
                "oldest_wait_ms": {"type": ["integer", "null"]},
                "stuck_after_ms": {"type": "integer"},
                "behind_tenant_limit": own_queue.clone(),
                "behind_destination_limit": own_queue,
                "reason": {"type": "string"},
            }), &["status", "slots", "slots_busy", "tenant_slots", "destination_slots",
                  "max_timeout_ms", "waiting", "oldest_wait_ms", "stuck_after_ms",
                  "behind_tenant_limit", "behind_destination_limit"]),
        })),
        "queue": obj_some(json!({
            "pending_webhooks": {"type": "integer"},
            "pending_retries": {"type": "integer"},
            "pending_worker_claims": {"type": "integer"},
            "executions": obj(json!({"webhook": counts, "worker": counts, "local": counts})),
            "error": {"type": "string"},
            "deliveries_in_flight": {"type": "integer"},
            "local_queue": {"type": "integer"},
        }), &["deliveries_in_flight", "local_queue"]),
        "cluster": obj(json!({
            "shared": {"type": "boolean", "description": "Whether other nodes share the database (PostgreSQL)"},
            "node": {"type": "string", "description": "This node's id"},
            "partitions_held": {"type": "integer", "description": "Partitions whose ticks this node fires"},
            "partitions": {"type": "integer"},
            "node_lease_ms": {"type": "integer"},
            "last_beat": instant_or_null(),
            "nodes": {"type": "array", "description": "The live nodes at this node's last beat (PostgreSQL)",
                      "items": obj(json!({
                "id": {"type": "string"},
                "this": {"type": "boolean"},
                "host": {"type": ["string", "null"]},
                "pid": {"type": ["integer", "null"]},
                "partitions": {"type": ["integer", "null"]},
                "fired": {"type": ["integer", "null"]},
                "started_at": instant(),
                "seen_at": instant(),
            }))},
        })),
    }))
}

pub(super) fn routes() -> Vec<super::spec::Route> {
    use super::spec::{get, obj, tagged};
    tagged(
        "operations",
        vec![
            get(
                "/health",
                "getHealth",
                "Every check and the queue depths",
                health,
            )
            .public()
            .describe(
                "503 when the store cannot be written, the fire loop is not keeping up, or webhook \
                 deliveries wait for a slot longer than a delivery may take.",
            )
            .answers(200, "Healthy", health_schema())
            .answers(
                503,
                "Degraded: `failing` names the checks that fail",
                health_schema(),
            ),
            get("/status", "getStatus", "The health verdict, small", status)
                .public()
                .answers(200, "Healthy", obj(json!({"status": {"const": "healthy"}})))
                .answers(
                    503,
                    "Down, and why",
                    obj(json!({"status": {"const": "down"}, "reason": {"type": "string"}})),
                ),
            get(
                "/v1/info",
                "getInfo",
                "What this server is and what it allows",
                info,
            )
            .public()
            .answers(
                200,
                "The server",
                obj(json!({
                    "server": {"const": "cueapi"},
                    "version": {"type": "string"},
                    "authorization_backend": {"const": "per_user_api_key"},
                    "authentication_paths": obj(json!({
                        "per_user_api_key": {"type": "boolean"},
                        "internal_token_with_on_behalf_of": {"type": "boolean"},
                    })),
                    "disabled_primitives": {"type": "array", "items": {"type": "string"}},
                    "registration": {"enum": ["open", "local", "closed"], "description": "Who may register: anyone, clients on the server's machine, nobody"},
                    "rate_limit": obj(json!({
                        "requests_per_minute": {"type": ["integer", "null"]},
                    })),
                })),
            ),
            get(
                "/metrics",
                "getMetrics",
                "Prometheus metrics (text format 0.0.4)",
                metrics,
            )
            .public()
            .answers_text(200, "The metrics", "text/plain"),
        ],
    )
}
