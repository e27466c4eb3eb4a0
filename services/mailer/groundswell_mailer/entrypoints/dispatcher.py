"""The send loop: claim due emails, send them, record the outcome and its event.

An email is claimed (status `sending`, attempts + 1) before the SMTP conversation
and marked `sent` after it, in the transaction that writes EmailSent to the outbox.
If the process dies between the server's "250" and that commit, the claim expires
and the email goes out again: one rare duplicate is preferred to a confirmation
that never arrives (without it the signature never counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import timedelta
from email.errors import MessageError

import asyncpg
import structlog
from groundswell_contracts.events import EmailFailed, EmailSent
from groundswell_runtime.correlation import bind_correlation_id
from groundswell_runtime.outbox import enqueue
from prometheus_client import Counter

from groundswell_mailer.adapters import repository as repo
from groundswell_mailer.adapters.smtp import SmtpSender, build_message
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.domain.delivery import (
    EmailStatus,
    GiveUp,
    after_failure,
    should_suppress,
    unsubscribe_applies,
)
from groundswell_mailer.domain.messages import Links, compose

log = structlog.get_logger()

EMAILS = Counter("groundswell_mailer_emails_total", "Emails by final outcome", ["kind", "outcome"])
SEND_ATTEMPTS = Counter(
    "groundswell_mailer_send_attempts_total", "SMTP attempts by result", ["kind", "result"]
)

_PURGE_EVERY_SECONDS = 600.0


class Dispatcher:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: MailerSettings,
        sender: SmtpSender | None = None,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._sender = sender or SmtpSender(settings)
        self._links = Links(
            public_base_url=settings.public_base_url,
            share_base_url=settings.share_base_url,
            mailer_public_url=settings.public_url,
        )
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._last_purge = 0.0

    def request_stop(self) -> None:
        """Finish the emails in hand, claim no more."""
        self._stopping = True
        self._wakeup.set()

    def _on_notify(self, *_args: object) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        listener = await self._pool.acquire()
        await listener.add_listener(repo.EMAILS_CHANNEL, self._on_notify)
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping:
                self._wakeup.clear()
                handled = await self.dispatch_once()
                if handled >= self._settings.send_concurrency:
                    continue
                if loop.time() - self._last_purge > _PURGE_EVERY_SECONDS:
                    self._last_purge = loop.time()
                    await self._purge_unconfirmed()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                # cancellation that coincides with its timeout.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._settings.poll_interval_seconds):
                        await self._wakeup.wait()
        finally:
            with contextlib.suppress(Exception):
                await listener.remove_listener(repo.EMAILS_CHANNEL, self._on_notify)
            await self._pool.release(listener)

    async def dispatch_once(self) -> int:
        """Send one round of due emails concurrently; returns how many were claimed."""
        claimed = await repo.claim_due(
            self._pool,
            self._settings.send_concurrency,
            timedelta(seconds=self._settings.send_lease_seconds),
        )
        if claimed:
            results = await asyncio.gather(
                *(self._deliver(email) for email in claimed), return_exceptions=True
            )
            # One email's database hiccup must not abandon the others of the round; its
            # claim expires and it is tried again.
            for email, result in zip(claimed, results, strict=True):
                if isinstance(result, BaseException):
                    log.error(
                        "email_delivery_error", email_id=email.id, error=type(result).__name__
                    )
        return len(claimed)

    async def _deliver(self, email: repo.ClaimedEmail) -> None:
        bind_correlation_id(email.correlation_id)
        structlog.contextvars.bind_contextvars(
            email_id=email.id, kind=email.kind, signature_id=str(email.signature_id)
        )
        if should_suppress(email.kind, email.unsubscribed):
            async with self._pool.acquire() as conn, conn.transaction():
                await repo.finish(conn, email.id, EmailStatus.SUPPRESSED)
            EMAILS.labels(email.kind, "suppressed").inc()
            log.info("email_suppressed_unsubscribed")
            return
        try:
            token = email.unsubscribe_token if unsubscribe_applies(email.kind) else None
            composed = compose(email.kind, email.content, self._links, token)
            message = build_message(
                composed,
                mail_from=self._settings.mail_from,
                recipient=email.recipient,
                message_id=email.message_id,
            )
        except (ValueError, IndexError, MessageError) as exc:
            # An address or content no server could take: retrying changes nothing.
            await self._give_up(email, permanent=True, error=f"unsendable: {type(exc).__name__}")
            return
        failure = await self._sender.send(message)
        if failure is None:
            SEND_ATTEMPTS.labels(email.kind, "sent").inc()
            async with self._pool.acquire() as conn, conn.transaction():
                if await repo.finish(conn, email.id, EmailStatus.SENT):
                    await enqueue(
                        conn,
                        repo.SCHEMA,
                        EmailSent(
                            petition_id=email.petition_id,
                            kind=email.kind,
                            signature_id=email.signature_id,
                        ),
                    )
            EMAILS.labels(email.kind, "sent").inc()
            log.info("email_sent", attempts=email.attempts)
            return
        error = failure.describe()
        decision = after_failure(
            failure,
            email.attempts,
            max_attempts=self._settings.max_attempts,
            base_seconds=self._settings.retry_base_seconds,
            max_seconds=self._settings.retry_max_seconds,
            jitter=random.random(),  # noqa: S311 - spreading retries, not a secret
        )
        if isinstance(decision, GiveUp):
            SEND_ATTEMPTS.labels(email.kind, "permanent" if decision.permanent else "gave_up").inc()
            await self._give_up(email, permanent=decision.permanent, error=error)
            return
        SEND_ATTEMPTS.labels(email.kind, "temporary").inc()
        log.warning(
            "email_send_deferred",
            smtp_code=failure.code,
            stage=failure.stage.value,
            attempts=email.attempts,
            retry_in=round(decision.delay_seconds, 1),
        )
        await repo.retry_later(
            self._pool, email.id, timedelta(seconds=decision.delay_seconds), error
        )

    async def _give_up(self, email: repo.ClaimedEmail, *, permanent: bool, error: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            if await repo.finish(conn, email.id, EmailStatus.FAILED, error):
                await enqueue(
                    conn,
                    repo.SCHEMA,
                    EmailFailed(
                        petition_id=email.petition_id,
                        kind=email.kind,
                        signature_id=email.signature_id,
                        permanent=permanent,
                        error=error,
                    ),
                )
        EMAILS.labels(email.kind, "failed").inc()
        log.warning("email_failed", permanent=permanent, attempts=email.attempts, error=error)

    async def _purge_unconfirmed(self) -> None:
        """Forget held thank-yous (and the address in them) of signatures never confirmed."""
        async with self._pool.acquire() as conn:
            status = await conn.execute(
                "UPDATE mailer.emails SET status = 'cancelled', finished_at = now(), "
                "content = '{}'::jsonb, recipient = NULL "
                "WHERE status = 'held' AND created_at < now() - $1::interval",
                timedelta(days=self._settings.unconfirmed_retention_days),
            )
        purged = int(status.split()[-1])
        if purged:
            log.info("unconfirmed_emails_purged", count=purged)
