-- Version 6: finding videos whose assets have expired (retention) without scanning every job.
CREATE INDEX jobs_expiring ON jobs (expires_at) WHERE expires_at IS NOT NULL AND assets_json != '[]' AND deleted_at IS NULL;
