"""Rebuild every topic this service owns from PostgreSQL, e.g. after losing a memory-only broker.

Events go through the outbox like any other, with the same stable ids they had the
first time, so consumers that still remember them drop them, and empty consumers
(a fresh counter) rebuild exact state.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from groundswell_contracts.events import BaseEvent
from groundswell_runtime.outbox import enqueue

from groundswell_signing.adapters import repository
from groundswell_signing.adapters.repository import SCHEMA
from groundswell_signing.domain.events import (
    data_key_issued,
    signature_confirmed,
    signature_created,
    signature_erased,
    signature_invalidated,
    signature_withdrawn,
)
from groundswell_signing.domain.tokens import hash_token, new_token


def awaits_confirmation(row: Any, now: datetime) -> bool:
    return bool(
        row["initial_status"] == "pending"
        and row["confirmed_at"] is None
        and row["withdrawn_at"] is None
        and row["invalidated_at"] is None
        and row["confirmation_expires_at"] is not None
        and row["confirmation_expires_at"] > now
    )


def history_of(row: Any, confirmation_token: str | None = None) -> list[BaseEvent]:
    """The events one signature row implies, in the order they happened: its data key
    first (the mailer needs it to open the contact), none once erased."""
    events: list[BaseEvent] = []
    if row["data_key"] is not None and row["initial_status"] != "fraudulent":
        events.append(data_key_issued(row["id"], row["data_key"], row["created_at"]))
    events.append(
        signature_created(
            row,
            petition_slug=row["slug"],
            petition_title=row["title"],
            confirmation_token=confirmation_token,
            withdraw_token=None,
        )
    )
    later: list[tuple[Any, BaseEvent]] = []
    if row["confirmed_at"] is not None:
        later.append(
            (
                row["confirmed_at"],
                signature_confirmed(row["id"], row["petition_id"], row["confirmed_at"]),
            )
        )
    if row["withdrawn_at"] is not None:
        later.append(
            (
                row["withdrawn_at"],
                signature_withdrawn(row["id"], row["petition_id"], row["withdrawn_at"]),
            )
        )
    if row["invalidated_at"] is not None:
        later.append(
            (
                row["invalidated_at"],
                signature_invalidated(
                    row["id"],
                    row["petition_id"],
                    row["invalidation_reason"] or "",
                    row["invalidated_at"],
                ),
            )
        )
    if row["erased_at"] is not None:
        # Erasure that withdrew the signature did so at the same instant.
        counted = row["withdrawn_at"] != row["erased_at"]
        later.append(
            (
                row["erased_at"],
                signature_erased(row["id"], row["petition_id"], counted, row["erased_at"]),
            )
        )
    events.extend(event for _, event in sorted(later, key=lambda pair: pair[0]))
    return events


async def replay_all(pool: asyncpg.Pool) -> int:
    """Queue every petition's state and every signature's history; returns the event count."""
    total = 0
    async with pool.acquire() as conn:
        petitions = await repository.list_petitions(conn)
    now = datetime.now(UTC)
    for petition in petitions:
        async with pool.acquire() as conn, conn.transaction():
            events: list[BaseEvent] = [petition.state_event()]
            replay_tokens: list[tuple[uuid.UUID, bytes]] = []
            for row in await repository.history_rows(conn, petition.id):
                # Only hashes are stored, so the first confirmation token cannot be sent
                # again. A signer still waiting to confirm gets a second valid token: if
                # the mailer never saw the first event (the broker was lost before it
                # read it), it sends the confirmation with this one; if it did, it drops
                # the replay by event id and the first email's link keeps working.
                token = new_token() if awaits_confirmation(row, now) else None
                if token is not None:
                    replay_tokens.append((row["id"], hash_token(token)))
                events.extend(history_of(row, token))
            await repository.set_replay_tokens(conn, replay_tokens)
            await enqueue(conn, SCHEMA, *events)
            total += len(events)
    return total
