"""Signature events -> emails to send.

The handler only records emails (in the transaction that claims the event); the
dispatcher sends them. A slow or failing SMTP server therefore never stalls the
`signatures` stream, and a redelivered event finds its emails already recorded.

Contact details come sealed under each signer's data key (groundswell_contracts.sealed),
and the keys come on `signer-keys`: an event whose key has not arrived waits in
`sealed_waiting` and is recorded when the key comes (adapters/keys.py explains why the
two never miss each other). `DataKeyShredded` (erasure, retention) deletes the key and
everything held for it.
"""

from __future__ import annotations

import dataclasses
import secrets
from datetime import UTC, datetime
from typing import TypeAlias
from uuid import UUID

import asyncpg
import structlog
from groundswell_contracts.events import (
    AnyEvent,
    DataKeyIssued,
    DataKeyShredded,
    EmailKind,
    PrivacyRequested,
    SignatureConfirmed,
    SignatureCreated,
    SignatureDuplicateAttempted,
    SignatureInvalidated,
    SignatureWithdrawn,
    parse_event,
)
from groundswell_contracts.sealed import Contact, Unreadable, associated_data, decode_key, unseal
from groundswell_runtime.consumer import PermanentError, claim_event
from groundswell_runtime.correlation import current_correlation_id

from groundswell_mailer.adapters import keys, mailings
from groundswell_mailer.adapters import repository as repo
from groundswell_mailer.adapters.smtp import new_message_id
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.domain.delivery import ALREADY_SIGNED_WINDOW, EmailStatus
from groundswell_mailer.domain.messages import EmailContent
from groundswell_mailer.domain.recipients import canonical_address, first_name

log = structlog.get_logger()


def new_unsubscribe_token() -> str:
    return secrets.token_urlsafe(24)


Sealed: TypeAlias = SignatureCreated | SignatureDuplicateAttempted | PrivacyRequested


