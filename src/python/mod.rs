//! All PyO3 glue: the `cueapi._cueapi` module. Every blocking call detaches from the interpreter
//! (releases the GIL) while Rust waits; errors become the classes of `cueapi.exceptions`.

use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyMemoryView, PyString};
use serde_json::Value;

use crate::clock::{system_now, Clock, Millis};
use crate::engine::{Config, Engine};
use crate::error::Error;
use crate::schedule::{self, Schedule};
use crate::signing;
use crate::store::{Claimed, CueSpec, ExecutionFilter, ReportedOutcome, LOCAL_OWNER};

fn to_pyerr(e: Error) -> PyErr {
    let class = match &e {
        Error::InvalidSchedule(_) => "InvalidScheduleError",
        Error::Invalid { .. } | Error::Json(_) => "ValidationError",
        Error::CueNotFound(_) => "CueNotFoundError",
        Error::ExecutionNotFound(_) => "ExecutionNotFoundError",
        Error::Conflict(_) | Error::NotClaimHolder(_) => "ConflictError",
        Error::WorkerNotFound(_) | Error::AlertNotFound(_) => "CueAPIError",
        Error::Locked(_) => "DatabaseLockedError",
        Error::SchemaTooNew { .. } => "SchemaVersionError",
        Error::Closed => "EngineClosedError",
        Error::Storage(_) | Error::Postgres(_) | Error::Io(_) | Error::Open { .. } => {
            "StorageError"
        }
    };
    let message = e.to_string();
    let field = match &e {
        Error::Invalid { field, .. } => Some(*field),
        _ => None,
    };
    Python::attach(|py| {
        let made = (|| -> PyResult<PyErr> {
            let module = py.import("cueapi.exceptions")?;
            let cls = module.getattr(class)?;
            let exc = cls.call1((message.clone(),))?;
            if let Some(f) = field {
                exc.setattr("field", f)?;
            }
            Ok(PyErr::from_value(exc))
        })();
        made.unwrap_or_else(|err| err)
    })
}

/// Deserialises `text`, saying where and why it does not fit (serde's words, without the position
/// in our internal JSON).
fn parse_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, String> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let text = e.into_inner().to_string();
        let reason = text.split(" at line ").next().unwrap_or(&text).to_string();
        if path == "." {
            format!("{what}: {reason}")
        } else {
            format!("{what}: {path}: {reason}")
        }
    })
}

fn json_arg<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> PyResult<T> {
    parse_json(what, text).map_err(|message| {
        to_pyerr(Error::Invalid {
            field: "arguments",
            message,
        })
    })
}

/// Next jobs, and the reports the store refused as (execution id, why).
type Finished = (Vec<Job>, Vec<(String, String)>);

fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any(),
            (None, Some(u)) => u.into_pyobject(py)?.into_any(),
            _ => n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any(),
        },
        Value::String(s) => s.into_pyobject(py)?.into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for x in items {
                list.append(to_py(py, x)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, x) in map {
                dict.set_item(k, to_py(py, x)?)?;
            }
            dict.into_any()
        }
    })
}

/// A clock that moves only when told to; pass it to an engine to test time-dependent behaviour.
#[pyclass(module = "cueapi._cueapi", frozen)]
struct ManualClock {
    clock: Clock,
}

#[pymethods]
impl ManualClock {
    #[new]
    fn new(start_ms: Millis) -> Self {
        ManualClock {
            clock: Clock::manual(start_ms),
        }
    }

    fn now_ms(&self) -> Millis {
        self.clock.now()
    }

    fn advance_ms(&self, ms: Millis) -> PyResult<()> {
        if ms < 0 {
            return Err(to_pyerr(Error::invalid(
                "ms",
                "a clock cannot move backwards",
            )));
        }
        if let Clock::Manual(m) = &self.clock {
            m.advance(ms);
        }
        Ok(())
    }

    fn set_ms(&self, ms: Millis) -> PyResult<()> {
        if ms < self.clock.now() {
            return Err(to_pyerr(Error::invalid(
                "ms",
                "a clock cannot move backwards",
            )));
        }
        if let Clock::Manual(m) = &self.clock {
            m.set(ms);
        }
        Ok(())
    }
}

