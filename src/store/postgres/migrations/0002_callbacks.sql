-- Version 2: a verified provider callback waiting for the replica that drives its job (the latest per job);
-- recording one also sends NOTIFY sora_shim_callbacks with the job id, so that the owner acts on it at once.
CREATE TABLE callbacks (
    job_id          TEXT PRIMARY KEY,
    payload         TEXT NOT NULL,
    received_at_ms  BIGINT NOT NULL
);
