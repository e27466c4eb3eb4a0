"""The send queue in PostgreSQL: claims with heartbeat leases, and outcomes in batches.

A claim sets `status = 'sending'`, `attempts + 1`, `claimed_by` (the dispatcher) and
`claimed_until` (its lease). The live dispatcher renews the lease of everything it
holds with one statement every few seconds; a claim whose lease lapsed is taken over
by the next claim. Outcomes of many emails are written in one transaction, one
statement per kind of outcome, with their events in the outbox.

No index covers `claimed_until` (migration 005), so a renewal, which changes nothing
else, is a HOT update whenever the row's page has room: lapsed claims are found among
the rows being sent (`emails_claims`, a few hundred per dispatcher at most).

Every statement here may be repeated after a connection was lost mid-commit: the
`status = 'sending'` guards make a repeat change nothing and enqueue no second event.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from uuid import UUID

import asyncpg
from groundswell_contracts.events import EmailFailed, EmailKind, EmailSent, Event
from groundswell_runtime.db import INDEX_SCANS_ONLY
from groundswell_runtime.outbox import enqueue_correlated

from groundswell_mailer.adapters.repository import SCHEMA
from groundswell_mailer.domain.delivery import (
    Deferred,
    Failed,
    Outcome,
    Released,
    Sent,
    Suppressed,
)
from groundswell_mailer.domain.messages import EmailContent


@dataclass(frozen=True)
class ClaimedEmail:
    id: int
    signature_id: UUID
    petition_id: UUID
    kind: EmailKind
    recipient: str
    content: EmailContent
    message_id: str
    correlation_id: str | None
    attempts: int
    unsubscribe_token: str
    unsubscribed: bool
    # A mailing's id, a milestone's threshold, the n-th already-signed notice; else 1.
    sequence: int = 1
    # How long it had been due when claimed: how far behind the sending is.
    due_for: float = 0.0


async def claim_due(
    pool: asyncpg.Pool, claimant: str, limit: int, lease: timedelta
) -> list[ClaimedEmail]:
    """Claim up to `limit` emails: lapsed claims of other dispatchers first, then due ones.

    A dispatcher never takes over its own lapsed claims: it still holds them in memory
    (some may be delivered and waiting to be marked sent).
    """
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(INDEX_SCANS_ONLY)  # a queue: mostly dead rows between vacuums
        rows = await conn.fetch(
            "WITH lapsed AS ("
            "  SELECT id FROM mailer.emails"
            "  WHERE status = 'sending' AND claimed_until < now()"
            "    AND claimed_by IS DISTINCT FROM $3"
            "  ORDER BY claimed_until LIMIT $1 FOR UPDATE SKIP LOCKED"
            "), fresh AS ("
            "  SELECT id FROM mailer.emails"
            "  WHERE status = 'queued' AND next_attempt_at <= now()"
            "  ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED"
            "), due AS ("
            "  SELECT id FROM lapsed UNION ALL SELECT id FROM fresh LIMIT $1"
            ") "
            "UPDATE mailer.emails e SET status = 'sending', attempts = e.attempts + 1, "
            "claimed_by = $3, claimed_until = now() + $2::interval "
            "FROM due, mailer.recipients r "
            "WHERE e.id = due.id AND r.address_key = e.address_key "
            "RETURNING e.id, e.signature_id, e.petition_id, e.kind, e.recipient, e.content, "
            "e.message_id, e.correlation_id, e.attempts, r.unsubscribe_token, "
            "r.unsubscribed_at IS NOT NULL AS unsubscribed, e.sequence, "
            "extract(epoch FROM now() - e.next_attempt_at)::float8 AS due_for",
            limit,
            lease,
            claimant,
        )
    return [
        ClaimedEmail(
            id=row["id"],
            signature_id=row["signature_id"],
            petition_id=row["petition_id"],
            kind=row["kind"],
            recipient=row["recipient"],
            content=EmailContent.from_json(json.loads(row["content"])),
            message_id=row["message_id"],
            correlation_id=row["correlation_id"],
            attempts=row["attempts"],
            unsubscribe_token=row["unsubscribe_token"],
            unsubscribed=row["unsubscribed"],
            sequence=row["sequence"],
            due_for=row["due_for"],
        )
        for row in rows
    ]


async def renew_leases(pool: asyncpg.Pool, claimant: str, lease: timedelta) -> set[int]:
    """Extend every lease `claimant` holds; returns the ids it still holds."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "UPDATE mailer.emails SET claimed_until = now() + $2::interval "
            "WHERE claimed_by = $1 AND status = 'sending' RETURNING id",
            claimant,
            lease,
        )
    return {row["id"] for row in rows}


