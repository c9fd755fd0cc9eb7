-- Every delivery attempt of an execution, and the evidence an outcome carries.
CREATE TABLE attempts (
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    number       INTEGER NOT NULL,
    -- running, success, failed, interrupted
    status       TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    duration_ms  INTEGER,
    error        TEXT,
    error_type   TEXT,
    traceback    TEXT,
    http_status  INTEGER,
    claimed_by   TEXT,
    PRIMARY KEY (execution_id, number)
) WITHOUT ROWID;

ALTER TABLE executions ADD COLUMN outcome_timeout_at INTEGER;
ALTER TABLE executions ADD COLUMN evidence_external_id TEXT;
ALTER TABLE executions ADD COLUMN evidence_result_url TEXT;
ALTER TABLE executions ADD COLUMN evidence_result_ref TEXT;
ALTER TABLE executions ADD COLUMN evidence_result_type TEXT;
ALTER TABLE executions ADD COLUMN evidence_summary TEXT;
ALTER TABLE executions ADD COLUMN evidence_validation_state TEXT;
ALTER TABLE executions ADD COLUMN evidence_produced_at INTEGER;
ALTER TABLE executions ADD COLUMN evidence_artifacts TEXT;
ALTER TABLE executions ADD COLUMN evidence_metadata TEXT;
ALTER TABLE cues ADD COLUMN verification_mode TEXT;
CREATE INDEX executions_by_result_type ON executions (evidence_result_type) WHERE evidence_result_type IS NOT NULL;
