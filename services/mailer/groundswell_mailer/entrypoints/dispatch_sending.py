"""Sending: the dispatcher's sender tasks, each with one persistent SMTP connection.

A sender takes the next claimed email from the local queue as soon as it is done with
the last (no lockstep rounds), decides whether it may go (unsubscribed mailboxes, a
lease that may have lapsed), writes the message bytes, sends them over its connection
(adapters/smtp.py) and hands the outcome to the recorder (dispatch_outcomes.py). What a
failure means (retry when, give up when) is decided in domain/delivery.py.
"""

from __future__ import annotations

import asyncio
import random

import asyncpg
import structlog
from prometheus_client import Counter

from groundswell_mailer.adapters import queue
from groundswell_mailer.adapters.smtp import SmtpConnection
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.domain.delivery import (
    Deferred,
    Failed,
    Outcome,
    Released,
    Sent,
    Suppressed,
    backoff,
    outcome_of_failure,
    should_suppress,
    unsubscribe_applies,
)
from groundswell_mailer.domain.messages import Links
from groundswell_mailer.domain.mime import MessageWriter, utf8_mailbox
from groundswell_mailer.domain.stencils import Stencils
from groundswell_mailer.entrypoints.dispatch_state import DispatchState
from groundswell_mailer.entrypoints.mailings import CAMPAIGN_KINDS, CampaignMail

log = structlog.get_logger()

SEND_ATTEMPTS = Counter(
    "groundswell_mailer_send_attempts_total", "SMTP attempts by result", ["kind", "result"]
)


class Sender:
    """What every sender task of one dispatcher shares: settings, texts, the state."""

    def __init__(self, pool: asyncpg.Pool, settings: MailerSettings, state: DispatchState) -> None:
        self._settings = settings
        self._state = state
        links = Links(
            public_base_url=settings.public_base_url,
            share_base_url=settings.share_base_url,
            mailer_public_url=settings.public_url,
        )
        # Texts rendered once per petition and kind (the organisation and the link
        # lifetime every email states are read once, here).
        self._stencils = Stencils(links, settings.campaign())
        # Mailings and milestone notes (entrypoints/mailings.py): same queue, own texts.
        self._campaign_mail = CampaignMail(pool, settings)
        self._writer = MessageWriter(settings.mail_from)

    async def run(self, connection: SmtpConnection) -> None:
        """One sender task, until it takes the None that `request_stop` queues for it."""
        state = self._state
        loop = asyncio.get_running_loop()
        trouble = 0  # connection failures in a row
        while True:
            email = await state.queue.get()
            if email is None:
                return
            if state.queue.qsize() < state.claim_batch:
                state.capacity.set()
            # Start no conversation on a lease that may have lapsed (database away).
            # Rare (renewals failing for seconds), so a short poll rather than an event.
            while not state.lease.may_start(loop.time()) and not state.stopping:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            if email.id not in state.held:
                continue  # another dispatcher took the claim over
            if state.stopping and not state.lease.may_start(loop.time()):
                state.add_outcome(Released(email.id))
                continue
            state.in_flight[email.id] = email
            outcome, connection_trouble = await self.deliver(connection, email)
            del state.in_flight[email.id]
            state.add_outcome(outcome)
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

    async def deliver(
        self, connection: SmtpConnection, email: queue.ClaimedEmail
    ) -> tuple[Outcome, bool]:
        """The email's outcome, and whether the failure (if any) was the connection's."""
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
                composed = self._stencils.compose(email.kind, email.content, token)
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
