-- sora-shim job store on PostgreSQL, version 1: the SQLite schema at its version 7 in one step, plus what
-- replicas share (job leases, the replica registry, provider callbacks waiting for their job's owner).
CREATE TABLE jobs (
    seq                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- creation order, for list pagination
    id                 TEXT NOT NULL UNIQUE,
    tenant             TEXT NOT NULL,
    kind               TEXT NOT NULL,
    request_json       TEXT NOT NULL,
    remixed_from       TEXT,
    backend            TEXT NOT NULL,
    backend_version    TEXT NOT NULL,
    backend_job_id     TEXT,
    state              TEXT NOT NULL,
    progress           BIGINT NOT NULL DEFAULT 0,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    completed_at       BIGINT,
    expires_at         BIGINT,
    error_code         TEXT,
    error_message      TEXT,
    assets_json        TEXT NOT NULL DEFAULT '[]',
    idempotency_key    TEXT,
    request_hash       TEXT NOT NULL,
    attempts           BIGINT NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT NOT NULL DEFAULT 0,
    version            BIGINT NOT NULL DEFAULT 1,
    deleted_at         BIGINT,
    backend_data       TEXT,
    produced_json      TEXT,
    created_at_ms      BIGINT,
    submitted_at_ms    BIGINT,
    shadow_of          TEXT,
    moderation_json    TEXT,
    -- The replica driving this unfinished job, and until when (unix ms) unless it renews.
    lease_owner        TEXT,
    lease_until_ms     BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_tenant_seq ON jobs (tenant, seq) WHERE deleted_at IS NULL;
CREATE INDEX jobs_unfinished ON jobs (seq) WHERE state NOT IN ('completed', 'failed') AND deleted_at IS NULL;
CREATE INDEX jobs_tenant_unfinished ON jobs (tenant, state) WHERE state NOT IN ('completed', 'failed') AND deleted_at IS NULL;
CREATE INDEX jobs_at_backend ON jobs (backend) WHERE state IN ('submitting', 'submitted', 'running', 'finalizing') AND deleted_at IS NULL;
CREATE INDEX jobs_shadow_of ON jobs (shadow_of) WHERE shadow_of IS NOT NULL;
CREATE INDEX jobs_expiring ON jobs (expires_at) WHERE expires_at IS NOT NULL AND assets_json <> '[]' AND deleted_at IS NULL;

CREATE TABLE characters (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    video_key   TEXT NOT NULL
);

CREATE TABLE events (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    video_id    TEXT NOT NULL UNIQUE,
    tenant      TEXT NOT NULL,
    type        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    fanned_out  BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX events_pending ON events (seq) WHERE NOT fanned_out;

CREATE TABLE webhook_deliveries (
    id                 TEXT PRIMARY KEY,
    event_id           TEXT NOT NULL,
    endpoint           TEXT NOT NULL,
    url                TEXT NOT NULL,
    state              TEXT NOT NULL,
    attempts           BIGINT NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT NOT NULL,
    created_at_ms      BIGINT NOT NULL,
    last_status        BIGINT,
    last_error         TEXT,
    delivered_at_ms    BIGINT,
    UNIQUE (event_id, endpoint)
);
CREATE INDEX deliveries_due ON webhook_deliveries (next_attempt_at_ms) WHERE state = 'pending';
CREATE INDEX deliveries_event ON webhook_deliveries (event_id);

-- Live replicas: each heartbeats here; one whose heartbeat is older than its lease has dropped out.
CREATE TABLE replicas (
    id              TEXT PRIMARY KEY,
    host            TEXT NOT NULL,
    pid             BIGINT NOT NULL,
    started_at_ms   BIGINT NOT NULL,
    heartbeat_at_ms BIGINT NOT NULL
);
