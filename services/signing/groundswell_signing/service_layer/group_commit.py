"""Group commit: signatures that arrive together are written together.

A request does its CPU work (validation, tokens, the row) on its own, then hands the
row to the `SignatureWriter` and waits. A few writer tasks each take everything queued
(up to `max_batch`) and write it in ONE transaction with a handful of statements,
whatever the batch size: the petitions' state with the rate counters (one atomic upsert),
the signatures (one multi-row insert; the unique constraint decides duplicates), the
duplicates' stored rows, and the outbox events (one insert, one NOTIFY). Each request is
answered when its batch has committed, so a 202 still means "durably recorded".

Batches form by themselves: at low load a writer is idle and a request goes alone at
once; under load, requests queue while the writers commit and the next batch takes
them all. Throughput then grows with load instead of round trips per request
(mySociety's No10 site survived its peaks the same way).

Over capacity the queue would grow without end and every answer would come late; so
`submit` refuses at once (`Overloaded`, answered 503 with Retry-After) when the queue is
long or its oldest request has waited too long. Nothing accepted is ever dropped: a
refused request was never queued, and a queued one is always written or answered with
an error.

A batch that fails for a reason that is not the database being away (a row PostgreSQL
refuses) is written again one request at a time, so one bad row fails only itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import asyncpg
import structlog
from groundswell_contracts.events import BaseEvent, Event
from groundswell_runtime.db import TEMPORARY_DATABASE_ERRORS
from groundswell_runtime.outbox import enqueue_correlated
from prometheus_client import Counter, Histogram

from groundswell_signing.adapters import repository
from groundswell_signing.adapters.repository import SCHEMA
from groundswell_signing.domain.events import (
    data_key_issued,
    duplicate_attempted,
    signature_created,
)
from groundswell_signing.domain.petitions import Petition
from groundswell_signing.domain.rate_limits import Hit, admit

log = structlog.get_logger()

BATCH_SIZE = Histogram(
    "groundswell_signing_batch_size",
    "Signing attempts written per transaction",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
SHED = Counter("groundswell_signing_shed_total", "Signing attempts refused over capacity")

# Retry a batch that lost a deadlock or serialisation race; the database settles it.
_RACE_RETRIES = 3
_PRUNE_EVERY = 60.0


class Overloaded(Exception):
    """Too much waiting already: refused before anything was recorded."""

    retry_after = 1


class Unavailable(Exception):
    """The database is away; nothing was recorded."""

    retry_after = 2


Verdict = Literal["recorded", "duplicate", "rate_limited", "closed"]


@dataclass(frozen=True)
class Result:
    verdict: Verdict
    retry_after: int | None = None


@dataclass
class Attempt:
    """One request's signature, ready to store."""

    row: dict[str, Any]
    petition: Petition
    hits: list[Hit]
    confirmation_token: str | None
    withdraw_token: str
    correlation_id: str | None
    now: datetime
    future: asyncio.Future[Result] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    queued_at: float = field(default_factory=time.monotonic)