@dataclass
class Recorded:
    """What one `record` changed (rows already finished by a previous try are not counted)."""

    sent: list[EmailKind] = field(default_factory=list)
    failed: list[tuple[EmailKind, bool]] = field(default_factory=list)
    suppressed: list[EmailKind] = field(default_factory=list)
    deferred: int = 0
    released: int = 0


# Columns cleared when an email is finished: the address and the tokens are not kept.
_FINISHED = (
    "finished_at = now(), claimed_by = NULL, claimed_until = NULL, "
    "content = '{}'::jsonb, recipient = NULL"
)


async def record(pool: asyncpg.Pool, claimant: str, outcomes: Sequence[Outcome]) -> Recorded:
    """Write a batch of outcomes and their events in one transaction."""
    sent = [o.email_id for o in outcomes if isinstance(o, Sent)]
    failed = {o.email_id: o for o in outcomes if isinstance(o, Failed)}
    suppressed = [o.email_id for o in outcomes if isinstance(o, Suppressed)]
    deferred = [o for o in outcomes if isinstance(o, Deferred)]
    released = [o.email_id for o in outcomes if isinstance(o, Released)]
    result = Recorded()
    async with pool.acquire() as conn, conn.transaction():
        events: list[tuple[Event, str | None]] = []
        if sent:
            # No `claimed_by` check: the server took the message, so it is sent, whoever
            # holds the claim now (a takeover after a long outage must not send it again).
            rows = await conn.fetch(
                f"UPDATE mailer.emails SET status = 'sent', last_error = NULL, {_FINISHED} "
                "WHERE id = ANY($1::bigint[]) AND status IN ('sending', 'queued') "
                "RETURNING petition_id, signature_id, kind, correlation_id",
                sent,
            )
            for row in rows:
                event = EmailSent(
                    petition_id=row["petition_id"],
                    kind=row["kind"],
                    signature_id=row["signature_id"],
                )
                events.append((event, row["correlation_id"]))
                result.sent.append(row["kind"])
        if failed:
            ids = list(failed)
            rows = await conn.fetch(
                f"UPDATE mailer.emails e SET status = 'failed', last_error = t.error, {_FINISHED} "
                "FROM unnest($1::bigint[], $2::text[]) AS t(id, error) "
                "WHERE e.id = t.id AND e.status = 'sending' AND e.claimed_by = $3 "
                "RETURNING e.id, e.petition_id, e.signature_id, e.kind, e.correlation_id",
                ids,
                [failed[i].error for i in ids],
                claimant,
            )
            for row in rows:
                outcome = failed[row["id"]]
                failure = EmailFailed(
                    petition_id=row["petition_id"],
                    kind=row["kind"],
                    signature_id=row["signature_id"],
                    permanent=outcome.permanent,
                    error=outcome.error,
                )
                events.append((failure, row["correlation_id"]))
                result.failed.append((row["kind"], outcome.permanent))
        if suppressed:
            rows = await conn.fetch(
                f"UPDATE mailer.emails SET status = 'suppressed', {_FINISHED} "
                "WHERE id = ANY($1::bigint[]) AND status = 'sending' AND claimed_by = $2 "
                "RETURNING kind",
                suppressed,
                claimant,
            )
            result.suppressed.extend(row["kind"] for row in rows)
        if deferred:
            status = await conn.execute(
                "UPDATE mailer.emails e SET status = 'queued', claimed_by = NULL, "
                "claimed_until = NULL, last_error = t.error, "
                "next_attempt_at = now() + t.delay * interval '1 second' "
                "FROM unnest($1::bigint[], $2::float8[], $3::text[]) AS t(id, delay, error) "
                "WHERE e.id = t.id AND e.status = 'sending' AND e.claimed_by = $4",
                [o.email_id for o in deferred],
                [o.delay_seconds for o in deferred],
                [o.error for o in deferred],
                claimant,
            )
            result.deferred = _rowcount(status)
        if released:
            # Never started: the claim's attempt is handed back with it.
            status = await conn.execute(
                "UPDATE mailer.emails SET status = 'queued', attempts = attempts - 1, "
                "claimed_by = NULL, claimed_until = NULL "
                "WHERE id = ANY($1::bigint[]) AND status = 'sending' AND claimed_by = $2",
                released,
                claimant,
            )
            result.released = _rowcount(status)
        await enqueue_correlated(conn, SCHEMA, events)
    return result


def _rowcount(command_status: str) -> int:
    return int(command_status.split()[-1])
