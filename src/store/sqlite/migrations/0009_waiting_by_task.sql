-- Waiting executions by the task their payload names, in claim order (the task expression is the
-- one the claim queries use, so they can read from this index): the claimable listing finds each
-- task's oldest waiting executions without reading the others, so a task with one waiting
-- execution is not hidden behind a backlog of another task, and a `?task=` filter does not scan
-- the whole queue.
CREATE INDEX executions_waiting_by_task ON executions (
    (CASE WHEN json_type(payload, '$.task') = 'text' THEN json_extract(payload, '$.task') END),
    scheduled_for,
    id
) WHERE status = 'pending';
