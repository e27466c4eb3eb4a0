-- Each signature's contact details travel sealed under a data key of its own (see
-- groundswell_contracts.sealed); deleting the key is what makes every copy on the
-- topics unreadable. Signatures recorded before this migration get one now (two random
-- UUIDs: 244 bits from the server's strong random source); the mailer learns it the
-- first time it is needed (a duplicate attempt, or a replay).
ALTER TABLE signatures ADD COLUMN data_key bytea;
UPDATE signatures SET data_key = uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid());
-- The first name may appear on the campaign's leaderboard of sharers only with consent.
ALTER TABLE signatures ADD COLUMN leaderboard_consent boolean NOT NULL DEFAULT false;
-- When the signer's personal data was erased (erasure request or retention).
ALTER TABLE signatures ADD COLUMN erased_at timestamptz;
ALTER TABLE signatures ALTER COLUMN email DROP NOT NULL;
ALTER TABLE signatures ALTER COLUMN name DROP NOT NULL;

-- Erasure and access requests: verified by a link emailed to the address (only its
-- canonical form and the token's hash are kept, and only until the request is done).
CREATE TABLE privacy_requests (
    id              uuid        PRIMARY KEY,
    kind            text        NOT NULL CHECK (kind IN ('erasure', 'access')),
    email_canonical text,
    token_hash      bytea       UNIQUE,
    data_key        bytea,
    source          text        NOT NULL CHECK (source IN ('web', 'admin')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    completed_at    timestamptz,
    -- What was done, without who: how many signatures were erased.
    erased_signatures integer
);
CREATE INDEX privacy_requests_open ON privacy_requests (expires_at) WHERE completed_at IS NULL;
