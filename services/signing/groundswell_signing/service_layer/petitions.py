"""Use cases for organisers: create, edit, close, reopen, invalidate, export."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any

import asyncpg
from groundswell_runtime.outbox import enqueue

from groundswell_signing.adapters import repository
from groundswell_signing.adapters.repository import SCHEMA
from groundswell_signing.domain.events import signature_invalidated
from groundswell_signing.domain.petitions import Petition, PetitionNotFound


class SlugTaken(ValueError):
    pass


class PetitionCache:
    """Petitions by slug for the signing hot path, each kept for `ttl` seconds.

    A stale entry is harmless: it only decides the quick 404/409 answers, and the batch
    that records a signature checks the petition's committed state again (see
    group_commit). Unknown slugs are not cached, so a new petition is signable at once.
    One lookup per slug at a time: when an entry expires under load, the requests that
    arrive meanwhile wait for that lookup instead of each asking the database.
    """

    def __init__(self, pool: asyncpg.Pool, ttl: float = 1.0) -> None:
        self._pool = pool
        self._ttl = ttl
        self._entries: dict[str, tuple[float, Petition]] = {}
        self._lookups: dict[str, asyncio.Future[Petition]] = {}

    async def get(self, slug: str) -> Petition:
        entry = self._entries.get(slug)
        if entry is not None and time.monotonic() - entry[0] < self._ttl:
            return entry[1]
        lookup = self._lookups.get(slug)
        if lookup is None:
            lookup = asyncio.ensure_future(self._load(slug))
            self._lookups[slug] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(slug, None))
        return await asyncio.shield(lookup)

    async def _load(self, slug: str) -> Petition:
        petition = await get_petition(self._pool, slug)
        if len(self._entries) > 10_000:  # bounded: slugs come from the internet
            self._entries.clear()
        self._entries[slug] = (time.monotonic(), petition)
        return petition

    def forget(self, slug: str) -> None:
        self._entries.pop(slug, None)


async def create_petition(pool: asyncpg.Pool, fields: dict[str, Any]) -> Petition:
    async with pool.acquire() as conn, conn.transaction():
        petition = await repository.insert_petition(conn, {"id": uuid.uuid4(), **fields})
        if petition is None:
            raise SlugTaken(fields["slug"])
        await enqueue(conn, SCHEMA, petition.state_event())
    return petition


async def update_petition(pool: asyncpg.Pool, slug: str, changes: dict[str, Any]) -> Petition:
    async with pool.acquire() as conn, conn.transaction():
        petition = await repository.get_petition(conn, slug, for_update=True)
        if petition is None:
            raise PetitionNotFound(slug)
        if not changes:
            return petition
        petition = await repository.update_petition(conn, petition.id, changes)
        await enqueue(conn, SCHEMA, petition.state_event())
    return petition


async def get_petition(pool: asyncpg.Pool, slug: str) -> Petition:
    async with pool.acquire() as conn:
        petition = await repository.get_petition(conn, slug)
    if petition is None:
        raise PetitionNotFound(slug)
    return petition


async def list_petitions(pool: asyncpg.Pool) -> list[Petition]:
    async with pool.acquire() as conn:
        return await repository.list_petitions(conn)


async def invalidate_signatures(
    pool: asyncpg.Pool,
    slug: str,
    *,
    reason: str,
    ip_network: str | None,
    email_domain: str | None,
    postcode: str | None,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
) -> int:
    async with pool.acquire() as conn, conn.transaction():
        petition = await repository.get_petition(conn, slug)
        if petition is None:
            raise PetitionNotFound(slug)
        ids = await repository.invalidate(
            conn,
            petition.id,
            reason,
            ip_network=ip_network,
            email_domain=email_domain,
            postcode=postcode,
            since=since,
            until=until,
            now=now,
        )
        await enqueue(
            conn, SCHEMA, *(signature_invalidated(i, petition.id, reason, now) for i in ids)
        )
    return len(ids)


async def tally(pool: asyncpg.Pool, slug: str) -> dict[str, int]:
    async with pool.acquire() as conn:
        petition = await repository.get_petition(conn, slug)
        if petition is None:
            raise PetitionNotFound(slug)
        return await repository.tally(conn, petition.id)
