-- The outcome counter of /metrics: each change of an execution's outcome state is noted in the
-- transaction's own setting `cueapi.outcomes` (a list of states), which the store reads before it
-- commits and adds to its node's counts once the commit succeeded. Nothing is shared between
-- transactions, so concurrent writers never wait on a counter row, and a transaction rolled back
-- (or run again after a serialization failure) counts nothing.
CREATE FUNCTION cueapi_note_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.outcome_state IS NOT NULL AND NEW.outcome_state IS DISTINCT FROM OLD.outcome_state THEN
        PERFORM set_config(
            'cueapi.outcomes',
            COALESCE(current_setting('cueapi.outcomes', true), '') || NEW.outcome_state || ',',
            true);
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER note_outcome_states
    AFTER UPDATE OF outcome_state ON executions
    FOR EACH ROW EXECUTE FUNCTION cueapi_note_outcome();
