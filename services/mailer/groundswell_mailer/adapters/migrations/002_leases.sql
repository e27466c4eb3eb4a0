-- Heartbeat leases: a claim names the dispatcher holding it (`claimed_by`), which renews
-- `claimed_until` for all its claims every few seconds; a claim whose lease lapsed is
-- taken over by another dispatcher. The single "due" index becomes one per state, so
-- claiming never walks past the rows being sent.
ALTER TABLE emails ADD COLUMN claimed_by text;
DROP INDEX emails_due;
CREATE INDEX emails_queued ON emails (next_attempt_at) WHERE status = 'queued';
CREATE INDEX emails_sending ON emails (claimed_until) WHERE status = 'sending';
CREATE INDEX emails_claims ON emails (claimed_by) WHERE status = 'sending';
