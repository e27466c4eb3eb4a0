"""Signature events -> emails to send.

The handler only records emails (in the transaction that claims the event); the
dispatcher sends them. A slow or failing SMTP server therefore never stalls the
`signatures` stream, and a redelivered event finds its emails already recorded.
"""

from __future__ import annotations

import dataclasses
import secrets

import asyncpg
import structlog
from groundswell_contracts.events import (
    AnyEvent,
    EmailKind,
    SignatureConfirmed,
    SignatureCreated,
    SignatureDuplicateAttempted,
    SignatureInvalidated,
    SignatureWithdrawn,
)
from groundswell_runtime.consumer import PermanentError, claim_event
from groundswell_runtime.correlation import current_correlation_id

from groundswell_mailer.adapters import repository as repo
from groundswell_mailer.adapters.smtp import new_message_id
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.domain.delivery import ALREADY_SIGNED_WINDOW, EmailStatus
from groundswell_mailer.domain.messages import EmailContent
from groundswell_mailer.domain.recipients import canonical_address, first_name

log = structlog.get_logger()


def new_unsubscribe_token() -> str:
    return secrets.token_urlsafe(24)


class SignatureHandler:
    def __init__(self, pool: asyncpg.Pool, settings: MailerSettings) -> None:
        self._pool = pool
        self._settings = settings

    async def __call__(self, event: AnyEvent) -> None:
        # A database that is away (class 57 included) is retried by the consumer loop
        # without limit: groundswell_runtime.db.TEMPORARY_DATABASE_ERRORS.
        if isinstance(event, SignatureCreated):
            await self._created(event)
        elif isinstance(event, SignatureConfirmed):
            await self._confirmed(event)
        elif isinstance(event, SignatureDuplicateAttempted):
            await self._duplicate(event)
        elif isinstance(event, SignatureWithdrawn | SignatureInvalidated):
            await self._withdrawn(event)

    async def _created(self, event: SignatureCreated) -> None:
        if event.status == "fraudulent":
            # Kept by signing for the record; writing to the address would help the abuser.
            log.info("email_not_sent_fraudulent", signature_id=str(event.signature_id))
            return
        if event.status == "pending" and not event.confirmation_token:
            raise PermanentError("pending signature without a confirmation token")
        content = EmailContent(
            first_name=first_name(event.name),
            petition_title=event.petition_title,
            petition_slug=event.petition_slug,
            share_code=event.share_code,
            withdraw_token=event.withdraw_token,
        )
        async with self._pool.acquire() as conn, conn.transaction():
            if not await claim_event(conn, repo.SCHEMA, event.event_id):
                return
            address_key = canonical_address(event.email)
            await repo.ensure_recipient(
                conn, address_key, event.signature_id, event.petition_id, new_unsubscribe_token()
            )
            correlation_id = current_correlation_id()

            async def record(kind: EmailKind, body: EmailContent, status: EmailStatus) -> None:
                await repo.add_email(
                    conn,
                    signature_id=event.signature_id,
                    kind=kind,
                    petition_id=event.petition_id,
                    address_key=address_key,
                    recipient=event.email.strip(),
                    content=body,
                    message_id=new_message_id(self._settings.mail_from),
                    status=status,
                    correlation_id=correlation_id,
                )

            if event.status == "pending":
                confirmation = dataclasses.replace(
                    content, withdraw_token=None, confirmation_token=event.confirmation_token
                )
                await record("confirmation", confirmation, EmailStatus.QUEUED)
            # The thank-you is recorded now, while the address is known; a pending
            # signature's waits ("held") for SignatureConfirmed.
            held = event.status == "pending"
            await record("thank_you", content, EmailStatus.HELD if held else EmailStatus.QUEUED)
            await repo.notify_emails_due(conn)
        log.info("emails_recorded", signature_id=str(event.signature_id), status=event.status)

    async def _confirmed(self, event: SignatureConfirmed) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await claim_event(conn, repo.SCHEMA, event.event_id):
                return
            released = await repo.release_held_thank_you(conn, event.signature_id)
            if released:
                await repo.notify_emails_due(conn)
        if not released:
            # Signed without confirmation, fraudulent, or withdrawn first: nothing is held.
            log.info("confirmed_without_held_email", signature_id=str(event.signature_id))

    async def _duplicate(self, event: SignatureDuplicateAttempted) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await claim_event(conn, repo.SCHEMA, event.event_id):
                return
            address_key = canonical_address(event.email)
            await repo.ensure_recipient(
                conn, address_key, event.signature_id, event.petition_id, new_unsubscribe_token()
            )
            sequence = await repo.next_duplicate_notice(
                conn, event.signature_id, event.occurred_at, ALREADY_SIGNED_WINDOW
            )
            if sequence is None:
                log.info("already_signed_capped", signature_id=str(event.signature_id))
                return
            await repo.add_email(
                conn,
                signature_id=event.signature_id,
                kind="already_signed",
                sequence=sequence,
                petition_id=event.petition_id,
                address_key=address_key,
                recipient=event.email.strip(),
                content=EmailContent(
                    first_name=first_name(event.name),
                    petition_title=event.petition_title,
                    petition_slug=event.petition_slug,
                    share_code=event.share_code,
                ),
                message_id=new_message_id(self._settings.mail_from),
                status=EmailStatus.QUEUED,
                correlation_id=current_correlation_id(),
            )
            await repo.notify_emails_due(conn)

    async def _withdrawn(self, event: SignatureWithdrawn | SignatureInvalidated) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await claim_event(conn, repo.SCHEMA, event.event_id):
                return
            cancelled = await repo.cancel_unsent(conn, event.signature_id)
        if cancelled:
            log.info("emails_cancelled", signature_id=str(event.signature_id), count=cancelled)
