"""Recording outcomes: the dispatcher's recorder task and the email metrics.

The recorder writes the outcomes gathered meanwhile in one transaction (one statement
per kind of outcome, events into the outbox: adapters/queue.py `record`). On a
database error it keeps them and tries again, without limit, so an email the server
accepted is marked sent however long the database is away, and is never sent again
because the mark failed. Only once an outcome is written does its email leave
`DispatchState.held`.
"""

from __future__ import annotations

import asyncio
import collections

import asyncpg
import structlog
from prometheus_client import Counter, Gauge

from groundswell_mailer.adapters import queue
from groundswell_mailer.domain.delivery import Failed, Outcome, backoff
from groundswell_mailer.entrypoints.dispatch_state import DispatchState, wait

log = structlog.get_logger()

EMAILS = Counter("groundswell_mailer_emails_total", "Emails by final outcome", ["kind", "outcome"])
OUTCOMES_PENDING = Gauge(
    "groundswell_mailer_outcomes_pending",
    "Outcomes (delivered emails among them) waiting to be written to the database",
)

_RECORD_BATCH = 1000
# How long the recorder lets outcomes gather before writing them: one transaction per
# ~20 ms instead of per few emails (the database and the CPU per email both gain), at
# the price of ~20 ms more in the duplicate window of a crash.
_RECORD_LINGER_SECONDS = 0.02


async def record_outcomes(
    pool: asyncpg.Pool,
    claimant: str,
    state: DispatchState,
    senders: list[asyncio.Task[None]],
) -> None:
    """Write outcomes until the dispatcher stops and every sender is done; then set
    `state.finished`."""
    failures = 0
    while True:
        OUTCOMES_PENDING.set(len(state.outcomes))
        if not state.outcomes:
            if state.stopping and all(sender.done() for sender in senders):
                break
            state.outcomes_waiting.clear()
            await wait(state.outcomes_waiting, 0.5)
            if state.outcomes and not state.stopping:
                await asyncio.sleep(_RECORD_LINGER_SECONDS)
            continue
        batch = state.outcomes[:_RECORD_BATCH]
        try:
            recorded = await queue.record(pool, claimant, batch)
        except Exception as exc:  # kept in memory and written once the database is back
            failures += 1
            delay = backoff(failures)
            log.warning(
                "email_outcomes_not_recorded",
                error=type(exc).__name__,
                pending=len(state.outcomes),
                retry_in=delay,
            )
            await asyncio.sleep(delay)
            continue
        failures = 0
        del state.outcomes[: len(batch)]
        for outcome in batch:
            state.held.pop(outcome.email_id, None)
        state.capacity.set()
        _count(batch, recorded)
    state.finished.set()


def _count(batch: list[Outcome], recorded: queue.Recorded) -> None:
    # Once per kind and outcome, not per email: a label lookup takes a lock.
    tally = collections.Counter(
        [
            *((kind, "sent") for kind in recorded.sent),
            *((kind, "suppressed") for kind in recorded.suppressed),
            *((kind, "failed") for kind, _permanent in recorded.failed),
        ]
    )
    for (kind, result), n in tally.items():
        EMAILS.labels(kind, result).inc(n)
    for outcome in batch:
        if isinstance(outcome, Failed):
            log.warning(
                "email_failed",
                email_id=outcome.email_id,
                permanent=outcome.permanent,
                error=outcome.error,
            )
    log.debug(
        "email_outcomes_recorded",
        sent=len(recorded.sent),
        failed=len(recorded.failed),
        suppressed=len(recorded.suppressed),
        deferred=recorded.deferred,
        released=recorded.released,
        not_ours=len(batch)
        - len(recorded.sent)
        - len(recorded.failed)
        - len(recorded.suppressed)
        - recorded.deferred
        - recorded.released,
    )
