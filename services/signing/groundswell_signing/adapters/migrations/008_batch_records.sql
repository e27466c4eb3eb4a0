-- The record types of the group-commit statement's parameters (repository.WRITE_SIGNATURES):
-- a batch goes as three arrays of records (the attempts as rows of `signatures`, their
-- rate-limit hits, their outbox events) instead of one array per column. asyncpg checks
-- every element of an array it encodes against three abstract base classes, and a
-- signature was ~60 elements; as records it is about six (issue 7, docs/performance.md).
CREATE TYPE rate_hit AS (
    attempt      bigint,   -- the attempt's ordinal in its batch
    key          text,
    window_start bigint,
    window_end   bigint,
    lim          integer
);
CREATE TYPE signature_event AS (
    signature_id   uuid,
    fraudulent     boolean,  -- for the signature stored as fraudulent (else as it came)
    event_id       uuid,
    event_type     text,
    topic          text,
    message_key    text,
    payload        text,
    correlation_id text
);
