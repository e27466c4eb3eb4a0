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
from groundswell_runtime.consumer import claim_event
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
    """Applies one signature event inside the transaction it is given (see
    groundswell_runtime.consumer.InTransaction: one per event, or one per batch).

    A database that is away (class 57 included) is retried by the consumer loop without
    limit: groundswell_runtime.db.TEMPORARY_DATABASE_ERRORS.
    """

    def __init__(self, settings: MailerSettings) -> None:
        self._settings = settings

    async def __call__(self, conn: asyncpg.Connection, event: AnyEvent) -> None:
        if isinstance(event, SignatureCreated):
            await self._created(conn, event)
        elif isinstance(event, SignatureConfirmed):
            await self._confirmed(conn, event)
        elif isinstance(event, SignatureDuplicateAttempted):
            await self._duplicate(conn, event)
        elif isinstance(event, SignatureWithdrawn | SignatureInvalidated):
            await self._withdrawn(conn, event)

    async def _created(self, conn: asyncpg.Connection, event: SignatureCreated) -> None:
        if event.status == "fraudulent":
            # Kept by signing for the record; writing to the address would help the abuser.
            return
        # Claimed first: a replayed event already handled is dropped by id, whatever it holds.
        if not await claim_event(conn, repo.SCHEMA, event.event_id):
            return
        if event.status == "pending" and not event.confirmation_token:
            # Only a replay leaves the token out, and only for a signature that can no
            # longer be confirmed (expired, withdrawn): there is nothing to send.
            log.info("confirmation_not_sendable", signature_id=str(event.signature_id))
            return
        content = EmailContent(
            first_name=first_name(event.name),
            petition_title=event.petition_title,
            petition_slug=event.petition_slug,
            share_code=event.share_code,
            withdraw_token=event.withdraw_token,
        )
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

    async def _confirmed(self, conn: asyncpg.Connection, event: SignatureConfirmed) -> None:
        if not await claim_event(conn, repo.SCHEMA, event.event_id):
            return
        # Nothing held when signed without confirmation, fraudulent, or withdrawn first.
        if await repo.release_held_thank_you(conn, event.signature_id):
            await repo.notify_emails_due(conn)

    async def _duplicate(
        self, conn: asyncpg.Connection, event: SignatureDuplicateAttempted
    ) -> None:
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

    async def _withdrawn(
        self, conn: asyncpg.Connection, event: SignatureWithdrawn | SignatureInvalidated
    ) -> None:
        if not await claim_event(conn, repo.SCHEMA, event.event_id):
            return
        cancelled = await repo.cancel_unsent(conn, event.signature_id)
        if cancelled:
            log.info("emails_cancelled", signature_id=str(event.signature_id), count=cancelled)
