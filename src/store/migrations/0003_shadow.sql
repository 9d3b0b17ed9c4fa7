-- Version 3: when a job was created and when a backend accepted it, in ms (submit latency), and the primary job
-- a shadow job mirrors.
ALTER TABLE jobs ADD COLUMN created_at_ms INTEGER;
ALTER TABLE jobs ADD COLUMN submitted_at_ms INTEGER;
ALTER TABLE jobs ADD COLUMN shadow_of TEXT;
CREATE INDEX jobs_shadow_of ON jobs (shadow_of) WHERE shadow_of IS NOT NULL;
