-- A second confirmation token a replay may issue (see service_layer/replay.py): the hash of
-- the first stays valid, since its email may already be in the signer's inbox.
ALTER TABLE signatures ADD COLUMN replay_token_hash bytea UNIQUE;
