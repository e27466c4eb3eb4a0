-- Mailings to supporters, the preference centre and milestone notes (docs/campaign.md).

-- Two new kinds go through the same queue, claims and leases as every other email:
-- "mailing" (sequence = the mailing's id) and "milestone" (sequence = the threshold).
-- The list keeps "privacy_verification" (the privacy requests' links) as well.
ALTER TABLE emails DROP CONSTRAINT IF EXISTS emails_kind_check;
ALTER TABLE emails ADD CONSTRAINT emails_kind_check CHECK (kind IN (
    'confirmation', 'thank_you', 'already_signed', 'privacy_verification',
    'mailing', 'milestone'
));
-- One copy of a mailing per mailbox, whichever of its signatures was picked.
CREATE UNIQUE INDEX emails_mailing_once ON emails (sequence, address_key) WHERE kind = 'mailing';

-- Who a mailing can reach: one row per signature (so erasure and retention, which shred
-- per signature, delete exactly this person's rows: adapters/keys.py::shred). The
-- preferences are the mailbox's, copied on each of its rows (NULL: follow consent);
-- `unsubscribed_at` keeps an unsubscribe that outlived the mailbox's `recipients` row.
CREATE TABLE supporters (
    signature_id    uuid        PRIMARY KEY,
    petition_id     uuid        NOT NULL,
    address_key     text        NOT NULL,
    recipient       text        NOT NULL,
    first_name      text        NOT NULL,
    postcode_area   text,
    contact_consent boolean     NOT NULL,
    confirmed       boolean     NOT NULL,
    wants_updates   boolean,
    wants_news      boolean,
    unsubscribed_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX supporters_address ON supporters (address_key);
CREATE INDEX supporters_petition ON supporters (petition_id);

-- Confirmations and withdrawals (SignatureConfirmed, ...Withdrawn, ...Invalidated), which
-- may come before the supporter is recorded (its key late): no personal data.
CREATE TABLE supporter_states (
    signature_id uuid        PRIMARY KEY,
    confirmed_at timestamptz,
    withdrawn_at timestamptz
);

-- Petitions the mailer has heard of (from SignatureCreated): a mailing names them by slug.
CREATE TABLE petitions (
    petition_id uuid PRIMARY KEY,
    slug        text NOT NULL,
    title       text NOT NULL
);
CREATE INDEX petitions_slug ON petitions (slug);

CREATE TABLE mailings (
    id              bigserial   PRIMARY KEY,
    subject         text        NOT NULL,
    body_markdown   text        NOT NULL,
    category        text        NOT NULL CHECK (category IN ('news', 'updates')),
    cta_petition_id uuid        NOT NULL REFERENCES petitions (petition_id),
    cta_label       text        NOT NULL,
    first_name_fallback text    NOT NULL,
    source          text        NOT NULL UNIQUE,
    audience        jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'draft'
        CHECK (status IN ('draft', 'sending', 'sent', 'cancelled')),
    recipients      integer,
    skipped         integer,
    -- Final figures, kept when the emails' rows are deleted by retention.
    final_counts    jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz
);

-- The pacer: mailing emails wait in the queue with next_attempt_at = 'infinity' and are
-- released at the configured rate; `released_at` is how far the allowance was used.
CREATE TABLE mailing_pacer (
    id          integer     PRIMARY KEY CHECK (id = 1),
    released_at timestamptz NOT NULL
);
INSERT INTO mailing_pacer (id, released_at) VALUES (1, now());

-- What the pacer releases next, in mailing order.
CREATE INDEX emails_mailing_waiting ON emails (sequence, id)
    WHERE kind = 'mailing' AND status = 'queued' AND next_attempt_at = 'infinity';
CREATE INDEX emails_mailing_progress ON emails (sequence) WHERE kind = 'mailing';
