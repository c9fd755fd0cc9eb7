-- Pull workers (the `worker` transport over HTTP): who is alive, what they can run, and the
-- windows that keep claims honest.

-- A worker as it last announced itself. `handlers` is the JSON list of task names it runs (NULL:
-- it never said, and may be given any task).
CREATE TABLE workers (
    owner          TEXT NOT NULL,
    worker_id      TEXT NOT NULL,
    handlers       TEXT,
    last_heartbeat INTEGER NOT NULL,
    registered_at  INTEGER NOT NULL,
    PRIMARY KEY (owner, worker_id)
) WITHOUT ROWID;

-- How long an execution of a worker cue may wait for a claim before it counts as missed.
ALTER TABLE cues ADD COLUMN claim_timeout_seconds INTEGER NOT NULL DEFAULT 900;

-- When an execution waiting for a worker's claim becomes `missed` (set each time it becomes
-- claimable); when a worker last gave a sign of life for the claim it holds.
ALTER TABLE executions ADD COLUMN claim_deadline_at INTEGER;
ALTER TABLE executions ADD COLUMN heartbeat_at INTEGER;

CREATE INDEX executions_waiting ON executions (scheduled_for) WHERE status = 'pending';
CREATE INDEX executions_claimed ON executions (claimed_by) WHERE status = 'delivering';