/// A claimed attempt.
#[pyclass(module = "cueapi._cueapi", frozen, get_all)]
struct Job {
    execution_id: String,
    cue_id: String,
    cue_name: String,
    scheduled_for: Millis,
    attempt: i64,
    payload: String,
    idempotency_key: String,
    triggered_by: String,
}

impl From<Claimed> for Job {
    fn from(c: Claimed) -> Job {
        Job {
            execution_id: c.execution_id,
            cue_id: c.cue_id,
            cue_name: c.cue_name,
            scheduled_for: c.scheduled_for,
            attempt: c.attempt,
            payload: c.payload,
            idempotency_key: c.idempotency_key,
            triggered_by: c.triggered_by,
        }
    }
}

fn timeout_arg(timeout: f64) -> PyResult<Duration> {
    if !timeout.is_finite() || timeout < 0.0 {
        return Err(to_pyerr(Error::invalid(
            "timeout",
            "must be a non-negative number of seconds",
        )));
    }
    Ok(Duration::from_secs_f64(timeout.min(3_600.0)))
}

/// The native engine over one database file.
#[pyclass(module = "cueapi._cueapi", frozen)]
struct NativeEngine {
    engine: std::sync::Arc<Engine>,
    server: parking_lot::Mutex<Option<crate::api::Server>>,
}

#[pymethods]
impl NativeEngine {
    #[new]
    // node_lease_ms: limits::NODE_LEASE_MS, written out for the stub (a test checks they agree).
    #[pyo3(signature = (path, *, clock=None, grace_ms=60_000, lease_ms=300_000, node_lease_ms=3_000))]
    fn new(
        py: Python<'_>,
        path: String,
        clock: Option<PyRef<'_, ManualClock>>,
        grace_ms: i64,
        lease_ms: i64,
        node_lease_ms: i64,
    ) -> PyResult<Self> {
        if grace_ms < 0 || lease_ms <= 0 {
            return Err(to_pyerr(Error::invalid(
                "config",
                "grace must be >= 0 and lease > 0",
            )));
        }
        let clock = clock.map(|c| c.clock.clone()).unwrap_or(Clock::System);
        let engine = py
            .detach(move || {
                Engine::open(
                    path,
                    clock,
                    Config {
                        grace_ms,
                        lease_ms,
                        node_lease_ms,
                        ..Config::default()
                    },
                )
            })
            .map_err(to_pyerr)?;
        Ok(NativeEngine {
            engine: std::sync::Arc::new(engine),
            server: parking_lot::Mutex::new(None),
        })
    }

    /// Serves the HTTP API on `host:port` (0 picks a free port); returns the bound address.
    #[pyo3(signature = (host, port, *, registration, public_url, allow_private_targets, rate_limit_per_minute, trust_forwarded_for, worker_lease_ms, worker_timeout_ms, realert_ms, header_timeout_ms, body_timeout_ms, max_connections, max_connections_per_address))]
    #[allow(clippy::too_many_arguments)]
    fn serve(
        &self,
        py: Python<'_>,
        host: &str,
        port: u16,
        registration: &str,
        public_url: Option<String>,
        allow_private_targets: bool,
        rate_limit_per_minute: u32,
        trust_forwarded_for: bool,
        worker_lease_ms: i64,
        worker_timeout_ms: i64,
        realert_ms: i64,
        header_timeout_ms: u64,
        body_timeout_ms: u64,
        max_connections: usize,
        max_connections_per_address: Option<usize>,
    ) -> PyResult<(String, u16)> {
        let mut slot = self.server.lock();
        if slot.is_some() {
            return Err(to_pyerr(Error::Conflict(
                "this engine is already serving HTTP".into(),
            )));
        }
        if worker_lease_ms <= 0 || worker_timeout_ms <= 0 || realert_ms <= 0 {
            return Err(to_pyerr(Error::invalid(
                "worker timing",
                "the worker lease and timeout and the re-alert interval must be positive",
            )));
        }
        if rate_limit_per_minute > crate::api::limit::MAX_PER_MINUTE {
            return Err(to_pyerr(Error::invalid(
                "rate_limit_per_minute",
                format!(
                    "must be between 0 (off) and {}",
                    crate::api::limit::MAX_PER_MINUTE
                ),
            )));
        }
        if header_timeout_ms == 0 || body_timeout_ms == 0 || max_connections == 0 {
            return Err(to_pyerr(Error::invalid(
                "connection limits",
                "the header and body timeouts and the connection cap must be positive",
            )));
        }
        if max_connections_per_address == Some(0) {
            return Err(to_pyerr(Error::invalid(
                "max_connections_per_address",
                "must be positive",
            )));
        }
        let Some(registration) = crate::api::Registration::parse(registration) else {
            return Err(to_pyerr(Error::invalid(
                "registration",
                "must be closed, local or open",
            )));
        };
        let opts = crate::api::Options {
            registration,
            public_url,
            allow_private_targets,
            rate_limit_per_minute,
            trust_forwarded_for,
            worker_lease_ms,
            worker_timeout_ms,
            realert_ms,
            limits: crate::api::conn::Limits {
                header_timeout: Duration::from_millis(header_timeout_ms),
                body_timeout: Duration::from_millis(body_timeout_ms),
                max_connections,
                max_connections_per_address,
            },
        };
        let engine = std::sync::Arc::clone(&self.engine);
        let server = py
            .detach(|| crate::api::Server::start(engine, host, port, opts))
            .map_err(|e| match e {
                Error::Io(io) => to_pyerr(Error::Invalid {
                    field: "address",
                    message: format!("cannot listen on {host}:{port}: {io}"),
                }),
                other => to_pyerr(other),
            })?;
        let addr = server.addr();
        *slot = Some(server);
        Ok((addr.ip().to_string(), addr.port()))
    }

