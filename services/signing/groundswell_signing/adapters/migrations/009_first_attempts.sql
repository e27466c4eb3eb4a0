-- A network's rate counter keeps its window's first attempt (domain/rate_limits.py): the
-- petition it was on and its second. That attempt is added to no per-petition counter,
-- so a network that attempts once in its window writes one counter row, not three.
-- Rows from before have neither (NULL): their first attempts were counted everywhere.
ALTER TABLE rate_counters ADD COLUMN first_petition uuid, ADD COLUMN first_at bigint;

-- The group-commit statement's hits (repository.WRITE_SIGNATURES), with what the rule
-- needs now: which kind of counter each is and the attempt's second. A new type, so a
-- process still running the statement of before (a rolling deploy) keeps `rate_hit`.
CREATE TYPE counter_hit AS (
    attempt      bigint,   -- the attempt's ordinal in its batch
    key          text,
    window_start bigint,
    window_end   bigint,
    lim          integer,
    kind         text,     -- 'network', 'petition' or 'plain'
    at           bigint    -- the attempt's second (since the epoch)
);
