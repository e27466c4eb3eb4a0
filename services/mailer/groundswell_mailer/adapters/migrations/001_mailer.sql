-- One row per mailbox (canonical, lower-cased address): its unsubscribe token and state.
-- The last signature is kept only because an Unsubscribed event names one.
CREATE TABLE recipients (
    address_key       text        PRIMARY KEY,
    unsubscribe_token text        NOT NULL UNIQUE,
    unsubscribed_at   timestamptz,
    last_signature_id uuid        NOT NULL,
    last_petition_id  uuid        NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- Every email, from the moment an event calls for it until it is sent or given up.
-- (signature_id, kind, sequence) is the no-duplicate guarantee: confirmation and
-- thank-you always use sequence 1; the n-th "already signed" notice uses n.
-- `content` (tokens, first name) and `recipient` are wiped once the email is finished.
CREATE TABLE emails (
    id              bigserial   PRIMARY KEY,
    signature_id    uuid        NOT NULL,
    kind            text        NOT NULL
        CHECK (kind IN ('confirmation', 'thank_you', 'already_signed')),
    sequence        integer     NOT NULL DEFAULT 1,
    petition_id     uuid        NOT NULL,
    address_key     text        NOT NULL REFERENCES recipients (address_key),
    recipient       text,
    content         jsonb       NOT NULL,
    message_id      text        NOT NULL,
    -- The triggering event's correlation id, so EmailSent/EmailFailed carry it on.
    correlation_id  text,
    status          text        NOT NULL
        CHECK (status IN ('held', 'queued', 'sending', 'sent', 'failed', 'suppressed', 'cancelled')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claimed_until   timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (signature_id, kind, sequence)
);
CREATE INDEX emails_due ON emails (next_attempt_at) WHERE status IN ('queued', 'sending');
CREATE INDEX emails_held ON emails (signature_id) WHERE status IN ('held', 'queued');

-- The "already signed" cap: when the last notice for a signature went out, and how many.
CREATE TABLE duplicate_notices (
    signature_id   uuid        PRIMARY KEY,
    last_notice_at timestamptz NOT NULL,
    notices        integer     NOT NULL
);
