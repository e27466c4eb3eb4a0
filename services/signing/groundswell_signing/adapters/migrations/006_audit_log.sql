-- Every admin export of personal data: who (an 8-hex fingerprint of the admin token,
-- never the token), when, what, which petition and how many rows. Nothing in it names
-- a signer, so it is kept for good: it is the record a data-protection officer asks for.
CREATE TABLE audit_log (
    id            bigserial   PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    who           text        NOT NULL,
    action        text        NOT NULL,
    petition_slug text,
    row_count     integer
);
CREATE INDEX audit_log_petition ON audit_log (petition_slug, at);

-- The retention job (service_layer/retention.py) remembers which closed petitions it
-- has anonymised, and as of which close time: a finished petition is not walked again
-- every run, and one reopened and closed again (a later close time) is walked again.
CREATE TABLE retention_petitions (
    petition_id   uuid        PRIMARY KEY REFERENCES petitions (id),
    closed_at     timestamptz NOT NULL,
    anonymised_at timestamptz NOT NULL
);

-- Unconfirmed signatures, oldest first, for the retention job: without it each run
-- would read the whole table. Only pending rows enter it, and a confirmation takes a
-- row out; the key only grows, so inserts land on the right-hand page.
CREATE INDEX signatures_unconfirmed ON signatures (created_at)
    WHERE initial_status = 'pending' AND confirmed_at IS NULL;
