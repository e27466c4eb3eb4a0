CREATE TABLE petitions (
    id                    uuid PRIMARY KEY,
    slug                  text NOT NULL UNIQUE,
    title                 text NOT NULL,
    target                text NOT NULL,
    body                  text NOT NULL,
    goal                  integer CHECK (goal IS NULL OR goal > 0),
    requires_confirmation boolean NOT NULL DEFAULT true,
    organiser_email       text,
    closes_at             timestamptz,
    status                text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    milestones            integer[] NOT NULL DEFAULT '{}',
    auto_raise_goal       boolean NOT NULL DEFAULT false,
    cors_origins          text[] NOT NULL DEFAULT '{}',
    version               integer NOT NULL DEFAULT 1,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE signatures (
    id                       uuid PRIMARY KEY,
    petition_id              uuid NOT NULL REFERENCES petitions (id),
    name                     text NOT NULL,
    email                    text NOT NULL,
    email_canonical          text NOT NULL,
    email_domain             text NOT NULL,
    postcode                 text,
    postcode_area            text,
    country                  char(2) NOT NULL,
    contact_consent          boolean NOT NULL,
    consent_wording_version  text NOT NULL,
    consent_at               timestamptz NOT NULL,
    source                   text,
    ref                      text,
    share_code               text NOT NULL UNIQUE,
    -- What the signature was when first recorded; replays rebuild history from it.
    initial_status           text NOT NULL CHECK (initial_status IN ('pending', 'signed', 'fraudulent')),
    confirmation_token_hash  bytea UNIQUE,
    confirmation_expires_at  timestamptz,
    confirmed_at             timestamptz,
    withdraw_token_hash      bytea NOT NULL UNIQUE,
    withdrawn_at             timestamptz,
    invalidated_at           timestamptz,
    invalidation_reason      text,
    -- Kept only for rate limiting and invalidation by IP; never logged.
    ip                       inet,
    created_at               timestamptz NOT NULL DEFAULT now(),
    -- One signature per person per petition, enforced here so concurrent
    -- duplicates cannot both be recorded.
    CONSTRAINT one_signature_per_person UNIQUE (petition_id, email_canonical)
);

CREATE INDEX signatures_rate ON signatures (ip, created_at);
CREATE INDEX signatures_petition_created ON signatures (petition_id, created_at);
