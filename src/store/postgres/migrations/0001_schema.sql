-- The PostgreSQL schema: the same tables, columns (in the same order), indexes and constraints as
-- SQLite's migrations 0001-0011 (the SQLite store's migrations/) taken together. A later change
-- to either schema is a new migration on both sides; tests/it/postgres.rs compares the two and
-- fails when they drift apart. The version lives in cueapi_schema (src/store/postgres/schema.rs),
-- the counterpart of SQLite's PRAGMA user_version.
--
-- How SQLite's types translate:
-- * Every instant is BIGINT Unix milliseconds, UTC, as in SQLite.
-- * Every other SQLite INTEGER is BIGINT too (SQLite's integers are 64-bit): the store reads each
--   of them as an i64 on both backends (tokio-postgres does not widen an INT4 to an i64).
-- * The flags SQLite keeps as INTEGER 0/1 (on_failure_pause, on_failure_email, alerting,
--   require_payload_override, retry_reported_failures, email_verified, outcome_success) are
--   BOOLEAN: the store reads and binds them as Rust bools on both backends (rusqlite maps bool to
--   0/1, tokio-postgres to BOOLEAN only). SQL that compares them with 0 or 1 is written as a
--   plain boolean test here.
-- * JSON (payloads, metadata, headers, lists, outcomes, fire requests) is TEXT, as in SQLite: the
--   store writes its own canonical text and must read back the same bytes (JSONB would reorder
--   keys, drop duplicate keys and refuse \u0000), and nothing queries inside it except the task
--   index below, which casts to json.
-- * Every text column is COLLATE "C": SQLite compares text byte by byte, so orderings (ORDER BY
--   name, id ranges, keyset pages) give the same answers whatever locale the database was
--   created with. PostgreSQL text cannot hold a NUL character, which SQLite text can: the store
--   must refuse one in user input before it reaches a query.
-- * SQLite's WITHOUT ROWID (attempts, workers, settings) has no counterpart (every table is a heap
--   with a primary-key index); no table uses AUTOINCREMENT (ids are prefixed text made by the
--   code), so there are no identity columns; health_probe's INTEGER PRIMARY KEY (a rowid alias in
--   SQLite) is a plain BIGINT key, always 1.
-- * Foreign keys are declared as in SQLite, and here they are enforced: SQLite turns enforcement
--   off only for its cost (see the SQLite store's `configure`), the code keeps the references
--   and writes the cascades out, so enforcing them changes no answer; on several nodes it turns
--   a tick fired for a cue deleted meanwhile into an error instead of an orphan execution.
--
-- Not here, on purpose:
-- * The outcome counter (a TEMP table and trigger, count_outcome_states, installed on SQLite's
--   writer connection) counts outcome states recorded since this process opened the store: it is
--   process state, not schema. On PostgreSQL the units of work will return what they recorded
--   (issue 12, point 0) instead of a trigger counting behind the store's back.
-- * What several nodes need comes with that step (issue 12, point 2), as a new migration:
--   cues hashed into a fixed number of partitions (computable from the id, e.g. a stored
--   generated column or hashtext(id) modulo the count: no column yet); a partition lease table
--   (partition, holder node, expires_at) renewed in the background; LISTEN/NOTIFY on cue changes;
--   deliveries and worker claims taken with FOR UPDATE SKIP LOCKED over executions_waiting and
--   executions_open. executions_occurrence below stays the last line of defence against a tick
--   fired twice by two nodes that both believe they hold a partition.

CREATE TABLE cues (
    id                         TEXT COLLATE "C" PRIMARY KEY,
    owner                      TEXT COLLATE "C" NOT NULL DEFAULT 'local',
    name                       TEXT COLLATE "C" NOT NULL,
    description                TEXT COLLATE "C",
    status                     TEXT COLLATE "C" NOT NULL CHECK (status IN ('active', 'paused', 'completed', 'failed')),
    transport                  TEXT COLLATE "C" NOT NULL CHECK (transport IN ('local', 'webhook', 'worker')),
    schedule_type              TEXT COLLATE "C" NOT NULL CHECK (schedule_type IN ('recurring', 'once', 'interval')),
    schedule_cron              TEXT COLLATE "C",
    schedule_at                BIGINT,
    schedule_every_ms          BIGINT,
    schedule_timezone          TEXT COLLATE "C" NOT NULL DEFAULT 'UTC',
    payload                    TEXT COLLATE "C" NOT NULL DEFAULT '{}',
    retry_max_attempts         BIGINT NOT NULL DEFAULT 3,
    retry_backoff_minutes      TEXT COLLATE "C" NOT NULL DEFAULT '[1, 5, 15]',
    outcome_deadline_seconds   BIGINT,
    overlap_policy             TEXT COLLATE "C" NOT NULL DEFAULT 'skip' CHECK (overlap_policy IN ('skip', 'allow')),
    catch_up_policy            TEXT COLLATE "C" NOT NULL DEFAULT 'once' CHECK (catch_up_policy IN ('skip', 'once', 'all')),
    catch_up_max               BIGINT NOT NULL DEFAULT 100,
    on_failure_pause           BOOLEAN NOT NULL DEFAULT FALSE,
    next_run                   BIGINT,
    last_run                   BIGINT,
    run_count                  BIGINT NOT NULL DEFAULT 0,
    fired_count                BIGINT NOT NULL DEFAULT 0,
    created_at                 BIGINT NOT NULL,
    updated_at                 BIGINT NOT NULL,
    verification_mode          TEXT COLLATE "C",
    callback_url               TEXT COLLATE "C",
    callback_method            TEXT COLLATE "C" NOT NULL DEFAULT 'POST',
    callback_headers           TEXT COLLATE "C" NOT NULL DEFAULT '{}',
    delivery_timeout_seconds   BIGINT NOT NULL DEFAULT 30,
    -- `v1` (X-CueAPI-Signature: v1=…, over "<ts>." + body) or `sha256` (sha256=…, over the body).
    signature_scheme           TEXT COLLATE "C" NOT NULL DEFAULT 'v1',
    on_failure_email           BOOLEAN NOT NULL DEFAULT TRUE,
    on_failure_webhook         TEXT COLLATE "C",
    -- How long an execution of a worker cue may wait for a claim before it counts as missed.
    claim_timeout_seconds      BIGINT NOT NULL DEFAULT 900,
    -- Reported failures in a row that raise a `consecutive_failures` alert, and the count so far.
    alert_consecutive_failures BIGINT NOT NULL DEFAULT 3,
    failure_streak             BIGINT NOT NULL DEFAULT 0,
    -- True while a failure alert of this cue is open: its next success sends a `recovered` notice.
    alerting                   BOOLEAN NOT NULL DEFAULT FALSE,
    -- A cue to fire when an execution of this one succeeds (`on_success_fire`); NULL: none.
    on_success_fire            TEXT COLLATE "C",
    -- A JSON list of keys a manual fire's payload must have; NULL: none.
    required_payload_keys      TEXT COLLATE "C",
    -- Whether a manual fire must carry a payload_override.
    require_payload_override   BOOLEAN NOT NULL DEFAULT FALSE,
    -- Whether a reported failure (success: false) is retried like a failed delivery.
    retry_reported_failures    BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (owner, name)
);
CREATE INDEX cues_due ON cues (next_run) WHERE status = 'active';
CREATE INDEX cues_on_success_fire ON cues (on_success_fire) WHERE on_success_fire IS NOT NULL;

CREATE TABLE executions (
    id                        TEXT COLLATE "C" PRIMARY KEY,
    cue_id                    TEXT COLLATE "C" NOT NULL REFERENCES cues (id) ON DELETE CASCADE,
    scheduled_for             BIGINT NOT NULL,
    -- pending, delivering, retrying, success, failed, missed, skipped
    status                    TEXT COLLATE "C" NOT NULL,
    -- schedule (a tick of the cue), manual_fire, replay, chain
    triggered_by              TEXT COLLATE "C" NOT NULL DEFAULT 'schedule',
    replay_of                 TEXT COLLATE "C",
    idempotency_key           TEXT COLLATE "C" NOT NULL,
    payload                   TEXT COLLATE "C" NOT NULL DEFAULT '{}',
    attempts                  BIGINT NOT NULL DEFAULT 0,
    next_retry                BIGINT,
    error_message             TEXT COLLATE "C",
    started_at                BIGINT,
    delivered_at              BIGINT,
    last_attempt_at           BIGINT,
    claimed_by                TEXT COLLATE "C",
    claimed_at                BIGINT,
    lease_expires_at          BIGINT,
    outcome_success           BOOLEAN,
    outcome_result            TEXT COLLATE "C",
    outcome_error             TEXT COLLATE "C",
    outcome_metadata          TEXT COLLATE "C",
    outcome_recorded_at       BIGINT,
    outcome_state             TEXT COLLATE "C",
    outcome_deadline_seconds  BIGINT,
    outcome_deadline_at       BIGINT,
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL,
    outcome_timeout_at        BIGINT,
    evidence_external_id      TEXT COLLATE "C",
    evidence_result_url       TEXT COLLATE "C",
    evidence_result_ref       TEXT COLLATE "C",
    evidence_result_type      TEXT COLLATE "C",
    evidence_summary          TEXT COLLATE "C",
    evidence_validation_state TEXT COLLATE "C",
    evidence_produced_at      BIGINT,
    evidence_artifacts        TEXT COLLATE "C",
    evidence_metadata         TEXT COLLATE "C",
    http_status               BIGINT,
    response_body             TEXT COLLATE "C",
    -- When an execution waiting for a worker's claim becomes `missed` (set each time it becomes
    -- claimable); when a worker last gave a sign of life for the claim it holds.
    claim_deadline_at         BIGINT,
    heartbeat_at              BIGINT,
    -- The execution whose success fired this one (triggered_by 'chain'), and how many steps deep.
    chain_parent_id           TEXT COLLATE "C",
    chain_depth               BIGINT NOT NULL DEFAULT 0,
    -- A keyed manual fire's request, canonical: the same key with another request is a conflict.
    fire_request              TEXT COLLATE "C"
);
-- One execution per tick of a cue: the unique (cue_id, scheduled_for) of the reference, for the
-- ticks the schedule produced (manual fires and replays are extra executions by design).
CREATE UNIQUE INDEX executions_occurrence ON executions (cue_id, scheduled_for) WHERE triggered_by = 'schedule';
CREATE INDEX executions_by_cue ON executions (cue_id, scheduled_for);
CREATE INDEX executions_by_time ON executions (scheduled_for);
-- Small: only executions still in flight.
CREATE INDEX executions_open ON executions (cue_id) WHERE status IN ('pending', 'delivering', 'retrying');
CREATE INDEX executions_by_result_type ON executions (evidence_result_type) WHERE evidence_result_type IS NOT NULL;
-- Manual fires with an idempotency key are looked up by it.
CREATE INDEX executions_fire_key ON executions (cue_id, idempotency_key) WHERE triggered_by = 'manual_fire';
-- Waiting executions in claim order (due time, then id).
CREATE INDEX executions_waiting ON executions (scheduled_for, id) WHERE status = 'pending';
CREATE INDEX executions_claimed ON executions (claimed_by) WHERE status = 'delivering';
-- Waiting executions by the task their payload names, in claim order. SQLite's expression is
--   CASE WHEN json_type(payload, '$.task') = 'text' THEN json_extract(payload, '$.task') END
-- and the claim queries must spell this one exactly as here to read from the index. (The two differ
-- on a key written twice, where SQLite takes the first value and PostgreSQL the last; the store
-- writes payloads from a parsed JSON object, which holds each key once.)
CREATE INDEX executions_waiting_by_task ON executions (
    (CASE WHEN json_typeof(payload::json -> 'task') = 'string' THEN payload::json ->> 'task' END),
    scheduled_for,
    id
) WHERE status = 'pending';

