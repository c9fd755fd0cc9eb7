-- Executions by the execution that chained them (SQLite's migration 0012): every successful
-- outcome asks whether its execution already chained one.
CREATE INDEX executions_by_chain_parent ON executions (chain_parent_id)
    WHERE chain_parent_id IS NOT NULL;
