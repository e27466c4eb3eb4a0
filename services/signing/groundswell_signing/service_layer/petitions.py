"""Use cases for organisers: create, edit, close, reopen, invalidate, export."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Generic, TypeVar

import asyncpg
from groundswell_runtime.outbox import enqueue

from groundswell_signing.adapters import repository
from groundswell_signing.adapters.repository import SCHEMA
from groundswell_signing.domain.events import signature_invalidated
from groundswell_signing.domain.petitions import Petition, PetitionNotFound


class SlugTaken(ValueError):
    pass


K = TypeVar("K")
V = TypeVar("V")


class TimedCache(Generic[K, V]):
    """Values by key, each kept for `ttl` seconds, one lookup per key at a time: when an
    entry expires under load, the requests that arrive meanwhile wait for that lookup
    instead of each asking the database. Bounded: keys come from the internet."""

    def __init__(self, load: Callable[[K], Awaitable[V]], ttl: float) -> None:
        self._load_value = load
        self._ttl = ttl
        self._entries: dict[K, tuple[float, V]] = {}
        self._lookups: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K) -> V:
        entry = self._entries.get(key)
        if entry is not None and time.monotonic() - entry[0] < self._ttl:
            return entry[1]
        lookup = self._lookups.get(key)
        if lookup is None:
            lookup = asyncio.ensure_future(self._load(key))
            self._lookups[key] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(key, None))
        return await asyncio.shield(lookup)

    async def _load(self, key: K) -> V:
        value = await self._load_value(key)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key] = (time.monotonic(), value)
        return value

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)


class PetitionCache(TimedCache[str, Petition]):
    """Petitions by slug for the signing hot path, each kept for `ttl` seconds.

    A stale entry is harmless: it only decides the quick 404/409 answers, and the batch
    that records a signature checks the petition's committed state again (see
    group_commit). Unknown slugs are not cached (a lookup that raises stores nothing),
    so a new petition is signable at once.
    """

    def __init__(self, pool: asyncpg.Pool, ttl: float = 1.0) -> None:
        super().__init__(lambda slug: get_petition(pool, slug), ttl)


class CountCache(TimedCache[uuid.UUID, dict[str, int]]):
    """The count a petition page shows before its live count connects: signing's own
    committed tally, at most `ttl` seconds old, one query per petition at a time however
    many pages are served meanwhile (a viral petition's page is its hottest URL)."""

    def __init__(self, pool: asyncpg.Pool, ttl: float = 5.0) -> None:
        async def load(petition_id: uuid.UUID) -> dict[str, int]:
            async with pool.acquire() as conn:
                return await repository.tally(conn, petition_id)

        super().__init__(load, ttl)


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
