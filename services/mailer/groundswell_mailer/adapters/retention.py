"""The mailer's retention (`groundswell-mailer retention`): finished emails, and
optionally the ids of events already handled.

Why deleting them keeps the promise that no email goes out twice. An event can come
again: Kafka redelivers after a crash, and `groundswell-signing replay` (after a broker
is lost, `make up` runs it by itself) queues every signature's history again with the
same event ids. Three things stop a second email, any one of them enough:

1. `processed_events`: the event's id was claimed when it was handled
   (groundswell_runtime.consumer.claim_event), so it is dropped on arrival;
2. `emails` UNIQUE (signature_id, kind, sequence): the email is already recorded;
3. `data_keys`: once a signature's key is shredded (erasure, or signing's retention six
   months after the petition closes) nothing sealed under it can be read, so no
   address is known to write to.

Deleting finished emails after `email_retention` removes (2) for them, and (1) still
holds. Pruning `processed_events` too would leave a signature whose key is still alive
(an open petition; a replayed SignatureCreated of a petition that needs no
confirmation) with no guard at all: its thank-you would go out again. So that pruning
is off unless `processed_events_retention` is set, and should only be set longer than
any replay could reach back (for a stack whose petitions close and whose signatures
signing's retention anonymises before then). The ids hold no personal data: keeping
them costs disk, not privacy. `data_keys` tombstones are guard (3) and are never pruned.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg
from groundswell_runtime.retention import delete_in_batches

from groundswell_mailer.domain.delivery import FINISHED

# Oldest first by primary key: each batch stops after `$3` matches instead of reading
# the table (no index on finished_at is needed for a job that runs once an hour).
_FINISHED_EMAILS = """
DELETE FROM mailer.emails WHERE id IN (
    SELECT id FROM mailer.emails
    WHERE status = ANY($1::text[]) AND finished_at < $2
    ORDER BY id LIMIT $3)
"""

_PROCESSED_EVENTS = """
DELETE FROM mailer.processed_events WHERE event_id IN (
    SELECT event_id FROM mailer.processed_events WHERE processed_at < $1 LIMIT $2)
"""


async def prune(
    pool: asyncpg.Pool,
    *,
    now: datetime,
    email_retention: timedelta,
    processed_events_retention: timedelta | None,
    batch_size: int = 1_000,
) -> dict[str, int]:
    """Returns rows deleted per table. Each batch is its own transaction."""
    finished = sorted(status.value for status in FINISHED)
    counts = {
        "emails_deleted": await delete_in_batches(
            pool, _FINISHED_EMAILS, finished, now - email_retention, batch_size=batch_size
        ),
        "processed_events_deleted": 0,
    }
    if processed_events_retention is not None:
        counts["processed_events_deleted"] = await delete_in_batches(
            pool, _PROCESSED_EVENTS, now - processed_events_retention, batch_size=batch_size
        )
    return counts