-- Every delivery attempt of an execution.
CREATE TABLE attempts (
    execution_id TEXT COLLATE "C" NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    number       BIGINT NOT NULL,
    -- running, success, failed, interrupted, abandoned
    status       TEXT COLLATE "C" NOT NULL,
    started_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    duration_ms  BIGINT,
    error        TEXT COLLATE "C",
    error_type   TEXT COLLATE "C",
    traceback    TEXT COLLATE "C",
    http_status  BIGINT,
    claimed_by   TEXT COLLATE "C",
    -- An outcome reported during an attempt whose delivery then failed and was retried: kept here,
    -- so the retry's own report can become the execution's outcome.
    outcome      TEXT COLLATE "C",
    PRIMARY KEY (execution_id, number)
);

-- Users with API keys and webhook secrets.
CREATE TABLE users (
    id                   TEXT COLLATE "C" PRIMARY KEY,
    email                TEXT COLLATE "C" NOT NULL UNIQUE,
    -- SHA-256 hex of the whole `cue_sk_…` key; the key itself is shown once and never stored.
    api_key_hash         TEXT COLLATE "C" NOT NULL UNIQUE,
    api_key_prefix       TEXT COLLATE "C" NOT NULL,
    webhook_secret       TEXT COLLATE "C" NOT NULL,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    alert_webhook_url    TEXT COLLATE "C",
    alert_webhook_secret TEXT COLLATE "C",
    -- Whether the user's email address may receive alert email (see SQLite's 0011).
    email_verified       BOOLEAN NOT NULL DEFAULT TRUE
);

