-- Version 5: the webhook outbox. An event is written in the same transaction that makes a video completed or
-- failed (one per video); the dispatcher fans each event out to the endpoints configured for its tenant, one
-- delivery per endpoint, and retries each delivery until it is acknowledged or its retry window ends.
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,       -- evt_…, the body's "id"
    video_id    TEXT NOT NULL UNIQUE,
    tenant      TEXT NOT NULL,
    type        TEXT NOT NULL,              -- video.completed | video.failed
    created_at  INTEGER NOT NULL,           -- unix seconds, the body's "created_at"
    fanned_out  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_pending ON events (seq) WHERE fanned_out = 0;

CREATE TABLE webhook_deliveries (
    id                 TEXT PRIMARY KEY,    -- wh_…, the webhook-id header (the same on every attempt)
    event_id           TEXT NOT NULL,
    endpoint           TEXT NOT NULL,       -- the endpoint's name in the config
    url                TEXT NOT NULL,
    state              TEXT NOT NULL,       -- pending | delivered | failed
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL,
    created_at_ms      INTEGER NOT NULL,
    last_status        INTEGER,
    last_error         TEXT,
    delivered_at_ms    INTEGER,
    UNIQUE (event_id, endpoint)
);
CREATE INDEX deliveries_due ON webhook_deliveries (next_attempt_at_ms) WHERE state = 'pending';
CREATE INDEX deliveries_event ON webhook_deliveries (event_id);
