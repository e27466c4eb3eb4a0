"""Claims and their leases: the dispatcher's claimer and lease renewal tasks.

- claimer: claims up to `claim_batch` due emails per statement into the local queue,
  holding at most twice that many; woken by NOTIFY, by free room, or every poll; no
  claims while the service yields to a surge (groundswell_runtime.surge_yield). Once
  every `_PURGE_EVERY_SECONDS`, when idle, it also forgets held thank-yous of
  signatures never confirmed (retention).
- lease renewal: every `lease_renew_seconds`, one statement extends the lease of
  everything this dispatcher holds; a claim whose lease lapses (its process died) is
  taken over by another dispatcher within `send_lease_seconds`. Senders start no
  conversation while the lease may have lapsed (`domain.delivery.Lease`).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import structlog
from groundswell_runtime.surge_yield import SurgeYield

from groundswell_mailer.adapters import queue
from groundswell_mailer.adapters import repository as repo
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.domain.delivery import backoff
from groundswell_mailer.entrypoints.dispatch_state import DispatchState, wait

log = structlog.get_logger()

_PURGE_EVERY_SECONDS = 600.0
# In a surge every recorded signature NOTIFYs; after a claim that emptied the due set,
# wait this long after a NOTIFY so that the next claim takes many emails, not one.
_CLAIM_LINGER_SECONDS = 0.05


class Claimer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: MailerSettings,
        claimant: str,
        state: DispatchState,
        lease: timedelta,
        surge: SurgeYield | None = None,
    ) -> None:
        self._pool = pool
        self._surge = surge
        self._settings = settings
        self._claimant = claimant
        self._state = state
        self._lease = lease
        self._last_purge = 0.0

    async def run(self) -> None:
        state = self._state
        await state.renewed.wait()
        poll = self._settings.poll_interval_seconds
        failures = 0
        while not state.stopping:
            if not state.has_capacity():
                state.capacity.clear()
                await wait(state.capacity, poll)
                continue
            if self._surge is not None and not await self._surge.wait_working(poll):
                continue  # yielding to a surge: what is held is still sent
            limit = min(state.claim_batch, state.max_held - len(state.held))
            state.notified.clear()
            try:
                claimed = await queue.claim_due(self._pool, self._claimant, limit, self._lease)
            except Exception as exc:  # the database is away: it is retried, nothing is lost
                failures += 1
                log.warning("email_claim_failed", error=type(exc).__name__)
                await asyncio.sleep(backoff(failures))
                continue
            failures = 0
            state.due_for = max((email.due_for for email in claimed), default=0.0)
            for email in claimed:
                if email.id not in state.held:
                    state.held[email.id] = email
                    state.queue.put_nowait(email)
            if len(claimed) < limit:
                await self._maybe_purge()
                await wait(state.notified, poll)
                if state.notified.is_set() and not state.stopping:
                    await asyncio.sleep(_CLAIM_LINGER_SECONDS)

    async def _maybe_purge(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_purge < _PURGE_EVERY_SECONDS:
            return
        self._last_purge = loop.time()
        try:
            purged = await repo.purge_unconfirmed(
                self._pool, timedelta(days=self._settings.unconfirmed_retention_days)
            )
        except Exception as exc:  # tried again at the next purge
            log.warning("unconfirmed_purge_failed", error=type(exc).__name__)
            return
        if purged:
            log.info("unconfirmed_emails_purged", count=purged)


async def renew_leases(
    pool: asyncpg.Pool,
    claimant: str,
    state: DispatchState,
    lease: timedelta,
    every_seconds: float,
) -> None:
    """Renew until the dispatcher's run is over; forget claims another one took over."""
    loop = asyncio.get_running_loop()
    while not state.finished.is_set():
        started = loop.time()
        held_before = set(state.held)
        try:
            kept = await queue.renew_leases(pool, claimant, lease)
        except Exception as exc:  # renewed at the next beat; senders pause meanwhile
            log.warning("lease_renewal_failed", error=type(exc).__name__)
        else:
            state.lease.renewed(started)
            state.renewed.set()
            lost = [i for i in held_before - kept if i in state.held]
            for email_id in lost:
                # Recorded meanwhile (harmless), or taken over after a lapse: the
                # sender skips it if it has not started.
                if not any(o.email_id == email_id for o in state.outcomes):
                    state.held.pop(email_id, None)
        elapsed = loop.time() - started
        await wait(state.finished, max(every_seconds - elapsed, 0.1))
