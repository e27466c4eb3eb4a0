-- Fixed-window rate-limit counters: one row per (window key, window start), bumped
-- atomically by every signing attempt (see domain/rate_limits.py). UNLOGGED: counters
-- are worth nothing after a crash (limits start afresh), so they cost no WAL.
CREATE UNLOGGED TABLE rate_counters (
    key          text    NOT NULL,
    window_start bigint  NOT NULL,
    window_end   bigint  NOT NULL,
    hits         integer NOT NULL,
    PRIMARY KEY (key, window_start)
);
CREATE INDEX rate_counters_end ON rate_counters (window_end);

-- Rate limits no longer scan signatures by address.
DROP INDEX signatures_rate;
