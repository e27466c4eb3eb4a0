-- Fewer index entries per signature (issue 7: every entry is written, and logged, for
-- every signature). Both token hashes are NULL for most rows (no confirmation asked, or
-- already confirmed; a replay token only after a replay), and a unique index on a
-- nullable column still holds an entry for each NULL: partial indexes hold only the
-- tokens there are. Lookups are by `hash = $1`, which implies NOT NULL, so they use them.
ALTER TABLE signatures DROP CONSTRAINT signatures_confirmation_token_hash_key;
CREATE UNIQUE INDEX signatures_confirmation_token ON signatures (confirmation_token_hash)
    WHERE confirmation_token_hash IS NOT NULL;
ALTER TABLE signatures DROP CONSTRAINT signatures_replay_token_hash_key;
CREATE UNIQUE INDEX signatures_replay_token ON signatures (replay_token_hash)
    WHERE replay_token_hash IS NOT NULL;
-- Only the minutely prune reads window_end, and a sequential scan of the counters serves
-- it; the index cost every attempt's upsert an entry.
DROP INDEX rate_counters_end;