    /// Sets the limits on webhook deliveries: in flight on the server, per tenant and per
    /// destination, and the longest one may take.
    #[pyo3(signature = (max_in_flight, per_tenant, per_destination, max_timeout_ms))]
    fn set_delivery_limits(
        &self,
        max_in_flight: usize,
        per_tenant: usize,
        per_destination: usize,
        max_timeout_ms: i64,
    ) -> PyResult<()> {
        self.engine
            .set_delivery_limits(crate::engine::DeliveryLimits {
                max_in_flight,
                per_tenant,
                per_destination,
                max_timeout_ms,
            })
            .map_err(to_pyerr)
    }

    /// The limits on webhook deliveries in force: (in flight, per tenant, per destination,
    /// longest delivery in ms).
    fn delivery_limits(&self) -> (usize, usize, usize, i64) {
        let l = self.engine.delivery_limits();
        (
            l.max_in_flight,
            l.per_tenant,
            l.per_destination,
            l.max_timeout_ms,
        )
    }

    /// Stops serving HTTP, letting requests in flight finish. Idempotent.
    fn stop_serving(&self, py: Python<'_>) {
        let server = self.server.lock().take();
        if let Some(s) = server {
            py.detach(|| s.stop());
        }
    }

    /// Creates a server user; returns (api key, webhook secret).
    fn create_user(&self, py: Python<'_>, email: String) -> PyResult<(String, String)> {
        py.detach(|| self.engine.create_user(&email))
            .map(|(u, key)| (key, u.webhook_secret))
            .map_err(to_pyerr)
    }

    /// How many server users exist.
    fn user_count(&self, py: Python<'_>) -> PyResult<i64> {
        py.detach(|| self.engine.read(|c| c.user_count()))
            .map_err(to_pyerr)
    }

    #[getter]
    fn interrupted_on_open(&self) -> usize {
        self.engine.interrupted_on_open
    }

    #[getter]
    fn queued(&self) -> usize {
        self.engine.queued()
    }

    fn now_ms(&self) -> Millis {
        self.engine.clock().now()
    }

    fn start(&self) -> PyResult<()> {
        self.engine.start().map_err(to_pyerr)
    }

    fn upsert_cue(&self, py: Python<'_>, spec_json: &str) -> PyResult<String> {
        let spec: CueSpec = json_arg("cue definition", spec_json)?;
        py.detach(|| self.engine.upsert_cue(LOCAL_OWNER, spec))
            .map_err(to_pyerr)
    }

