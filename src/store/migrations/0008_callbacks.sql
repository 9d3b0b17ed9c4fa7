-- Version 8: a verified provider callback waiting for the process that drives its job (the latest per job).
CREATE TABLE callbacks (
    job_id          TEXT PRIMARY KEY,
    payload         TEXT NOT NULL,
    received_at_ms  INTEGER NOT NULL
);
