-- The server: users with API keys and webhook secrets; webhook transport fields on cues; the
-- delivery result on executions.
CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    -- SHA-256 hex of the whole `cue_sk_…` key; the key itself is shown once and never stored.
    api_key_hash   TEXT NOT NULL UNIQUE,
    api_key_prefix TEXT NOT NULL,
    webhook_secret TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);

ALTER TABLE cues ADD COLUMN callback_url TEXT;
ALTER TABLE cues ADD COLUMN callback_method TEXT NOT NULL DEFAULT 'POST';
ALTER TABLE cues ADD COLUMN callback_headers TEXT NOT NULL DEFAULT '{}';
ALTER TABLE cues ADD COLUMN delivery_timeout_seconds INTEGER NOT NULL DEFAULT 30;
-- `v1` (X-CueAPI-Signature: v1=…, over "<ts>." + body) or `sha256` (sha256=…, over the body).
ALTER TABLE cues ADD COLUMN signature_scheme TEXT NOT NULL DEFAULT 'v1';
ALTER TABLE cues ADD COLUMN on_failure_email INTEGER NOT NULL DEFAULT 1;
ALTER TABLE cues ADD COLUMN on_failure_webhook TEXT;

ALTER TABLE executions ADD COLUMN http_status INTEGER;
ALTER TABLE executions ADD COLUMN response_body TEXT;

-- Manual fires with an idempotency key are looked up by it.
CREATE INDEX executions_fire_key ON executions (cue_id, idempotency_key) WHERE triggered_by = 'manual_fire';

-- An outcome reported during an attempt whose delivery then failed and was retried: kept here,
-- so the retry's own report can become the execution's outcome.
ALTER TABLE attempts ADD COLUMN outcome TEXT;
