-- Several nodes on one database (issue 12). Each node says it is alive in `cueapi_nodes` about
-- three times per lease; the cues are split into a fixed number of partitions (a hash of the cue
-- id), each leased by at most one node at a time in `cueapi_partitions`. A node times the ticks
-- of the cues in the partitions it holds; a partition whose lease ran out (its node died or lost
-- the database) is taken by a live node, which then closes the dead node's attempts as
-- interrupted and puts that partition's work back on its own timer. All times are the
-- database's clock, in Unix milliseconds, so that the nodes' clocks need not agree.
CREATE TABLE cueapi_nodes (
    id         TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    seen_at    BIGINT NOT NULL,
    -- What the node says about itself: host, process id, partitions held, ticks fired (JSON).
    info       TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE cueapi_partitions (
    part   INTEGER PRIMARY KEY,
    holder TEXT,
    until  BIGINT NOT NULL DEFAULT 0
);

-- The number of partitions is fixed here and in the code (engine::cluster::PARTITIONS): 60
-- shares evenly between 1, 2, 3, 4, 5 or 6 nodes.
INSERT INTO cueapi_partitions (part) SELECT generate_series(0, 59);
