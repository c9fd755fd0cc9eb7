-- Executions by the execution that chained them. Every successful outcome asks whether its
-- execution already chained one (`chain_after`); without this index that question scanned every
-- execution, and outcome reports slowed as the history grew (bench/RESULTS.md, issue 12).
CREATE INDEX executions_by_chain_parent ON executions (chain_parent_id)
    WHERE chain_parent_id IS NOT NULL;
