-- Version 2: what a mapped backend keeps to find a job again, and what a backend actually produced.
ALTER TABLE jobs ADD COLUMN backend_data TEXT;
ALTER TABLE jobs ADD COLUMN produced_json TEXT;