    fn create_cues(&self, py: Python<'_>, specs_json: &str) -> PyResult<Vec<String>> {
        let specs: Vec<CueSpec> = json_arg("cue definitions", specs_json)?;
        py.detach(|| self.engine.create_cues(LOCAL_OWNER, specs))
            .map_err(to_pyerr)
    }

    fn resolve_cue(&self, py: Python<'_>, reference: &str) -> PyResult<String> {
        py.detach(|| self.engine.resolve_cue(LOCAL_OWNER, reference))
            .map_err(to_pyerr)
    }

    /// A cue in the public form (as `cueapi serve` answers it), as JSON text.
    fn cue(&self, py: Python<'_>, cue_id: &str) -> PyResult<String> {
        py.detach(|| {
            let v = self.engine.cue(cue_id)?;
            Ok(crate::public::cue(v, None).to_string())
        })
        .map_err(to_pyerr)
    }

    /// Who owns cues or is a server user, as a JSON list of `{"owner", "email"}` (users by email
    /// first; then owners that are no user, such as the embedded App's own, with a null email).
    fn owners(&self, py: Python<'_>) -> PyResult<String> {
        py.detach(|| {
            let list = self.engine.read(|c| c.owners())?;
            let out: Vec<Value> = list
                .into_iter()
                .map(|(owner, email)| serde_json::json!({"owner": owner, "email": email}))
                .collect();
            Ok(Value::Array(out).to_string())
        })
        .map_err(to_pyerr)
    }

    /// Every cue of `owner` (the embedded App's own by default) in the public form, as a JSON
    /// list.
    #[pyo3(signature = (owner=None))]
    fn cues(&self, py: Python<'_>, owner: Option<&str>) -> PyResult<String> {
        py.detach(|| {
            let list = self.engine.cues(owner.unwrap_or(LOCAL_OWNER))?;
            let out: Vec<Value> = list
                .into_iter()
                .map(|v| crate::public::cue(v, None))
                .collect();
            Ok(Value::Array(out).to_string())
        })
        .map_err(to_pyerr)
    }

    /// Names of active local cues that none of `names_json` (a JSON list) handles, at most `limit`.
    fn unhandled_cues(
        &self,
        py: Python<'_>,
        names_json: &str,
        limit: usize,
    ) -> PyResult<Vec<String>> {
        let names: Vec<String> = json_arg("handler names", names_json)?;
        py.detach(|| self.engine.unhandled_cues(LOCAL_OWNER, &names, limit))
            .map_err(to_pyerr)
    }

    fn pause(&self, py: Python<'_>, cue_id: &str) -> PyResult<()> {
        py.detach(|| self.engine.pause(cue_id)).map_err(to_pyerr)
    }

    fn resume(&self, py: Python<'_>, cue_id: &str) -> PyResult<()> {
        py.detach(|| self.engine.resume(cue_id)).map_err(to_pyerr)
    }

    fn delete(&self, py: Python<'_>, cue_id: &str) -> PyResult<()> {
        py.detach(|| self.engine.delete(cue_id)).map_err(to_pyerr)
    }

    #[pyo3(signature = (cue_id, payload_json=None))]
    fn fire(&self, py: Python<'_>, cue_id: &str, payload_json: Option<&str>) -> PyResult<String> {
        let payload: Option<Value> = payload_json.map(|p| json_arg("payload", p)).transpose()?;
        py.detach(|| self.engine.fire(cue_id, payload))
            .map_err(to_pyerr)
    }

    fn replay(&self, py: Python<'_>, execution_id: &str) -> PyResult<String> {
        py.detach(|| self.engine.replay(execution_id))
            .map_err(to_pyerr)
    }

    /// Waits up to `timeout` seconds for work and claims a batch of up to `max` jobs.
    fn claim_many(&self, py: Python<'_>, max: usize, timeout: f64) -> PyResult<Vec<Job>> {
        let wait = timeout_arg(timeout)?;
        let jobs = py
            .detach(|| self.engine.claim_many(max, wait))
            .map_err(to_pyerr)?;
        Ok(jobs.into_iter().map(Job::from).collect())
    }

