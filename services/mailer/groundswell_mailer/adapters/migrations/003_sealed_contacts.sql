-- Signers' contact details arrive sealed (groundswell_contracts.sealed); their data keys
-- arrive on `signer-keys`. A key is kept until it is shredded; then its row stays with
-- data_key NULL, so an event sealed under it that comes later is dropped, not kept
-- waiting for a key that will never come.
CREATE TABLE data_keys (
    key_id      uuid        PRIMARY KEY,
    data_key    bytea,
    shredded_at timestamptz
);

-- Events whose key has not arrived yet (the two topics are read independently). Only
-- sealed bytes are kept here; `confirmed`: the signature was confirmed meanwhile.
CREATE TABLE sealed_waiting (
    event_id    uuid        PRIMARY KEY,
    key_id      uuid        NOT NULL,
    event       text        NOT NULL,
    confirmed   boolean     NOT NULL DEFAULT false,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sealed_waiting_key ON sealed_waiting (key_id);

-- The link of an erasure or access request (signing's privacy requests) is an email of
-- its own kind; its signature_id and petition_id are the request's id.
ALTER TABLE emails DROP CONSTRAINT emails_kind_check;
ALTER TABLE emails ADD CONSTRAINT emails_kind_check
    CHECK (kind IN ('confirmation', 'thank_you', 'already_signed', 'privacy_verification'));
