-- When a worker was found silent past the worker timeout (a `worker_offline` alert was raised);
-- cleared by its next heartbeat, which sends a `recovered` notice.
ALTER TABLE workers ADD COLUMN offline_since INTEGER;