    /// Reports finished attempts `(execution_id, attempt, outcome_json)` and claims the next
    /// batch in the same round trip. Returns the jobs and the refused reports `(id, why)`.
    fn finish_many(
        &self,
        py: Python<'_>,
        reports: Vec<(String, i64, String)>,
        max: usize,
        timeout: f64,
    ) -> PyResult<Finished> {
        let wait = timeout_arg(timeout)?;
        let reports = reports
            .into_iter()
            .map(|(id, attempt, text)| {
                // An outcome that does not parse is recorded as a failure saying why, never dropped.
                let outcome =
                    parse_json::<ReportedOutcome>("outcome", &text).unwrap_or_else(|why| {
                        ReportedOutcome {
                            success: false,
                            error: Some(format!("the handler's outcome was rejected: {why}")),
                            ..Default::default()
                        }
                    });
                (id, attempt, outcome)
            })
            .collect();
        let (refused, jobs) = py
            .detach(|| self.engine.finish_many(reports, max, wait))
            .map_err(to_pyerr)?;
        let refused = refused
            .into_iter()
            .map(|(id, e)| (id, e.to_string()))
            .collect();
        Ok((jobs.into_iter().map(Job::from).collect(), refused))
    }

    /// Executions of `owner`'s cues (the embedded App's own by default) matching the filter in
    /// the public form, as a JSON list.
    #[pyo3(signature = (filter_json, owner=None))]
    fn executions(
        &self,
        py: Python<'_>,
        filter_json: &str,
        owner: Option<&str>,
    ) -> PyResult<String> {
        let filter: ExecutionFilter = json_arg("filter", filter_json)?;
        py.detach(|| {
            let list = self
                .engine
                .executions(owner.unwrap_or(LOCAL_OWNER), &filter)?;
            let out: Vec<Value> = list.into_iter().map(crate::public::execution).collect();
            Ok(Value::Array(out).to_string())
        })
        .map_err(to_pyerr)
    }

    /// One execution with its attempt log in the public form, as JSON text.
    fn execution(&self, py: Python<'_>, execution_id: &str) -> PyResult<String> {
        py.detach(|| {
            let v = self.engine.execution(LOCAL_OWNER, execution_id)?;
            Ok(crate::public::execution(v).to_string())
        })
        .map_err(to_pyerr)
    }

    fn stats<'py>(
        &self,
        py: Python<'py>,
        cue_id: &str,
        since_ms: Millis,
    ) -> PyResult<Bound<'py, PyAny>> {
        let v = py
            .detach(|| self.engine.stats(cue_id, since_ms))
            .map_err(to_pyerr)?;
        to_py(py, &v)
    }

    /// Waits up to `timeout` seconds for a problem the engine met on its own threads.
    fn next_problem(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<String>> {
        let wait = timeout_arg(timeout)?;
        Ok(py.detach(|| self.engine.next_problem(wait)))
    }

    fn stop_claims(&self) {
        self.engine.stop_claims();
    }

    /// Stops serving and closes the engine, within one grace period for both (SIGTERM must end
    /// the process well before a container runtime's kill).
    fn close(&self, py: Python<'_>) {
        let server = self.server.lock().take();
        py.detach(|| {
            let deadline = std::time::Instant::now() + Engine::CLOSE_GRACE;
            if let Some(s) = server {
                s.stop_by(deadline);
            }
            self.engine.close_by(deadline);
        });
    }
}

/// A validated schedule, for inspection: next fire times and a description. Parsing and the
/// walks over time run detached from the interpreter.
#[pyclass(name = "Schedule", module = "cueapi._cueapi", frozen)]
struct PySchedule {
    schedule: Schedule,
}

#[pymethods]
impl PySchedule {
    /// The longest cron expression accepted, in bytes.
    #[classattr]
    const MAX_CRON_LENGTH: usize = schedule::MAX_EXPRESSION_LEN;
    /// The most list items one cron field may have.
    #[classattr]
    const MAX_CRON_LIST_ITEMS: usize = schedule::MAX_LIST_ITEMS;
    /// The earliest instant a schedule deals in (UTC milliseconds).
    #[classattr]
    const FIRST_INSTANT_MS: Millis = schedule::FIRST_INSTANT;
    /// The latest instant a schedule deals in (UTC milliseconds).
    #[classattr]
    const LAST_INSTANT_MS: Millis = schedule::LAST_INSTANT;

