-- Version 9: running totals that are never reset (shadow copies the sample called for but that were not made,
-- by reason), kept across restarts.
CREATE TABLE totals (
    key  TEXT PRIMARY KEY,
    n    INTEGER NOT NULL
);
