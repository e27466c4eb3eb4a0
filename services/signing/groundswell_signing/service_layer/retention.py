"""Retention: what signing stops holding, and when (`groundswell-signing retention`).

Run on a schedule (cron, a Kubernetes CronJob, the loop in `make up`); every rule is
idempotent, so a run that dies half-way is finished by the next one, and two runs at
once only erase or delete a row once (the statements re-check their condition on the
row they lock). Work goes in batches of `batch_size` rows per transaction, so a backlog
of months never holds locks on a large part of the table.

- **Closed petitions** (`after_close`, 6 months by default, as the UK Parliament's
  petitions site does): every signature is erased by `erasure.erase_signatures`, the
  one rule that anonymises a row and shreds its data key. Counted signatures keep
  counting (anonymised); the rest are erased as not counted (see `_keeps_counting`).
- **Unconfirmed signatures** (`unconfirmed`, 30 days): erased as not counted, which
  queues SignatureWithdrawn, SignatureErased and DataKeyShredded so the counter's
  pending figure drops and the mailer forgets the contact; then deleted, once those
  events have left the outbox (see `_delete_unconfirmed`).
- **Privacy requests** done or expired more than `privacy_requests` ago: deleted.
- **Rate-limit windows** that have ended: deleted, in one statement
  (`repository.prune_rate_counters` says why; a running signing service also prunes
  them every minute).
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import asyncpg
from groundswell_runtime.retention import delete_in_batches

from groundswell_signing.adapters import repository
from groundswell_signing.config import SigningSettings
from groundswell_signing.domain.events import event_id
from groundswell_signing.service_layer.erasure import erase_signatures

# The facts a signature's events are named after (domain/events.py: each event id is
# uuid5(signature id, fact), the same every time it is queued, replays included).
_SIGNATURE_FACTS = (
    "data-key",
    "created",
    "confirmed",
    "withdrawn",
    "invalidated",
    "erased",
    "data-key-shredded",
)


@dataclass(frozen=True)
class RetentionPolicy:
    after_close: timedelta = timedelta(days=183)
    unconfirmed: timedelta = timedelta(days=30)
    privacy_requests: timedelta = timedelta(days=30)
    batch_size: int = 1_000

    @classmethod
    def of(cls, settings: SigningSettings) -> RetentionPolicy:
        return cls(
            after_close=timedelta(days=settings.retention_after_close_days),
            unconfirmed=timedelta(days=settings.unconfirmed_retention_days),
            privacy_requests=timedelta(days=settings.privacy_request_retention_days),
            batch_size=settings.retention_batch_size,
        )


@dataclass
class RetentionResult:
    petitions_anonymised: int = 0
    signatures_anonymised: int = 0
    unconfirmed_erased: int = 0
    unconfirmed_deleted: int = 0
    # Erased, but their events are still in the outbox: deleted by a later run.
    unconfirmed_awaiting_publication: int = 0
    privacy_requests_deleted: int = 0
    rate_counters_deleted: int = 0

    def counts(self) -> dict[str, int]:
        return asdict(self)


async def run_retention(
    pool: asyncpg.Pool, policy: RetentionPolicy, now: datetime
) -> RetentionResult:
    result = RetentionResult()
    await _anonymise_closed_petitions(pool, policy, now, result)
    await _erase_unconfirmed(pool, policy, now, result)
    await _delete_unconfirmed(pool, policy, now, result)
    result.privacy_requests_deleted = await delete_in_batches(
        pool,
        "DELETE FROM signing.privacy_requests WHERE id IN ("
        "  SELECT id FROM signing.privacy_requests"
        "  WHERE coalesce(completed_at, expires_at) < $1 LIMIT $2)",
        now - policy.privacy_requests,
        batch_size=policy.batch_size,
    )
    result.rate_counters_deleted = await repository.prune_rate_counters(pool, int(now.timestamp()))
    return result


# When a petition closed: the later of `updated_at` and `closes_at`. A petition closes by
# its deadline passing (closes_at) or by an edit (status 'closed', or a closes_at set in
# the past), and that edit is its updated_at. Signatures arrive until the later of the
# two, never after it; taking the earlier would start the clock at a past deadline
# entered today, erasing signatures made this morning. An edit to a closed petition
# moves the clock on: retention then comes later, never sooner. (GREATEST skips NULLs.)
_CLOSED_PETITIONS = """
SELECT p.id, greatest(p.updated_at, p.closes_at) AS closed_at
FROM signing.petitions p
LEFT JOIN signing.retention_petitions r ON r.petition_id = p.id
WHERE (p.status = 'closed' OR p.closes_at <= $1)
  AND greatest(p.updated_at, p.closes_at) < $2
  AND r.closed_at IS DISTINCT FROM greatest(p.updated_at, p.closes_at)