    #[new]
    #[pyo3(signature = (cron=None, *, every=None, at=None, timezone="UTC", now_ms=None))]
    fn new(
        py: Python<'_>,
        cron: Option<&str>,
        every: Option<&str>,
        at: Option<&str>,
        timezone: &str,
        now_ms: Option<Millis>,
    ) -> PyResult<Self> {
        let now = now_ms.unwrap_or_else(system_now);
        let schedule = py
            .detach(|| match (cron, every, at) {
                (Some(c), None, None) => Schedule::cron(c, timezone, now),
                (None, Some(e), None) => {
                    schedule::parse_every(e).and_then(|ms| Schedule::every(ms, timezone))
                }
                (None, None, Some(a)) => schedule::parse_timezone(timezone)
                    .and_then(|tz| schedule::parse_instant(a, tz))
                    .and_then(|ms| Schedule::once(ms, timezone, now)),
                _ => Err(Error::InvalidSchedule(
                    "give exactly one of a cron expression, `every` or `at`".into(),
                )),
            })
            .map_err(to_pyerr)?;
        Ok(PySchedule { schedule })
    }

    /// The first fire time strictly after `after_ms`, in UTC milliseconds.
    fn next_after(&self, py: Python<'_>, after_ms: Millis) -> Option<Millis> {
        py.detach(|| self.schedule.next_after(after_ms))
    }

    /// The next `n` fire times after `after_ms` as (UTC milliseconds, ISO-8601 in the zone).
    fn preview(
        &self,
        py: Python<'_>,
        n: usize,
        after_ms: Millis,
    ) -> PyResult<Vec<(Millis, String)>> {
        if n > 10_000 {
            return Err(to_pyerr(Error::invalid("n", "must be at most 10000")));
        }
        Ok(py.detach(|| {
            self.schedule
                .preview(after_ms, n)
                .into_iter()
                .map(|t| (t, schedule::format_instant(t, self.schedule.tz)))
                .collect()
        }))
    }

    fn describe(&self) -> String {
        self.schedule.describe()
    }

    #[getter]
    fn timezone(&self) -> &'static str {
        self.schedule.tz.name()
    }
}

/// The bytes Python's `json.dumps(value, sort_keys=True)` gives for the JSON document `text`:
/// what cueapi signs and sends.
#[pyfunction]
fn canonical_json(text: &str) -> PyResult<String> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| to_pyerr(Error::invalid("payload", format!("not JSON: {e}"))))?;
    Ok(signing::canonical_json(&value))
}

/// `v1=<hex>`, the CueAPI signature of `body` at `timestamp`.
#[pyfunction]
fn sign_v1(secret: &str, timestamp: i64, body: &[u8]) -> String {
    signing::sign_v1(secret, timestamp, body)
}

/// `sha256=<hex>`, the raw-body signature the article's receiver checks.
#[pyfunction]
fn sign_sha256(secret: &str, body: &[u8]) -> String {
    signing::sign_sha256(secret, body)
}

/// `v1,<base64>`, the Standard Webhooks signature of message `id` at `timestamp`.
#[pyfunction]
fn sign_standard(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    signing::sign_standard(secret, id, timestamp, body)
}

fn schemes(allow_sha256: bool) -> signing::Schemes {
    if allow_sha256 {
        signing::Schemes::V1OrSha256
    } else {
        signing::Schemes::V1Only
    }
}

/// Checks a CueAPI signature (`v1=…` with its timestamp, or `sha256=…` when `allow_sha256`) in
/// constant time. Returns why it fails (`missing`, `scheme`, `timestamp`, `mismatch`), or `None`
/// when it verifies.
#[pyfunction]
#[pyo3(signature = (secret, body, signature, timestamp, now_s, tolerance_s, allow_sha256))]
fn check_signature(
    secret: &str,
    body: &[u8],
    signature: &str,
    timestamp: Option<&str>,
    now_s: i64,
    tolerance_s: i64,
    allow_sha256: bool,
) -> Option<&'static str> {
    let schemes = schemes(allow_sha256);
    signing::verify_cueapi_any(
        secret,
        body,
        signature,
        timestamp,
        now_s,
        tolerance_s,
        schemes,
    )
    .err()
    .map(reason)
}