class SignatureHandler:
    """Applies one signature or key event inside the transaction it is given (see
    groundswell_runtime.consumer.InTransaction: one per event, or one per batch).

    A database that is away (class 57 included) is retried by the consumer loop without
    limit: groundswell_runtime.db.TEMPORARY_DATABASE_ERRORS.
    """

    def __init__(self, settings: MailerSettings) -> None:
        self._settings = settings

    async def __call__(self, conn: asyncpg.Connection, event: AnyEvent) -> None:
        if isinstance(event, SignatureCreated | SignatureDuplicateAttempted | PrivacyRequested):
            await self._sealed(conn, event)
        elif isinstance(event, SignatureConfirmed):
            await self._confirmed(conn, event)
        elif isinstance(event, SignatureWithdrawn | SignatureInvalidated):
            await self._withdrawn(conn, event)
        elif isinstance(event, DataKeyIssued):
            await self._key_issued(conn, event)
        elif isinstance(event, DataKeyShredded):
            await self._key_shredded(conn, event)

    async def lock_batch(self, conn: asyncpg.Connection, events: list[AnyEvent]) -> None:
        """InTransaction's batch preparer: every key the batch will lock, in one order."""
        await keys.lock_all(conn, filter(None, (_key_of(event) for event in events)))

    # --- contact details and their keys ------------------------------------------

    async def _sealed(self, conn: asyncpg.Connection, event: Sealed) -> None:
        if isinstance(event, SignatureCreated) and event.status == "fraudulent":
            # Kept by signing for the record; writing to the address would help the abuser.
            return
        # Claimed first: a replayed event already handled is dropped by id, whatever it holds.
        if not await claim_event(conn, repo.SCHEMA, event.event_id):
            return
        legacy = getattr(event, "legacy_contact", None)
        if legacy is not None:  # written before contacts were sealed
            await self._record(conn, event, legacy, confirmed=False)
            return
        if event.contact is None:
            return
        key_id = event.contact.key_id
        await keys.lock(conn, key_id)
        key = await keys.key_for(conn, key_id)
        if key is None:
            await keys.wait_for_key(conn, key_id, event.event_id, event.model_dump_json())
        elif key is keys.SHREDDED:
            log.info("contact_erased", key_id=str(key_id))
        else:
            assert isinstance(key, bytes)
            await self._record(conn, event, _open(event, key), confirmed=False)

    async def _key_issued(self, conn: asyncpg.Connection, event: DataKeyIssued) -> None:
        if not await claim_event(conn, repo.SCHEMA, event.event_id):
            return
        await keys.lock(conn, event.key_id)
        await keys.store_key(conn, event.key_id, decode_key(event.data_key))
        key = await keys.key_for(conn, event.key_id)
        if not isinstance(key, bytes):
            return  # shredded before it arrived
        for raw, confirmed in await keys.take_waiting(conn, event.key_id):
            waiting = parse_event(raw)
            assert isinstance(
                waiting, SignatureCreated | SignatureDuplicateAttempted | PrivacyRequested
            )
            try:
                contact = _open(waiting, key)
            except PermanentError:
                # Dropped, not dead-lettered: the dead letter would be this key event.
                log.warning("sealed_contact_unreadable", event_id=str(waiting.event_id))
                continue
            await self._record(conn, waiting, contact, confirmed=confirmed)

    async def _key_shredded(self, conn: asyncpg.Connection, event: DataKeyShredded) -> None:
        if not await claim_event(conn, repo.SCHEMA, event.event_id):
            return
        await keys.lock(conn, event.key_id)
        deleted = await keys.shred(conn, event.key_id)
        log.info("data_key_shredded", key_id=str(event.key_id), emails_deleted=deleted)

    async def _record(
        self, conn: asyncpg.Connection, event: Sealed, contact: Contact, *, confirmed: bool
    ) -> None:
        if isinstance(event, SignatureCreated):
            await self._created(conn, event, contact, confirmed=confirmed)
        elif isinstance(event, SignatureDuplicateAttempted):
            await self._duplicate(conn, event, contact)
        else:
            await self._privacy_link(conn, event, contact)

    # --- what each event asks for --------------------------------------------------

    async def _created(
        self,
        conn: asyncpg.Connection,
        event: SignatureCreated,
        contact: Contact,
        *,
        confirmed: bool,
    ) -> None:
        if event.status == "pending" and not contact.confirmation_token:
            # Only a replay leaves the token out, and only for a signature that can no
            # longer be confirmed (expired, withdrawn): there is nothing to send.
            log.info("confirmation_not_sendable", signature_id=str(event.signature_id))
            return
        content = EmailContent(
            first_name=first_name(contact.name),
            petition_title=event.petition_title,
            petition_slug=event.petition_slug,
            share_code=event.share_code,
            withdraw_token=contact.withdraw_token,
        )
        address_key = canonical_address(contact.email)
        await repo.ensure_recipient(
            conn, address_key, event.signature_id, event.petition_id, new_unsubscribe_token()
        )
        # A possible mailing recipient (adapters/mailings.py; erased by keys.shred).
        await mailings.record_supporter(
            conn,
            signature_id=event.signature_id,
            petition_id=event.petition_id,
            petition_slug=event.petition_slug,
            petition_title=event.petition_title,
            address_key=address_key,
            recipient=contact.email.strip(),
            first_name=content.first_name,
            postcode_area=event.postcode_area,
            contact_consent=event.contact_consent,
            confirmed=event.status == "signed" or confirmed,
        )
        correlation_id = current_correlation_id()

        async def record(kind: EmailKind, body: EmailContent, status: EmailStatus) -> None:
            await repo.add_email(
                conn,
                signature_id=event.signature_id,
                kind=kind,
                petition_id=event.petition_id,
                address_key=address_key,
                recipient=contact.email.strip(),
                content=body,
                message_id=new_message_id(self._settings.mail_from),
                status=status,
                correlation_id=correlation_id,
            )

        if event.status == "pending" and not confirmed:
            confirmation = dataclasses.replace(
                content, withdraw_token=None, confirmation_token=contact.confirmation_token
            )
            await record("confirmation", confirmation, EmailStatus.QUEUED)
        # The thank-you is recorded now, while the address is known; a pending
        # signature's waits ("held") for SignatureConfirmed (unless that came first,
        # while the contact waited for its key).
        held = event.status == "pending" and not confirmed
        await record("thank_you", content, EmailStatus.HELD if held else EmailStatus.QUEUED)
        await repo.notify_emails_due(conn)

    async def _confirmed(self, conn: asyncpg.Connection, event: SignatureConfirmed) -> None:
        if not await claim_event(conn, repo.SCHEMA, event.event_id):
            return
        # Taken in the same order as the key path, so a contact still waiting for its
        # key learns of the confirmation and no thank-you stays held for ever.
        await keys.lock(conn, event.signature_id)
        await keys.confirm_waiting(conn, event.signature_id)
        await mailings.note_state(conn, event.signature_id, withdrawn=False)  # mailable now
        # Nothing held when signed without confirmation, fraudulent, or withdrawn first.
        if await repo.release_held_thank_you(conn, event.signature_id):
            await repo.notify_emails_due(conn)

    async def _duplicate(
        self, conn: asyncpg.Connection, event: SignatureDuplicateAttempted, contact: Contact
    ) -> None:
        address_key = canonical_address(contact.email)
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
            recipient=contact.email.strip(),
            content=EmailContent(
                first_name=first_name(contact.name),
                petition_title=event.petition_title,
                petition_slug=event.petition_slug,
                share_code=event.share_code,
            ),
            message_id=new_message_id(self._settings.mail_from),
            status=EmailStatus.QUEUED,
            correlation_id=current_correlation_id(),
        )
        await repo.notify_emails_due(conn)

    async def _privacy_link(
        self, conn: asyncpg.Connection, event: PrivacyRequested, contact: Contact
    ) -> None:
        """The link of an erasure or access request, to the address it names. Its rows
        go when signing shreds the request's key (the request is done or expired)."""
        if event.expires_at <= datetime.now(UTC) or not contact.verification_token:
            # Reached us after its link expired (the mailer was down for a day): a dead
            # link helps nobody, and the person can ask again.
            log.info("privacy_link_expired", request_id=str(event.request_id))
            return
        address_key = canonical_address(contact.email)
        await repo.ensure_recipient(
            conn, address_key, event.request_id, event.request_id, new_unsubscribe_token()
        )
        await repo.add_email(
            conn,
            signature_id=event.request_id,
            kind="privacy_verification",
            petition_id=event.request_id,
            address_key=address_key,
            recipient=contact.email.strip(),
            content=EmailContent(
                first_name="",
                petition_title="",
                petition_slug="",
                share_code="",
                verification_token=contact.verification_token,
                privacy_kind=event.kind,
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
        await keys.lock(conn, event.signature_id)
        await keys.drop_waiting(conn, event.signature_id)
        await mailings.note_state(conn, event.signature_id, withdrawn=True)  # no more mailings
        cancelled = await repo.cancel_unsent(conn, event.signature_id)
        if cancelled:
            log.info("emails_cancelled", signature_id=str(event.signature_id), count=cancelled)


def _key_of(event: AnyEvent) -> UUID | None:
    """The key an event's handling locks (adapters/keys.py), if any."""
    if isinstance(event, DataKeyIssued | DataKeyShredded):
        return event.key_id
    if isinstance(event, PrivacyRequested):
        return event.request_id
    if isinstance(
        event,
        SignatureCreated
        | SignatureDuplicateAttempted
        | SignatureConfirmed
        | SignatureWithdrawn
        | SignatureInvalidated,
    ):
        return event.signature_id
    return None


def _open(event: Sealed, key: bytes) -> Contact:
    assert event.contact is not None
    try:
        return unseal(event.contact, key, associated_data(event.event_type, event.event_id))
    except Unreadable as exc:
        # Tampered, or moved from another event: never retried, dead-lettered (sealed).
        raise PermanentError("the sealed contact does not open with its key") from exc
