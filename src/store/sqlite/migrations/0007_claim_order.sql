-- Waiting executions in claim order (due time, then id), so that listing and claiming the oldest
-- reads from the front of this index and stops at its limit, however long a history the cues have.
DROP INDEX executions_waiting;
CREATE INDEX executions_waiting ON executions (scheduled_for, id) WHERE status = 'pending';