ORDER BY closed_at
"""

# One page of a petition's signatures, in (created_at, id) order from the last one seen:
# `created_at >= $2` lets the (petition_id, created_at) index start there, the row
# comparison skips what the previous page already took.
_PETITION_PAGE = """
SELECT id, created_at,
       initial_status = 'signed' OR confirmed_at IS NOT NULL AS counted,
       initial_status = 'fraudulent' AS fraudulent,
       withdrawn_at IS NOT NULL OR invalidated_at IS NOT NULL AS excluded,
       erased_at IS NOT NULL AS erased
FROM signing.signatures
WHERE petition_id = $1 AND created_at >= $2 AND (created_at, id) > ($2, $3)
ORDER BY created_at, id
LIMIT $4
"""

_NO_ID = uuid.UUID(int=0)


def _keeps_counting(row: asyncpg.Record) -> bool:
    """Erased signatures that counted keep counting. Fraudulent ones go the same way:
    they never counted, and erasing them as not counted would invent a withdrawal for
    them (the counter's class for them does not move either way). A pending one is
    erased as not counted:
    erasure removes its confirmation token, so it can never be confirmed, and a
    withdrawal takes it out of the pending figure everywhere. One already withdrawn or
    invalidated is erased as what it is: not counted."""
    if row["excluded"]:
        return False
    return bool(row["counted"] or row["fraudulent"])


async def _anonymise_closed_petitions(
    pool: asyncpg.Pool, policy: RetentionPolicy, now: datetime, result: RetentionResult
) -> None:
    async with pool.acquire() as conn:
        petitions = await conn.fetch(_CLOSED_PETITIONS, now, now - policy.after_close)
    for petition in petitions:
        after: tuple[datetime, uuid.UUID] = (datetime.min.replace(tzinfo=now.tzinfo), _NO_ID)
        while True:
            async with pool.acquire() as conn, conn.transaction():
                page = await conn.fetch(
                    _PETITION_PAGE, petition["id"], after[0], after[1], policy.batch_size
                )
                live = [row for row in page if not row["erased"]]
                counted = [row["id"] for row in live if _keeps_counting(row)]
                uncounted = [row["id"] for row in live if not _keeps_counting(row)]
                result.signatures_anonymised += await erase_signatures(
                    conn, counted, counted=True, now=now
                )
                result.signatures_anonymised += await erase_signatures(
                    conn, uncounted, counted=False, now=now
                )
            if len(page) < policy.batch_size:
                break
            after = (page[-1]["created_at"], page[-1]["id"])
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO signing.retention_petitions (petition_id, closed_at, anonymised_at) "
                "VALUES ($1, $2, $3) ON CONFLICT (petition_id) DO UPDATE "
                "SET closed_at = EXCLUDED.closed_at, anonymised_at = EXCLUDED.anonymised_at",
                petition["id"],
                petition["closed_at"],
                now,
            )
        result.petitions_anonymised += 1


# Served by the partial index signatures_unconfirmed (migration 006). A link that still
# works (a confirmation TTL set longer than the retention) keeps its signature.
_UNCONFIRMED = """
SELECT id FROM signing.signatures
WHERE initial_status = 'pending' AND confirmed_at IS NULL AND created_at < $1
  AND erased_at IS NULL
  AND (confirmation_expires_at IS NULL OR confirmation_expires_at <= $2)
ORDER BY created_at
LIMIT $3
"""


async def _erase_unconfirmed(
    pool: asyncpg.Pool, policy: RetentionPolicy, now: datetime, result: RetentionResult
) -> None:
    while True:
        async with pool.acquire() as conn, conn.transaction():
            ids = [
                r["id"]
                for r in await conn.fetch(
                    _UNCONFIRMED, now - policy.unconfirmed, now, policy.batch_size
                )
            ]
            result.unconfirmed_erased += await erase_signatures(conn, ids, counted=False, now=now)
        if len(ids) < policy.batch_size:
            return


_ERASED_UNCONFIRMED = """
SELECT id, created_at FROM signing.signatures
WHERE initial_status = 'pending' AND confirmed_at IS NULL AND created_at < $1
  AND erased_at IS NOT NULL AND (withdrawn_at IS NOT NULL OR invalidated_at IS NOT NULL)
  AND created_at >= $2 AND (created_at, id) > ($2, $3)
ORDER BY created_at, id
LIMIT $4
"""


async def _delete_unconfirmed(
    pool: asyncpg.Pool, policy: RetentionPolicy, now: datetime, result: RetentionResult
) -> None:
    """Delete erased, never-confirmed signatures whose events have all been published.

    Why deleting keeps every consumer right: the row is erased first, which queues
    SignatureWithdrawn (the counter moves it from pending to withdrawn), SignatureErased
    and DataKeyShredded (the mailer deletes the key and the emails). Until all of them
    have left the outbox the row stays, so none is lost. After that, a consumer that
    saw the signature has seen its end, and one rebuilt by `groundswell-signing replay`
    never hears of it: either way it is neither counted nor pending, which is what the
    reconciled figures (signatures, pending) compare. The one figure that differs is a
    rebuilt counter's `withdrawn`, which no longer includes signatures nobody confirmed:
    an unconfirmed signature was never a signature, and keeping an anonymised row only
    to hold that figure steady is not a reason to keep it.

    Only rows excluded from the count are deleted: one erased while still pending (an
    erasure request that kept it "counted") is still pending for the counter, and
    deleting it would make PostgreSQL and the counter disagree.

    "Published" is read from the outbox itself: the relay deletes a row once the broker
    has it, and every event of a signature has an id derived from the signature's id,
    so a signature none of whose event ids is still in the outbox has nothing pending.
    """
    after: tuple[datetime, uuid.UUID] = (datetime.min.replace(tzinfo=now.tzinfo), _NO_ID)
    while True:
        async with pool.acquire() as conn, conn.transaction():
            page = await conn.fetch(
                _ERASED_UNCONFIRMED, now - policy.unconfirmed, after[0], after[1], policy.batch_size
            )
            ids = [r["id"] for r in page]
            events = {event_id(sid, fact): sid for sid in ids for fact in _SIGNATURE_FACTS}
            pending = await conn.fetch(
                "SELECT DISTINCT event_id FROM signing.outbox WHERE event_id = ANY($1::uuid[])",
                list(events),
            )
            waiting = {events[r["event_id"]] for r in pending}
            deletable = [sid for sid in ids if sid not in waiting]
            status = await conn.execute(
                "DELETE FROM signing.signatures WHERE id = ANY($1::uuid[]) "
                "AND erased_at IS NOT NULL AND confirmed_at IS NULL",
                deletable,
            )
            result.unconfirmed_deleted += int(status.split()[-1])
            result.unconfirmed_awaiting_publication += len(waiting)
        if len(page) < policy.batch_size:
            return
        after = (page[-1]["created_at"], page[-1]["id"])