/// True when `signature` (an `X-CueAPI-Signature` value: `v1=<hex>` with its
/// `X-CueAPI-Timestamp`, or — only with `allow_sha256=True` — `sha256=<hex>`) signs `payload`
/// with `secret`.
///
/// The official SDK's arguments, in its order. `sha256=` signs no time, so a captured one never
/// expires: it is refused unless asked for (the official SDK refuses it too), and never taken
/// over a body shaped like a `v1` message (`"<ts>." + body`), so a `v1` signature cannot pass
/// for one. `payload` is the raw body (`bytes` or `str`), or
/// the parsed body (a dict), which is checked in its canonical form. The raw bytes are checked
/// first; only when they fail and are JSON in another form than the canonical one is the
/// canonical re-serialisation checked too. `v1` timestamps more than `tolerance` seconds away
/// from now, either way, are refused. Compares in constant time and never raises for a
/// malformed signature or timestamp (it returns False); an empty or non-string secret raises
/// `ValidationError`, since every signature would verify against an empty key.
#[pyfunction]
#[pyo3(signature = (payload, signature, secret, timestamp=None, *, tolerance=300, allow_sha256=false))]
fn verify_webhook(
    payload: &Bound<'_, PyAny>,
    signature: &Bound<'_, PyAny>,
    secret: &Bound<'_, PyAny>,
    timestamp: Option<&Bound<'_, PyAny>>,
    tolerance: i64,
    allow_sha256: bool,
) -> PyResult<bool> {
    let secret = match secret.cast::<PyString>() {
        Ok(s) => s.to_str()?,
        Err(_) => return Err(to_pyerr(Error::invalid("secret", "must be a string"))),
    };
    if secret.is_empty() {
        return Err(to_pyerr(Error::invalid(
            "secret",
            "is empty: every signature would verify against an empty key",
        )));
    }
    let Ok(signature) = signature.cast::<PyString>() else {
        return Ok(false);
    };
    let Ok(signature) = signature.to_str() else {
        return Ok(false);
    };
    let stamp;
    let timestamp = match timestamp {
        None => None,
        Some(t) if t.is_none() => None,
        Some(t) => match t.cast::<PyString>() {
            Ok(s) => match s.to_str() {
                Ok(s) => Some(s),
                Err(_) => return Ok(false),
            },
            Err(_)
                if t.is_instance_of::<pyo3::types::PyInt>()
                    && !t.is_instance_of::<pyo3::types::PyBool>() =>
            {
                stamp = t.str()?.to_string();
                Some(stamp.as_str())
            }
            Err(_) => return Ok(false),
        },
    };
    let now_s = system_now().div_euclid(1000);
    let schemes = schemes(allow_sha256);
    let check = |body: &[u8]| {
        signing::verify_cueapi_any(
            secret, body, signature, timestamp, now_s, tolerance, schemes,
        )
        .is_ok()
    };
    if let Ok(bytes) = payload.cast::<PyBytes>() {
        return Ok(check(bytes.as_bytes()));
    }
    if let Ok(text) = payload.cast::<PyString>() {
        return Ok(match text.to_str() {
            Ok(text) => check(text.as_bytes()),
            Err(_) => false,
        });
    }
    if let Ok(raw) = payload.cast::<PyByteArray>() {
        return Ok(check(&raw.to_vec()));
    }
    if payload.is_instance_of::<PyMemoryView>() {
        let raw = payload.call_method0("tobytes")?;
        return Ok(check(raw.cast::<PyBytes>()?.as_bytes()));
    }
    // A parsed body: its canonical form, as Python's json.dumps(sort_keys=True) writes it.
    let json = payload.py().import("json")?;
    let kwargs = PyDict::new(payload.py());
    kwargs.set_item("sort_keys", true)?;
    kwargs.set_item("default", payload.py().get_type::<PyString>())?;
    let text = match json.call_method("dumps", (payload,), Some(&kwargs)) {
        Ok(text) => text,
        Err(_) => return Ok(false),
    };
    Ok(check(text.cast::<PyString>()?.to_str()?.as_bytes()))
}

