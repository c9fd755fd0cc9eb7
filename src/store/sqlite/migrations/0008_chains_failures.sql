-- The hosted service's cue fields, chained executions, keyed fires that remember their request,
-- and the cue's choice to retry reported failures.

-- A cue to fire when an execution of this one succeeds (`on_success_fire`); NULL: none.
ALTER TABLE cues ADD COLUMN on_success_fire TEXT;
-- A JSON list of keys a manual fire's payload must have; NULL: none.
ALTER TABLE cues ADD COLUMN required_payload_keys TEXT;
-- Whether a manual fire must carry a payload_override.
ALTER TABLE cues ADD COLUMN require_payload_override INTEGER NOT NULL DEFAULT 0;
-- Whether a reported failure (success: false) is retried like a failed delivery; by default it is
-- the handler's verdict and final.
ALTER TABLE cues ADD COLUMN retry_reported_failures INTEGER NOT NULL DEFAULT 0;

-- The execution whose success fired this one (triggered_by 'chain'), and how many steps deep.
ALTER TABLE executions ADD COLUMN chain_parent_id TEXT;
ALTER TABLE executions ADD COLUMN chain_depth INTEGER NOT NULL DEFAULT 0;
-- A keyed manual fire's request, canonical: the same key with another request is a conflict.
ALTER TABLE executions ADD COLUMN fire_request TEXT;

CREATE INDEX cues_on_success_fire ON cues (on_success_fire) WHERE on_success_fire IS NOT NULL;
