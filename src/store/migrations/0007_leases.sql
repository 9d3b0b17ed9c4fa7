-- Version 7: the lease on an unfinished job (which process drives it, until when), kept as PostgreSQL keeps it
-- so that both stores answer the same contract; and counting the jobs at a backend (`max_concurrent`).
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until_ms INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_at_backend ON jobs (backend) WHERE state IN ('submitting', 'submitted', 'running', 'finalizing') AND deleted_at IS NULL;