/// Checks Standard Webhooks headers in constant time; `None` when they verify.
#[pyfunction]
fn check_standard(
    secret: &str,
    body: &[u8],
    id: &str,
    timestamp: &str,
    signatures: &str,
    now_s: i64,
    tolerance_s: i64,
) -> Option<&'static str> {
    signing::verify_standard(secret, body, id, timestamp, signatures, now_s, tolerance_s)
        .err()
        .map(reason)
}

fn reason(e: signing::VerifyError) -> &'static str {
    match e {
        signing::VerifyError::Missing => "missing",
        signing::VerifyError::Scheme => "scheme",
        signing::VerifyError::Timestamp => "timestamp",
        signing::VerifyError::Mismatch => "mismatch",
    }
}

/// The system clock in UTC milliseconds.
#[pyfunction]
fn now_ms() -> Millis {
    system_now()
}

/// Sends one email with the `CUEAPI_SMTP_*` settings of this moment (read at each call), waiting
/// with the GIL released. For tests and for checking a configuration before alerts rely on it.
/// Bad settings raise `ValidationError` (`field` names the variable); a failed send raises
/// `CueAPIError` with `transient` (worth retrying) and `code` (the relay's reply, or None).
#[pyfunction]
fn _send_test_email(py: Python<'_>, to: &str, subject: &str, body: &str) -> PyResult<()> {
    use crate::alerts::email::{MailError, Mailer, SmtpConfig, HOST};
    let config = SmtpConfig::from_env()
        .map_err(to_pyerr)?
        .ok_or_else(|| to_pyerr(Error::invalid(HOST, "is not set: email is not configured")))?;
    let rt = Engine::shared_runtime().map_err(to_pyerr)?;
    let sent = py.detach(|| {
        let mailer = Mailer::new(config).map_err(|message| MailError {
            transient: false,
            code: None,
            message,
        })?;
        rt.block_on(mailer.send(to, subject, body))
    });
    sent.map_err(|e| {
        let made = (|| -> PyResult<PyErr> {
            let cls = py.import("cueapi.exceptions")?.getattr("CueAPIError")?;
            let exc = cls.call1((e.message.as_str(),))?;
            exc.setattr("transient", e.transient)?;
            exc.setattr("code", e.code)?;
            Ok(PyErr::from_value(exc))
        })();
        made.unwrap_or_else(|err| err)
    })
}

/// `crate::limits` as a dict: each number by name, and the text limits as `cut_text` and
/// `evidence_text` (field → characters).
fn limits_dict(py: Python<'_>) -> PyResult<Bound<'_, pyo3::types::PyDict>> {
    use pyo3::types::PyDict;
    let d = PyDict::new(py);
    for (k, v) in crate::limits::numbers() {
        d.set_item(k, v)?;
    }
    for (name, table) in [
        ("cut_text", &crate::limits::CUT_TEXT[..]),
        ("evidence_text", &crate::limits::EVIDENCE_TEXT[..]),
    ] {
        let t = PyDict::new(py);
        for (field, n) in table {
            t.set_item(field, n)?;
        }
        d.set_item(name, t)?;
    }
    Ok(d)
}

#[pymodule]
fn _cueapi(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeEngine>()?;
    m.add_class::<ManualClock>()?;
    m.add_class::<Job>()?;
    m.add_class::<PySchedule>()?;
    m.add_function(wrap_pyfunction!(now_ms, m)?)?;
    m.add_function(wrap_pyfunction!(canonical_json, m)?)?;
    m.add_function(wrap_pyfunction!(sign_v1, m)?)?;
    m.add_function(wrap_pyfunction!(sign_sha256, m)?)?;
    m.add_function(wrap_pyfunction!(sign_standard, m)?)?;
    m.add_function(wrap_pyfunction!(check_signature, m)?)?;
    m.add_function(wrap_pyfunction!(check_standard, m)?)?;
    m.add_function(wrap_pyfunction!(verify_webhook, m)?)?;
    m.add_function(wrap_pyfunction!(_send_test_email, m)?)?;
    m.add("SCHEMA_VERSION", crate::store::SCHEMA_VERSION)?;
    m.add("LIMITS", limits_dict(m.py())?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    if m.py().version_info() < (3, 10) {
        return Err(PyRuntimeError::new_err("cueapi needs Python 3.10 or later"));
    }
    Ok(())
}
