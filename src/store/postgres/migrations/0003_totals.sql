-- Version 3: running totals every replica adds to and none resets (shadow copies the sample called for but that
-- were not made, by reason).
CREATE TABLE totals (
    key  TEXT PRIMARY KEY,
    n    BIGINT NOT NULL
);
