-- The group-commit statement's attempts (repository.WRITE_SIGNATURES) as a record of
-- their own instead of rows of `signatures`: the columns an attempt gives and nothing
-- else, the address as text. asyncpg encodes an `inet` by parsing it with Python's
-- ipaddress module (~3 us a signature, issue 7, docs/performance.md); PostgreSQL parses
-- the text in C when the row is inserted. A new type, so a process still running the
-- statement of before (a rolling deploy) keeps passing `signatures` rows.
CREATE TYPE signature_attempt AS (
    id                       uuid,
    petition_id              uuid,
    name                     text,
    email                    text,
    email_canonical          text,
    email_domain             text,
    postcode                 text,
    postcode_area            text,
    country                  text,
    contact_consent          boolean,
    consent_wording_version  text,
    consent_at               timestamptz,
    source                   text,
    ref                      text,
    ref_channel              text,
    share_code               text,
    initial_status           text,
    confirmation_token_hash  bytea,
    confirmation_expires_at  timestamptz,
    withdraw_token_hash      bytea,
    ip                       text,
    created_at               timestamptz,
    data_key                 bytea,
    leaderboard_consent      boolean
);
