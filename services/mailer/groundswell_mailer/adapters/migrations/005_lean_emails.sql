-- Fewer index entries per email, and lease renewals that can be HOT updates.
--
-- Every email row is inserted, claimed (queued -> sending) and finished (-> sent): the
-- two updates change `status`, which the partial indexes' predicates name, so they can
-- never be HOT and each one adds an entry to every index whose predicate the new row
-- version meets. The lease renewal changes only `claimed_until`; it was indexed, so
-- every renewal of every held row was a non-HOT update too.
--
-- emails_sending (claimed_until WHERE status = 'sending') goes: looking for lapsed
-- claims reads emails_claims (claimed_by WHERE status = 'sending') instead, which holds
-- only the rows being sent (a few hundred per dispatcher at most). With no index on
-- `claimed_until` a renewal is HOT whenever its page has room, hence the fillfactor.
DROP INDEX emails_sending;
-- emails_held (signature_id WHERE status IN ('held', 'queued')) took an entry for every
-- queued email; the lookups by signature (confirmation, withdrawal, shredding) use the
-- unique (signature_id, kind, sequence) index. Only the purge of never-confirmed
-- thank-yous needs held rows by age.
DROP INDEX emails_held;
CREATE INDEX emails_held_age ON emails (created_at) WHERE status = 'held';
ALTER TABLE emails SET (fillfactor = 80);
