-- Version 8: a verified provider callback waiting for the process that drives its job (the latest per job),
-- and counts per day that survive a restart.
CREATE TABLE callbacks (
    job_id          TEXT PRIMARY KEY,
    payload         TEXT NOT NULL,
    received_at_ms  INTEGER NOT NULL
);

-- Counts per day that hold across restarts (the shadow daily cap): one row per key and day (UTC).
CREATE TABLE daily_counts (
    key  TEXT NOT NULL,
    day  INTEGER NOT NULL,
    n    INTEGER NOT NULL,
    PRIMARY KEY (key, day)
);
