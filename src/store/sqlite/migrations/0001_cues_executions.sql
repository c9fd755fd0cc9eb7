-- Cues and their executions, with the field names of the CueAPI reference where one exists.
-- Every instant is integer Unix milliseconds, UTC.
CREATE TABLE cues (
    id                       TEXT PRIMARY KEY,
    owner                    TEXT NOT NULL DEFAULT 'local',
    name                     TEXT NOT NULL,
    description              TEXT,
    status                   TEXT NOT NULL CHECK (status IN ('active', 'paused', 'completed', 'failed')),
    transport                TEXT NOT NULL CHECK (transport IN ('local', 'webhook', 'worker')),
    schedule_type            TEXT NOT NULL CHECK (schedule_type IN ('recurring', 'once', 'interval')),
    schedule_cron            TEXT,
    schedule_at              INTEGER,
    schedule_every_ms        INTEGER,
    schedule_timezone        TEXT NOT NULL DEFAULT 'UTC',
    payload                  TEXT NOT NULL DEFAULT '{}',
    retry_max_attempts       INTEGER NOT NULL DEFAULT 3,
    retry_backoff_minutes    TEXT NOT NULL DEFAULT '[1, 5, 15]',
    outcome_deadline_seconds INTEGER,
    overlap_policy           TEXT NOT NULL DEFAULT 'skip' CHECK (overlap_policy IN ('skip', 'allow')),
    catch_up_policy          TEXT NOT NULL DEFAULT 'once' CHECK (catch_up_policy IN ('skip', 'once', 'all')),
    catch_up_max             INTEGER NOT NULL DEFAULT 100,
    on_failure_pause         INTEGER NOT NULL DEFAULT 0,
    next_run                 INTEGER,
    last_run                 INTEGER,
    run_count                INTEGER NOT NULL DEFAULT 0,
    fired_count              INTEGER NOT NULL DEFAULT 0,
    created_at               INTEGER NOT NULL,
    updated_at               INTEGER NOT NULL,
    UNIQUE (owner, name)
);
CREATE INDEX cues_due ON cues (next_run) WHERE status = 'active';

CREATE TABLE executions (
    id                  TEXT PRIMARY KEY,
    cue_id              TEXT NOT NULL REFERENCES cues (id) ON DELETE CASCADE,
    scheduled_for       INTEGER NOT NULL,
    -- pending, delivering, retrying, success, failed, missed, skipped
    status              TEXT NOT NULL,
    -- schedule (a tick of the cue), manual_fire, replay
    triggered_by        TEXT NOT NULL DEFAULT 'schedule',
    replay_of           TEXT,
    idempotency_key     TEXT NOT NULL,
    payload             TEXT NOT NULL DEFAULT '{}',
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_retry          INTEGER,
    error_message       TEXT,
    started_at          INTEGER,
    delivered_at        INTEGER,
    last_attempt_at     INTEGER,
    claimed_by          TEXT,
    claimed_at          INTEGER,
    lease_expires_at    INTEGER,
    outcome_success     INTEGER,
    outcome_result      TEXT,
    outcome_error       TEXT,
    outcome_metadata    TEXT,
    outcome_recorded_at INTEGER,
    outcome_state       TEXT,
    outcome_deadline_seconds INTEGER,
    outcome_deadline_at INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
-- One execution per tick of a cue: the unique (cue_id, scheduled_for) of the reference, for the
-- ticks the schedule produced (manual fires and replays are extra executions by design).
CREATE UNIQUE INDEX executions_occurrence ON executions (cue_id, scheduled_for) WHERE triggered_by = 'schedule';
CREATE INDEX executions_by_cue ON executions (cue_id, scheduled_for);
CREATE INDEX executions_by_time ON executions (scheduled_for);
-- Small: only executions still in flight.
CREATE INDEX executions_open ON executions (cue_id) WHERE status IN ('pending', 'delivering', 'retrying');
