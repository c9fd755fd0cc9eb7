-- A row the health check rewrites: a round trip through the writer that really writes a page, so
-- a full disk or a read-only file shows on /health instead of an empty commit that succeeds.
CREATE TABLE health_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
