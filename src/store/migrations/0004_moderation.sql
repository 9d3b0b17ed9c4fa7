-- Version 4: the moderation verdict recorded on a job (a prompt policy's, or the provider's), and an index for
-- counting a tenant's unfinished jobs (the per-tenant cap) and the queue depth by state.
ALTER TABLE jobs ADD COLUMN moderation_json TEXT;
CREATE INDEX jobs_tenant_unfinished ON jobs (tenant, state) WHERE state NOT IN ('completed', 'failed') AND deleted_at IS NULL;
