-- Petitions as far as sharing needs them: the slug a share link redirects to.
-- Rows made from a signature event carry updated_at = -infinity, so any petition
-- event (the authority on slug and title) replaces them.
CREATE TABLE petitions (
    petition_id uuid        PRIMARY KEY,
    slug        text        NOT NULL,
    title       text        NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX petitions_slug ON petitions (slug, updated_at DESC);

-- One share link per (non-fraudulent) signature. `status` follows the signature:
-- pending until confirmed, counted, or void once withdrawn or invalidated (and then
-- the first name is forgotten). Only the first name is ever kept.
CREATE TABLE share_links (
    share_code   text        PRIMARY KEY,
    signature_id uuid        NOT NULL UNIQUE,
    petition_id  uuid        NOT NULL REFERENCES petitions (petition_id),
    first_name   text,
    source       text,
    status       text        NOT NULL CHECK (status IN ('pending', 'counted', 'void')),
    created_at   timestamptz NOT NULL
);
CREATE INDEX share_links_petition ON share_links (petition_id, status);

-- Clicks on share links by people (robots are not recorded). A visitor is an HMAC of
-- day, IP and user agent: no address is stored, and one visitor counts once a day.
CREATE TABLE clicks (
    id           bigserial   PRIMARY KEY,
    share_code   text        NOT NULL REFERENCES share_links (share_code),
    petition_id  uuid        NOT NULL,
    channel      text        NOT NULL,
    visitor_hash text        NOT NULL,
    clicked_on   date        NOT NULL,
    clicked_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (share_code, visitor_hash, clicked_on)
);
CREATE INDEX clicks_petition ON clicks (petition_id, channel);
CREATE INDEX clicks_recent ON clicks (share_code, clicked_at DESC);

-- A signature brought in by someone's share link: at most one per signature.
CREATE TABLE referrals (
    signature_id          uuid        PRIMARY KEY,
    share_code            text        NOT NULL REFERENCES share_links (share_code),
    referrer_signature_id uuid        NOT NULL,
    petition_id           uuid        NOT NULL,
    channel               text        NOT NULL,
    status                text        NOT NULL CHECK (status IN ('pending', 'counted', 'void')),
    created_at            timestamptz NOT NULL
);
CREATE INDEX referrals_petition ON referrals (petition_id, status);
CREATE INDEX referrals_code ON referrals (share_code, status);
