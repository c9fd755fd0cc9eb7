-- Alerts: what went wrong (or right again), kept for the API, and the notifications that tell
-- people, kept until sent so that a restart loses none.

CREATE TABLE alerts (
    id              TEXT PRIMARY KEY,
    owner           TEXT NOT NULL,
    cue_id          TEXT,
    execution_id    TEXT,
    -- retries_exhausted, outcome_timeout, verification_failed, consecutive_failures, missed,
    -- worker_offline, recovered
    alert_type      TEXT NOT NULL,
    severity        TEXT NOT NULL,
    message         TEXT NOT NULL,
    metadata        TEXT NOT NULL DEFAULT '{}',
    -- Alerts with the same key within the re-alert interval are one alert seen again.
    dedup_key       TEXT NOT NULL,
    occurrences     INTEGER NOT NULL DEFAULT 1,
    last_seen_at    INTEGER NOT NULL,
    -- Set when a `recovered` notice closed the incident this alert belongs to.
    resolved_at     INTEGER,
    acknowledged_at INTEGER,
    created_at      INTEGER NOT NULL
);
CREATE INDEX alerts_by_owner ON alerts (owner, created_at);
CREATE INDEX alerts_open ON alerts (owner, dedup_key, created_at) WHERE resolved_at IS NULL;

CREATE TABLE notifications (
    id              TEXT PRIMARY KEY,
    alert_id        TEXT NOT NULL,
    -- alert_webhook (the user's), failure_webhook (the cue's on_failure.webhook), email
    channel         TEXT NOT NULL,
    target          TEXT NOT NULL,
    -- pending, sent, failed, skipped
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    sent_at         INTEGER,
    created_at      INTEGER NOT NULL
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE status = 'pending';

ALTER TABLE users ADD COLUMN alert_webhook_url TEXT;
ALTER TABLE users ADD COLUMN alert_webhook_secret TEXT;

-- Reported failures in a row that raise a `consecutive_failures` alert, and the count so far.
ALTER TABLE cues ADD COLUMN alert_consecutive_failures INTEGER NOT NULL DEFAULT 3;
ALTER TABLE cues ADD COLUMN failure_streak INTEGER NOT NULL DEFAULT 0;
-- 1 while a failure alert of this cue is open: its next success sends a `recovered` notice.
ALTER TABLE cues ADD COLUMN alerting INTEGER NOT NULL DEFAULT 0;

-- Settings kept with the database (e.g. the re-alert interval).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
