"""Group commit: signatures that arrive together are written together.

A request does its CPU work (validation, tokens, the row) on its own, then hands the
row to the `SignatureWriter` and waits. A few writer tasks each take everything
queued (up to `max_batch`) and write it with ONE statement, whatever the batch size
(`repository.write_signatures`): which petitions are open, the rate counters (one atomic
upsert each), the signatures (one multi-row insert; the unique constraint decides
duplicates) and the outbox events of those inserted. One statement is one transaction
and one round trip: under load a writer's round trips wait behind every request the
event loop has in hand, so each one saved is latency saved, and PostgreSQL parses and
commits once per batch. Each request is answered when its batch has committed, so a 202
still means "durably recorded". The relay is woken after the commit, from outside it
(`wake_relay`: a NOTIFY in the transaction would make the commit wait for every other
NOTIFYing commit in the cluster; groundswell_runtime.outbox.RelayWakeup).

People who had already signed are answered after it: their stored signature is read and
handed over again with a duplicate notice, apart from the writers, which go on.

Batches form by themselves: a writer lets the oldest request wait a few milliseconds
(`gather`) for others to join it, or until `enough` have; under load, requests also
queue while the writers commit and the next batch takes them all. Throughput then grows
with load instead of round trips per request (mySociety's No10 site survived its peaks
the same way). The gather only pays while requests trickle in: when clients wait for
their answers before sending again (a closed loop), waiting it out was pure latency, and
it capped what one process took.

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
import dataclasses
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
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
from groundswell_signing.domain.rate_limits import Hit

log = structlog.get_logger()

BATCH_SIZE = Histogram(
    "groundswell_signing_batch_size",
    "Signing attempts written per transaction",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)


class ShedReason(StrEnum):
    """Which rule refused a signing attempt over capacity: the label of
    `groundswell_signing_shed_total`, so an operator sees why the process refuses, not
    only that it does (docs/operations.md)."""

    IN_FLIGHT = "in_flight"  # the process holds as many signing requests as it may
    LOOP_LAG = "loop_lag"  # its event loop keeps running late
    WRITER_QUEUE = "writer_queue"  # the writer's queue is long, or its oldest attempt old
    OUTBOX_BACKLOG = "outbox_backlog"  # the share let in while the outbox is behind


SHED = Counter(
    "groundswell_signing_shed_total", "Signing attempts refused over capacity", ["reason"]
)
# Each reason's child made once: every reason reads 0 from the start (not absent), and a
# refusal, on the hottest path of a surge, counts without `labels()`'s lookup and lock.
SHED_BY_REASON = {reason: SHED.labels(reason) for reason in ShedReason}

# Retry a batch that lost a deadlock or serialisation race; the database settles it.
_RACE_RETRIES = 3

# A batch's events are made, and its requests answered, this many at a time, with a turn
# of the event loop between: a turn runs everything made ready before it began, so a
# batch of 250 answered at once (~0.1 ms each) holds the loop some 25 ms, and every
# refusal the server's door had to give meanwhile (at its next read) waited behind it.
# Between chunks the loop reads its sockets. Measured in docs/performance.md
# (2026-12-03, 22:10-23:45): at 4,000/s offered, more signatures taken and the 503s'
# p99 lower.
TURN_EVERY = 32


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


# The answers without a wait, made once: one is handed to every request of a batch.
RECORDED = Result("recorded")
DUPLICATE = Result("duplicate")
CLOSED = Result("closed")


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
        wake_relay: Callable[[], None],
        flag_over_limit: bool,
        writers: int = 2,
        max_batch: int = 500,
        max_queue: int = 2_000,
        max_queue_age: float = 0.25,
        gather: float = 0.0,
        enough: int | None = None,
    ) -> None:
        self._pool = pool
        # Called after each commit that wrote outbox rows (outbox.RelayWakeup).
        self._wake_relay = wake_relay
        self._flag_over_limit = flag_over_limit
        self._writers = writers
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._max_queue_age = max_queue_age
        self._gather = gather
        self._enough = min(enough or max_batch, max_batch)
        self._queue: deque[Attempt] = deque()
        # Duplicate notices being written: apart from the writers, which go on meanwhile.
        self._notices: set[asyncio.Task[None]] = set()
        self._ready = asyncio.Event()
        self._gathered = asyncio.Event()  # set when the queue holds `enough`

    def overloaded(self, now: float | None = None) -> bool:
        """The queue is too long, or its oldest request has waited too long."""
        queue = self._queue
        if not queue:
            return False
        waited = (time.monotonic() if now is None else now) - queue[0].queued_at
        return len(queue) >= self._max_queue or waited > self._max_queue_age

    async def submit(self, attempt: Attempt) -> Result:
        if self.overloaded(attempt.queued_at):
            SHED_BY_REASON[ShedReason.WRITER_QUEUE].inc()
            raise Overloaded()
        self._queue.append(attempt)
        self._ready.set()
        if len(self._queue) >= self._enough:
            self._gathered.set()
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
            for notice in list(self._notices):
                notice.cancel()  # its requests are answered 503 (`_answer_duplicates`)

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
            if wait > 0 and len(self._queue) < self._enough:
                self._gathered.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._gathered.wait()
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

    async def _write(self, batch: list[Attempt]) -> None:
        for race in range(_RACE_RETRIES + 1):
            try:
                duplicates = await self._transaction(batch)
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
                if duplicates:
                    notice = asyncio.create_task(self._answer_duplicates(duplicates))
                    self._notices.add(notice)
                    notice.add_done_callback(self._notices.discard)
                return
            for attempt in batch:
                _settle(attempt, error=error)
            return

    async def _transaction(self, batch: list[Attempt]) -> list[Attempt]:
        """Write the batch in one statement and answer every attempt but the duplicates,
        which it returns: nothing was written for them, and they are answered apart."""
        now = batch[-1].now
        events: list[tuple[uuid.UUID, bool, BaseEvent, str | None]] = []
        for n, attempt in enumerate(batch, 1):
            if n % TURN_EVERY == 0:
                await asyncio.sleep(0)  # see TURN_EVERY
            # Each signature's events as it may be stored: as it is, or, flagging, marked
            # fraudulent for being over a limit (no key for it then: nobody is written to).
            row, cid = attempt.row, attempt.correlation_id
            fraudulent = row["initial_status"] == "fraudulent"
            if not fraudulent:
                key = data_key_issued(row["id"], row["data_key"], now)
                events.append((row["id"], False, key, cid))
            events.append((row["id"], fraudulent, _created_event(attempt), cid))
            if self._flag_over_limit and not fraudulent:
                events.append((row["id"], True, _created_event(_flagged(attempt)), cid))
        async with self._pool.acquire() as conn:
            written = await repository.write_signatures(
                conn,
                repository.SignatureBatch(
                    rows=[a.row for a in batch],
                    hits=[a.hits for a in batch],
                    now=now,
                    flag_over_limit=self._flag_over_limit,
                    events=events,
                ),
            )
        if any(outcome.inserted for outcome in written):  # their events are in the outbox
            self._wake_relay()
        duplicates = []
        epoch = now.timestamp()
        for n, (attempt, outcome) in enumerate(zip(batch, written, strict=True), 1):
            if n % TURN_EVERY == 0:
                await asyncio.sleep(0)  # see TURN_EVERY
            if self._flag_over_limit and outcome.over_limit_until is not None:
                _mark_fraudulent(attempt)
            if not outcome.open:
                _settle(attempt, result=CLOSED)
            elif outcome.over_limit_until is not None and not self._flag_over_limit:
                wait = max(1, int(outcome.over_limit_until - epoch + 0.999))
                _settle(attempt, result=Result("rate_limited", wait))
            elif outcome.inserted:
                _settle(attempt, result=RECORDED)
            else:
                duplicates.append(attempt)
        return duplicates

    async def _answer_duplicates(self, duplicates: list[Attempt]) -> None:
        """People who had signed already: their stored signature is handed over again
        (same event ids: a mailer that has them drops them) with a duplicate notice. Two
        statements, no transaction: the first only reads, the second is one insert."""
        now = duplicates[-1].now
        try:
            async with self._pool.acquire() as conn:
                stored = await repository.signatures_by_people(
                    conn, [(a.petition.id, a.row["email_canonical"]) for a in duplicates]
                )
                events: list[tuple[BaseEvent, str | None]] = []
                for attempt in duplicates:
                    existing = stored.get((attempt.petition.id, attempt.row["email_canonical"]))
                    # Gone only if erased since (privacy requests): nothing to hand over.
                    if existing is not None and existing["data_key"] is not None:
                        # Signatures older than sealing were never handed over.
                        key = data_key_issued(existing["id"], existing["data_key"], now)
                        events.append((key, attempt.correlation_id))
                        events.append((_duplicate_event(attempt, existing), attempt.correlation_id))
                await enqueue_correlated(conn, SCHEMA, events, notify=False)
            if events:
                self._wake_relay()
        except asyncio.CancelledError:  # stopping: answered as the queued ones are
            for attempt in duplicates:
                _settle(attempt, error=Unavailable())
            raise
        except TEMPORARY_DATABASE_ERRORS as exc:
            log.warning("duplicate_notice_unavailable", error=type(exc).__name__)
            for attempt in duplicates:
                _settle(attempt, error=Unavailable())
            return
        except Exception as exc:
            log.error("duplicate_notice_failed", error=type(exc).__name__)
            for attempt in duplicates:
                _settle(attempt, error=exc)
            return
        for attempt in duplicates:
            _settle(attempt, result=DUPLICATE)


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


def _flagged(attempt: Attempt) -> Attempt:
    """A copy of the attempt as it is stored when it is over a limit and flagged."""
    flagged = dataclasses.replace(attempt, row=dict(attempt.row))
    _mark_fraudulent(flagged)
    return flagged


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
