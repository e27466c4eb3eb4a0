"""The send loop: claim due emails in batches, send them over persistent connections,
record the outcomes in batches.

Tasks of one `Dispatcher.run`:

- claimer: claims up to `claim_batch` due emails per statement into a local queue,
  holding at most twice that many; woken by NOTIFY, by free room, or every poll;
- N senders: each owns one persistent SMTP connection and takes the next email from
  the queue as soon as it is done with the last (no lockstep rounds);
- recorder: writes the outcomes gathered meanwhile in one transaction (one statement
  per kind of outcome, events into the outbox); on a database error it keeps them and
  tries again, without limit, so an email the server accepted is marked sent however
  long the database is away, and is never sent again because the mark failed;
- lease renewal: every `lease_renew_seconds`, one statement extends the lease of
  everything this dispatcher holds; a claim whose lease lapses (its process died) is
  taken over by another dispatcher within `send_lease_seconds`;
- listener: LISTEN for new emails on its own connection, re-established after the
  database restarts (polling covers any NOTIFY missed meanwhile).

Duplicates: an email can reach the server twice only if this process dies (or loses
its claim, see `domain.delivery.Lease`) after the server's "250" and before the mark
commits; the marks wait in memory, not on the database, so that is at most the
conversations under way plus the marks not yet written when it died. One rare
duplicate is preferred to a confirmation that never arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import socket
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

import asyncpg
import structlog
from prometheus_client import Counter, Gauge

from groundswell_mailer.adapters import queue
from groundswell_mailer.adapters import repository as repo
from groundswell_mailer.adapters.notifications import Listener
from groundswell_mailer.adapters.smtp import SmtpConnection
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.domain.delivery import (
    Deferred,
    Failed,
    Lease,
    Outcome,
    Released,
    Sent,
    Suppressed,
    backoff,
    outcome_of_failure,
    should_suppress,
    unsubscribe_applies,
)
from groundswell_mailer.domain.messages import Links, compose
from groundswell_mailer.domain.mime import MessageWriter, utf8_mailbox
from groundswell_mailer.entrypoints.mailings import CAMPAIGN_KINDS, CampaignMail

log = structlog.get_logger()

EMAILS = Counter("groundswell_mailer_emails_total", "Emails by final outcome", ["kind", "outcome"])
SEND_ATTEMPTS = Counter(
    "groundswell_mailer_send_attempts_total", "SMTP attempts by result", ["kind", "result"]
)
OUTCOMES_PENDING = Gauge(
    "groundswell_mailer_outcomes_pending",
    "Outcomes (delivered emails among them) waiting to be written to the database",
)

_PURGE_EVERY_SECONDS = 600.0
_RECORD_BATCH = 1000
# In a surge every recorded signature NOTIFYs; after a claim that emptied the due set,
# wait this long after a NOTIFY so that the next claim takes many emails, not one.
_CLAIM_LINGER_SECONDS = 0.05
# How long the recorder lets outcomes gather before writing them: one transaction per
# ~20 ms instead of per few emails (the database and the CPU per email both gain), at
# the price of ~20 ms more in the duplicate window of a crash.
_RECORD_LINGER_SECONDS = 0.02


async def _wait(event: asyncio.Event, seconds: float) -> None:
    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
    # coincides with its timeout.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


class Dispatcher:
    def __init__(
        self, pool: asyncpg.Pool, settings: MailerSettings, *, claimant: str | None = None
    ) -> None:
        self._pool = pool
        self._settings = settings
        # Names this dispatcher's claims; a new one (a restart) takes over the old ones.
        self.claimant = claimant or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._links = Links(
            public_base_url=settings.public_base_url,
            share_base_url=settings.share_base_url,
            mailer_public_url=settings.public_url,
        )
        # The organisation and link lifetime every email states, read once.
        self._campaign = settings.campaign()
        # Mailings and milestone notes (entrypoints/mailings.py): same queue, own texts.
        self._campaign_mail = CampaignMail(pool, settings)
        self._writer = MessageWriter(settings.mail_from)
        self._lease = Lease(settings.send_lease_seconds)
        self._lease_interval = timedelta(seconds=settings.send_lease_seconds)
        self._max_held = 2 * settings.claim_batch
        # Claimed and not yet recorded: queued, in flight, or with an outcome pending.
        self._held: dict[int, queue.ClaimedEmail] = {}
        self._in_flight: dict[int, queue.ClaimedEmail] = {}
        self._queue: asyncio.Queue[queue.ClaimedEmail | None] = asyncio.Queue()
        self._outcomes: list[Outcome] = []
        self._outcomes_waiting = asyncio.Event()
        self._notified = asyncio.Event()  # NOTIFY: new emails may be due
        self._capacity = asyncio.Event()  # room to claim more
        self._renewed = asyncio.Event()  # the first lease renewal succeeded
        self._finished = asyncio.Event()
        self._stopping = False
        self._last_purge = 0.0

    def request_stop(self) -> None:
        """Finish the conversations under way and record them; hand back the rest."""
        if self._stopping:
            return
        self._stopping = True
        while not self._queue.empty():
            email = self._queue.get_nowait()
            if email is not None and email.id in self._held:
                self._add_outcome(Released(email.id))
        for _ in range(self._settings.send_concurrency):
            self._queue.put_nowait(None)
        for event in (self._notified, self._capacity, self._outcomes_waiting, self._renewed):
            event.set()

    @property
    def unrecorded(self) -> int:
        """Emails in conversation or with an outcome not yet written: what a crash now
        could send twice (the duplicate window)."""
        return len(self._in_flight) + len(self._outcomes)

    def _add_outcome(self, outcome: Outcome) -> None:
        self._outcomes.append(outcome)
        self._outcomes_waiting.set()

    async def run(self) -> None:
        self._finished.clear()
        # A previous run that failed left these mid-conversation: they may or may not
        # have reached the server. Sent again rather than lost (the duplicate window).
        for email in self._in_flight.values():
            if self._stopping:
                self._add_outcome(Released(email.id))
            else:
                self._queue.put_nowait(email)
        self._in_flight.clear()
        connections = [
            SmtpConnection(self._settings) for _ in range(self._settings.send_concurrency)
        ]
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._logged("lease", self._renew_leases()))
                listener = Listener(self._pool, repo.EMAILS_CHANNEL, self._notified)
                tasks.create_task(self._logged("listener", listener.run(self._finished)))
                tasks.create_task(self._logged("claimer", self._claim()))
                senders = [
                    tasks.create_task(self._logged("sender", self._send(c))) for c in connections
                ]
                tasks.create_task(self._logged("recorder", self._record(senders)))
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

    # --- claiming -------------------------------------------------------------

    def _has_capacity(self) -> bool:
        return self._queue.qsize() < self._settings.claim_batch and len(self._held) < self._max_held

    async def _claim(self) -> None:
        await self._renewed.wait()
        poll = self._settings.poll_interval_seconds
        failures = 0
        while not self._stopping:
            if not self._has_capacity():
                self._capacity.clear()
                await _wait(self._capacity, poll)
                continue
            limit = min(self._settings.claim_batch, self._max_held - len(self._held))
            self._notified.clear()
            try:
                claimed = await queue.claim_due(
                    self._pool, self.claimant, limit, self._lease_interval
                )
            except Exception as exc:  # the database is away: it is retried, nothing is lost
                failures += 1
                log.warning("email_claim_failed", error=type(exc).__name__)
                await asyncio.sleep(backoff(failures))
                continue
            failures = 0
            for email in claimed:
                if email.id not in self._held:
                    self._held[email.id] = email
                    self._queue.put_nowait(email)
            if len(claimed) < limit:
                await self._maybe_purge()
                await _wait(self._notified, poll)
                if self._notified.is_set() and not self._stopping:
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

    # --- sending --------------------------------------------------------------

    async def _send(self, connection: SmtpConnection) -> None:
        loop = asyncio.get_running_loop()
        trouble = 0  # connection failures in a row
        while True:
            email = await self._queue.get()
            if email is None:
                return
            if self._queue.qsize() < self._settings.claim_batch:
                self._capacity.set()
            # Start no conversation on a lease that may have lapsed (database away).
            # Rare (renewals failing for seconds), so a short poll rather than an event.
            while not self._lease.may_start(loop.time()) and not self._stopping:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            if email.id not in self._held:
                continue  # another dispatcher took the claim over
            if self._stopping and not self._lease.may_start(loop.time()):
                self._add_outcome(Released(email.id))
                continue
            self._in_flight[email.id] = email
            outcome, connection_trouble = await self._deliver(connection, email)
            del self._in_flight[email.id]
            self._add_outcome(outcome)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # aiosmtplib awaits replies with asyncio.wait_for, which on Python 3.11
                # can swallow a cancellation arriving with the reply; honour it here,
                # once the outcome is safe.
                raise asyncio.CancelledError
            if connection_trouble:
                # The server is unreachable: pause instead of burning every queued
                # email's attempts on it.
                trouble += 1
                await asyncio.sleep(backoff(trouble, first=0.5, cap=10.0))
            else:
                trouble = 0

    async def _deliver(
        self, connection: SmtpConnection, email: queue.ClaimedEmail
    ) -> tuple[Outcome, bool]:
        # A milestone note goes to the organisation's own address: no unsubscribe applies.
        if email.kind != "milestone" and should_suppress(email.kind, email.unsubscribed):
            return Suppressed(email.id), False
        try:
            if email.kind in CAMPAIGN_KINDS:
                try:
                    composed = await self._campaign_mail.compose(email)
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                    # The mailing could not be loaded (database away): try again later.
                    return Deferred(email.id, 5.0, f"not composed: {type(exc).__name__}"), False
            else:
                token = email.unsubscribe_token if unsubscribe_applies(email.kind) else None
                composed = compose(
                    email.kind, email.content, self._links, token, campaign=self._campaign
                )
            message = self._writer.write(
                composed, recipient=email.recipient, message_id=email.message_id
            )
        except ValueError as exc:
            # An address or content no server could take: retrying changes nothing.
            return Failed(email.id, True, f"unsendable: {type(exc).__name__}"), False
        failure = await connection.send(
            self._writer.envelope_from,
            email.recipient,
            message,
            utf8=utf8_mailbox(email.recipient),
        )
        if failure is None:
            SEND_ATTEMPTS.labels(email.kind, "sent").inc()
            return Sent(email.id), False
        settings = self._settings
        outcome = outcome_of_failure(
            email.id,
            failure,
            email.attempts,
            max_attempts=settings.max_attempts,
            base_seconds=settings.retry_base_seconds,
            max_seconds=settings.retry_max_seconds,
            jitter=random.random(),  # noqa: S311 - spreading retries, not a secret
        )
        if isinstance(outcome, Failed):
            result = "permanent" if outcome.permanent else "gave_up"
        else:
            result = "temporary"
            log.warning(
                "email_send_deferred",
                email_id=email.id,
                kind=email.kind,
                correlation_id=email.correlation_id,
                smtp_code=failure.code,
                stage=failure.stage.value,
                attempts=email.attempts,
                retry_in=round(outcome.delay_seconds, 1),
            )
        SEND_ATTEMPTS.labels(email.kind, result).inc()
        return outcome, failure.about_connection

    # --- recording ------------------------------------------------------------

    async def _record(self, senders: list[asyncio.Task[None]]) -> None:
        failures = 0
        while True:
            OUTCOMES_PENDING.set(len(self._outcomes))
            if not self._outcomes:
                if self._stopping and all(sender.done() for sender in senders):
                    break
                self._outcomes_waiting.clear()
                await _wait(self._outcomes_waiting, 0.5)
                if self._outcomes and not self._stopping:
                    await asyncio.sleep(_RECORD_LINGER_SECONDS)
                continue
            batch = self._outcomes[:_RECORD_BATCH]
            try:
                recorded = await queue.record(self._pool, self.claimant, batch)
            except Exception as exc:  # kept in memory and written once the database is back
                failures += 1
                delay = backoff(failures)
                log.warning(
                    "email_outcomes_not_recorded",
                    error=type(exc).__name__,
                    pending=len(self._outcomes),
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            del self._outcomes[: len(batch)]
            for outcome in batch:
                self._held.pop(outcome.email_id, None)
            self._capacity.set()
            self._count(batch, recorded)
        self._finished.set()

    def _count(self, batch: list[Outcome], recorded: queue.Recorded) -> None:
        for kind in recorded.sent:
            EMAILS.labels(kind, "sent").inc()
        for kind in recorded.suppressed:
            EMAILS.labels(kind, "suppressed").inc()
        for kind, _permanent in recorded.failed:
            EMAILS.labels(kind, "failed").inc()
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

    # --- leases ---------------------------------------------

    async def _renew_leases(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._finished.is_set():
            started = loop.time()
            held_before = set(self._held)
            try:
                kept = await queue.renew_leases(self._pool, self.claimant, self._lease_interval)
            except Exception as exc:  # renewed at the next beat; senders pause meanwhile
                log.warning("lease_renewal_failed", error=type(exc).__name__)
            else:
                self._lease.renewed(started)
                self._renewed.set()
                lost = [i for i in held_before - kept if i in self._held]
                for email_id in lost:
                    # Recorded meanwhile (harmless), or taken over after a lapse: the
                    # sender skips it if it has not started.
                    if not any(o.email_id == email_id for o in self._outcomes):
                        self._held.pop(email_id, None)
            elapsed = loop.time() - started
            await _wait(self._finished, max(self._settings.lease_renew_seconds - elapsed, 0.1))
