-- Version 10: unfinished jobs by lease deadline, so that a sweep finds the leases that are due (free, run out,
-- or to renew) without reading every unfinished row.
CREATE INDEX jobs_lease_due ON jobs (lease_until_ms) WHERE state NOT IN ('completed', 'failed') AND deleted_at IS NULL
