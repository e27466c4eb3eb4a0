"""The send loop: claim due emails in batches, send them over persistent connections,
record the outcomes in batches. This module wires the tasks of one `Dispatcher.run`;
each responsibility has its own module:

- dispatch_claims.py: the claimer (up to `claim_batch` due emails per statement into a
  local queue, holding at most twice that many; woken by NOTIFY, by free room, or every
  poll) and lease renewal (every `lease_renew_seconds`, one statement extends the lease
  of everything this dispatcher holds; a claim whose lease lapses, because its process
  died, is taken over by another dispatcher within `send_lease_seconds`);
- dispatch_sending.py: N senders, each with one persistent SMTP connection, taking the
  next email from the queue as soon as it is done with the last (no lockstep rounds);
- dispatch_outcomes.py: the recorder, which writes the outcomes gathered meanwhile in
  one transaction and, on a database error, keeps them and tries again without limit,
  so an email the server accepted is marked sent however long the database is away,
  and is never sent again because the mark failed;
- dispatch_state.py: what the dispatcher holds, shared by those tasks;
- and here, the listener: LISTEN for new emails on its own connection, re-established
  after the database restarts (polling covers any NOTIFY missed meanwhile).

Duplicates: an email can reach the server twice only if this process dies (or loses
its claim, see `domain.delivery.Lease`) after the server's "250" and before the mark
commits; the marks wait in memory, not on the database, so that is at most the
conversations under way plus the marks not yet written when it died. One rare
duplicate is preferred to a confirmation that never arrives.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

import asyncpg
import structlog
from groundswell_runtime.surge_yield import MIN_DUE_SECONDS, SurgeYield

from groundswell_mailer.adapters import repository as repo
from groundswell_mailer.adapters.notifications import Listener
from groundswell_mailer.adapters.smtp import SmtpConnection
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.domain.delivery import Released
from groundswell_mailer.entrypoints.dispatch_claims import Claimer, renew_leases
from groundswell_mailer.entrypoints.dispatch_outcomes import record_outcomes
from groundswell_mailer.entrypoints.dispatch_sending import Sender
from groundswell_mailer.entrypoints.dispatch_state import DispatchState

log = structlog.get_logger()


class Dispatcher:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: MailerSettings,
        *,
        claimant: str | None = None,
        surge: SurgeYield | None = None,
    ) -> None:
        self._pool = pool
        self._settings = settings
        # Names this dispatcher's claims; a new one (a restart) takes over the old ones.
        self.claimant = claimant or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._lease_interval = timedelta(seconds=settings.send_lease_seconds)
        self._state = DispatchState(settings)
        self._claimer = Claimer(
            pool, settings, self.claimant, self._state, self._lease_interval, surge
        )
        self._sender = Sender(pool, settings, self._state)

    def request_stop(self) -> None:
        """Finish the conversations under way and record them; hand back the rest."""
        state = self._state
        if state.stopping:
            return
        state.stopping = True
        while not state.queue.empty():
            email = state.queue.get_nowait()
            if email is not None and email.id in state.held:
                state.add_outcome(Released(email.id))
        for _ in range(self._settings.send_concurrency):
            state.queue.put_nowait(None)
        state.wake_all()

    def behind(self) -> bool:
        """The latest claim took emails due for `MIN_DUE_SECONDS` or more (surge_yield)."""
        return self._state.due_for >= MIN_DUE_SECONDS

    @property
    def unrecorded(self) -> int:
        """Emails in conversation or with an outcome not yet written: what a crash now
        could send twice (the duplicate window)."""
        return len(self._state.in_flight) + len(self._state.outcomes)

    async def run(self) -> None:
        state = self._state
        state.finished.clear()
        # A previous run that failed left these mid-conversation: they may or may not
        # have reached the server. Sent again rather than lost (the duplicate window).
        for email in state.in_flight.values():
            if state.stopping:
                state.add_outcome(Released(email.id))
            else:
                state.queue.put_nowait(email)
        state.in_flight.clear()
        connections = [
            SmtpConnection(self._settings) for _ in range(self._settings.send_concurrency)
        ]
        pool, claimant = self._pool, self.claimant
        try:
            async with asyncio.TaskGroup() as tasks:
                renewal = renew_leases(
                    pool,
                    claimant,
                    state,
                    self._lease_interval,
                    self._settings.lease_renew_seconds,
                )
                tasks.create_task(self._logged("lease", renewal))
                listener = Listener(pool, repo.EMAILS_CHANNEL, state.notified)
                tasks.create_task(self._logged("listener", listener.run(state.finished)))
                tasks.create_task(self._logged("claimer", self._claimer.run()))
                senders = [
                    tasks.create_task(self._logged("sender", self._sender.run(c)))
                    for c in connections
                ]
                recorder = record_outcomes(pool, claimant, state, senders)
                tasks.create_task(self._logged("recorder", recorder))
        finally:
            for connection in connections:
                await connection.close()

    @staticmethod
    async def _logged(name: str, body: Coroutine[Any, Any, None]) -> None:
        """Say which task failed: the TaskGroup then stops the others and `run` fails
        (`supervise` starts it again; what this dispatcher holds is kept)."""
        try:
            await body
        except Exception:
            log.exception("dispatcher_task_failed", task=name)
            raise