-- A pull worker as it last announced itself. `handlers` is the JSON list of task names it runs
-- (NULL: it never said, and may be given any task).
CREATE TABLE workers (
    owner          TEXT COLLATE "C" NOT NULL,
    worker_id      TEXT COLLATE "C" NOT NULL,
    handlers       TEXT COLLATE "C",
    last_heartbeat BIGINT NOT NULL,
    registered_at  BIGINT NOT NULL,
    -- When the worker was found silent past the worker timeout; cleared by its next heartbeat.
    offline_since  BIGINT,
    PRIMARY KEY (owner, worker_id)
);

-- Alerts: what went wrong (or right again), kept for the API.
CREATE TABLE alerts (
    id              TEXT COLLATE "C" PRIMARY KEY,
    owner           TEXT COLLATE "C" NOT NULL,
    cue_id          TEXT COLLATE "C",
    execution_id    TEXT COLLATE "C",
    -- retries_exhausted, outcome_timeout, verification_failed, consecutive_failures, missed,
    -- worker_offline, recovered
    alert_type      TEXT COLLATE "C" NOT NULL,
    severity        TEXT COLLATE "C" NOT NULL,
    message         TEXT COLLATE "C" NOT NULL,
    metadata        TEXT COLLATE "C" NOT NULL DEFAULT '{}',
    -- Alerts with the same key within the re-alert interval are one alert seen again.
    dedup_key       TEXT COLLATE "C" NOT NULL,
    occurrences     BIGINT NOT NULL DEFAULT 1,
    last_seen_at    BIGINT NOT NULL,
    -- Set when a `recovered` notice closed the incident this alert belongs to.
    resolved_at     BIGINT,
    acknowledged_at BIGINT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX alerts_by_owner ON alerts (owner, created_at);
CREATE INDEX alerts_open ON alerts (owner, dedup_key, created_at) WHERE resolved_at IS NULL;

-- The notifications that tell people about alerts, kept until sent so that a restart loses none.
CREATE TABLE notifications (
    id              TEXT COLLATE "C" PRIMARY KEY,
    alert_id        TEXT COLLATE "C" NOT NULL,
    -- alert_webhook (the user's), failure_webhook (the cue's on_failure.webhook), email
    channel         TEXT COLLATE "C" NOT NULL,
    target          TEXT COLLATE "C" NOT NULL,
    -- pending, sent, failed, skipped
    status          TEXT COLLATE "C" NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT COLLATE "C",
    sent_at         BIGINT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE status = 'pending';

-- Settings kept with the database (e.g. the re-alert interval).
CREATE TABLE settings (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value TEXT COLLATE "C" NOT NULL
);

-- A row the health check rewrites: a round trip that really writes, so that a database that
-- cannot take writes shows on /health.
CREATE TABLE health_probe (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    at BIGINT NOT NULL
);
