-- Version 2: what replicas pass to each other or count together. A verified provider callback waiting for the
-- replica that drives its job (the latest per job); recording one also sends NOTIFY sora_shim_callbacks with
-- the job id, so that the owner acts on it at once.
CREATE TABLE callbacks (
    job_id          TEXT PRIMARY KEY,
    payload         TEXT NOT NULL,
    received_at_ms  BIGINT NOT NULL
);

-- Counts per day that every replica shares (the shadow daily cap): one row per key and day (UTC).
CREATE TABLE daily_counts (
    key  TEXT NOT NULL,
    day  BIGINT NOT NULL,
    n    BIGINT NOT NULL,
    PRIMARY KEY (key, day)
);

-- Request-rate buckets every replica shares (tenants' requests_per_minute): the GCRA theoretical arrival time
-- of each, in microseconds of the database's clock.
CREATE TABLE rate_cells (
    key     TEXT PRIMARY KEY,
    tat_us  BIGINT NOT NULL
);