class SignatureWriter:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        flag_over_limit: bool,
        writers: int = 2,
        max_batch: int = 500,
        max_queue: int = 2_000,
        max_queue_age: float = 0.25,
        gather: float = 0.0,
    ) -> None:
        self._pool = pool
        self._flag_over_limit = flag_over_limit
        self._writers = writers
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._max_queue_age = max_queue_age
        self._gather = gather
        self._queue: deque[Attempt] = deque()
        self._ready = asyncio.Event()
        self._last_prune = 0.0

    def overloaded(self, now: float | None = None) -> bool:
        """The queue is too long, or its oldest request has waited too long."""
        queue = self._queue
        if not queue:
            return False
        waited = (time.monotonic() if now is None else now) - queue[0].queued_at
        return len(queue) >= self._max_queue or waited > self._max_queue_age

    async def submit(self, attempt: Attempt) -> Result:
        if self.overloaded(attempt.queued_at):
            SHED.inc()
            raise Overloaded()
        self._queue.append(attempt)
        self._ready.set()
        return await attempt.future

    async def run(self) -> None:
        """The writer tasks; cancel to stop. Requests still queued are refused."""
        try:
            async with asyncio.TaskGroup() as group:
                for n in range(self._writers):
                    group.create_task(self._write_forever(), name=f"signature-writer-{n}")
        finally:
            while self._queue:
                _settle(self._queue.popleft(), error=Unavailable())

    async def _write_forever(self) -> None:
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            # Let a small batch gather for a few milliseconds: each transaction costs
            # both processes about the same whatever its size (round trips, commit, the
            # relay's wake-up), so at moderate load tiny batches spend most of the CPU.
            wait = self._gather - (time.monotonic() - self._queue[0].queued_at)
            if wait > 0 and len(self._queue) < self._max_batch:
                await asyncio.sleep(wait)
                continue  # another writer may have taken them meanwhile
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                # Stopping mid-batch: answer its requests instead of leaving them hanging.
                # A retry of one whose commit did land is a duplicate, and answered as one.
                for attempt in batch:
                    _settle(attempt, error=Unavailable())
                raise
            if time.monotonic() - self._last_prune > _PRUNE_EVERY:
                self._last_prune = time.monotonic()
                with contextlib.suppress(*TEMPORARY_DATABASE_ERRORS):
                    async with self._pool.acquire() as conn:
                        await repository.prune_rate_counters(conn, int(time.time()))

    async def _write(self, batch: list[Attempt]) -> None:
        for race in range(_RACE_RETRIES + 1):
            try:
                results = await self._transaction(batch)
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                if race < _RACE_RETRIES:
                    continue
                error: Exception = Unavailable()
            except TEMPORARY_DATABASE_ERRORS as exc:
                log.warning(
                    "signature_batch_unavailable", error=type(exc).__name__, size=len(batch)
                )
                error = Unavailable()
            except Exception as exc:
                if len(batch) > 1:
                    for attempt in batch:  # one bad row must not fail the others
                        await self._write([attempt])
                    return
                log.error("signature_rejected_by_database", error=type(exc).__name__)
                error = exc
            else:
                BATCH_SIZE.observe(len(batch))
                for attempt, result in zip(batch, results, strict=True):
                    _settle(attempt, result=result)
                return
            for attempt in batch:
                _settle(attempt, error=error)
            return

    async def _transaction(self, batch: list[Attempt]) -> list[Result]:
        now = batch[-1].now
        epoch = now.timestamp()
        results: dict[int, Result] = {}
        async with self._pool.acquire() as conn, conn.transaction():
            # Whether each petition is still open and the rate counters, in one round
            # trip: only the hits of open petitions' attempts are added (in SQL), which
            # are exactly the `live` ones `admit` hands the ordinals to.
            open_ids, totals = await repository.open_and_count(
                conn,
                list({a.petition.id for a in batch}),
                now,
                [
                    (a.petition.id, hit.key, hit.window_start, hit.window_end)
                    for a in batch
                    for hit in a.hits
                ],
            )
            live = []
            for i, attempt in enumerate(batch):
                if attempt.petition.id in open_ids:
                    live.append(i)
                else:
                    results[i] = Result("closed")

            hits = [batch[i].hits for i in live]
            to_store = []
            for i, wait in zip(live, admit(hits, totals, epoch), strict=True):
                if wait is None:
                    to_store.append(i)
                elif self._flag_over_limit:
                    _mark_fraudulent(batch[i])
                    to_store.append(i)
                else:
                    results[i] = Result("rate_limited", wait)

            inserted = await repository.insert_signatures(conn, [batch[i].row for i in to_store])
            duplicates = [i for i in to_store if batch[i].row["id"] not in inserted]
            stored = await repository.signatures_by_people(
                conn,
                [(batch[i].petition.id, batch[i].row["email_canonical"]) for i in duplicates],
            )
            events: list[tuple[BaseEvent, str | None]] = []
            for i in to_store:
                attempt = batch[i]
                cid = attempt.correlation_id
                if i in duplicates:
                    existing = stored[(attempt.petition.id, attempt.row["email_canonical"])]
                    results[i] = Result("duplicate")
                    if existing["data_key"] is not None:
                        # Handed over again (same event id: a mailer that has it drops
                        # it): signatures older than sealing were never handed over.
                        key = data_key_issued(existing["id"], existing["data_key"], now)
                        events.append((key, cid))
                        events.append((_duplicate_event(attempt, existing), cid))
                else:
                    if attempt.row["initial_status"] != "fraudulent":
                        key = data_key_issued(attempt.row["id"], attempt.row["data_key"], now)
                        events.append((key, cid))
                    events.append((_created_event(attempt), cid))
                    results[i] = Result("recorded")
            await enqueue_correlated(conn, SCHEMA, events)
        return [results[i] for i in range(len(batch))]


def _settle(
    attempt: Attempt, *, result: Result | None = None, error: BaseException | None = None
) -> None:
    if attempt.future.done():  # the request went away (client disconnected)
        return
    if error is not None:
        attempt.future.set_exception(error)
    else:
        assert result is not None
        attempt.future.set_result(result)


def _mark_fraudulent(attempt: Attempt) -> None:
    attempt.row.update(
        initial_status="fraudulent", confirmation_token_hash=None, confirmation_expires_at=None
    )
    attempt.confirmation_token = None


def _created_event(attempt: Attempt) -> Event:
    return signature_created(
        attempt.row,
        petition_slug=attempt.petition.slug,
        petition_title=attempt.petition.title,
        confirmation_token=attempt.confirmation_token,
        withdraw_token=attempt.withdraw_token,
    )


def _duplicate_event(attempt: Attempt, existing: asyncpg.Record) -> Event:
    return duplicate_attempted(
        petition_id=attempt.petition.id,
        petition_slug=attempt.petition.slug,
        petition_title=attempt.petition.title,
        existing=existing,
        email=attempt.row["email"],
        name=attempt.row["name"],
    )
