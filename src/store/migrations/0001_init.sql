-- sora-shim job store, version 1.
CREATE TABLE jobs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,  -- creation order, for list pagination
    id               TEXT NOT NULL UNIQUE,
    tenant           TEXT NOT NULL,
    kind             TEXT NOT NULL,
    request_json     TEXT NOT NULL,                      -- the normalized request
    remixed_from     TEXT,
    backend          TEXT NOT NULL,
    backend_version  TEXT NOT NULL,
    backend_job_id   TEXT,
    state            TEXT NOT NULL,
    progress         INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    completed_at     INTEGER,
    expires_at       INTEGER,
    error_code       TEXT,
    error_message    TEXT,
    assets_json      TEXT NOT NULL DEFAULT '[]',
    idempotency_key  TEXT,
    request_hash     TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL DEFAULT 0,
    version          INTEGER NOT NULL DEFAULT 1,
    deleted_at       INTEGER
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_tenant_seq ON jobs (tenant, seq) WHERE deleted_at IS NULL;
CREATE INDEX jobs_unfinished ON jobs (state) WHERE state NOT IN ('completed', 'failed');

CREATE TABLE characters (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    video_key   TEXT NOT NULL
);
