"""Rebuild every topic this service owns from PostgreSQL, e.g. after losing a memory-only broker.

Events go through the outbox like any other, with the same stable ids they had the
first time, so consumers that still remember them drop them, and empty consumers
(a fresh counter) rebuild exact state.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from groundswell_contracts.events import Event
from groundswell_runtime.outbox import enqueue

from groundswell_signing.adapters import repository
from groundswell_signing.adapters.repository import SCHEMA
from groundswell_signing.domain.events import (
    signature_confirmed,
    signature_created,
    signature_invalidated,
    signature_withdrawn,
)


def history_of(row: Any) -> list[Event]:
    """The events one signature row implies, in the order they happened."""
    events: list[Event] = [
        signature_created(
            row,
            petition_slug=row["slug"],
            petition_title=row["title"],
            confirmation_token=None,
            withdraw_token=None,
        )
    ]
    later: list[tuple[Any, Event]] = []
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
    events.extend(event for _, event in sorted(later, key=lambda pair: pair[0]))
    return events


async def replay_all(pool: asyncpg.Pool) -> int:
    """Queue every petition's state and every signature's history; returns the event count."""
    total = 0
    async with pool.acquire() as conn:
        petitions = await repository.list_petitions(conn)
    for petition in petitions:
        async with pool.acquire() as conn, conn.transaction():
            events: list[Event] = [petition.state_event()]
            for row in await repository.history_rows(conn, petition.id):
                events.extend(history_of(row))
            await enqueue(conn, SCHEMA, *events)
            total += len(events)
    return total
