"""What a batch of opened signature events asks the mailer to store, as rows.

The consumer (entrypoints/handlers.py) opens each sealed contact and hands the results
here; `plan` says which recipients, petitions, supporters and emails they need, and
adapters/intake.py writes each kind of row with one statement for the whole batch.
No I/O here: the rules are the ones the handler applied one event at a time before.

`plan` takes events whose subjects (signature, or privacy request) are distinct: two
events about one signature in one statement could meet on the same row twice, which an
upsert refuses. `rounds` cuts a sequence of events into such runs, in order, so the
rows of a later event are written by a later statement, as they would have been one
event at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeAlias
from uuid import UUID

from groundswell_contracts.events import (
    EmailKind,
    PrivacyRequested,
    SignatureCreated,
    SignatureDuplicateAttempted,
)
from groundswell_contracts.sealed import Contact

from groundswell_mailer.domain.delivery import EmailStatus
from groundswell_mailer.domain.messages import EmailContent
from groundswell_mailer.domain.recipients import canonical_address, first_name

Sealed: TypeAlias = SignatureCreated | SignatureDuplicateAttempted | PrivacyRequested


@dataclass(frozen=True)
class Opened:
    """A sealed event whose contact was opened, and what came with it."""

    event: Sealed
    contact: Contact
    # The signature was confirmed while the contact waited for its key.
    confirmed: bool
    correlation_id: str | None


def subject_of(event: Sealed) -> UUID:
    """The signature (or privacy request) an event is about: its emails' `signature_id`."""
    return event.request_id if isinstance(event, PrivacyRequested) else event.signature_id


def rounds(opened: Iterable[Opened]) -> Iterator[list[Opened]]:
    """Consecutive runs, in order, in which no subject appears twice."""
    run: list[Opened] = []
    subjects: set[UUID] = set()
    for item in opened:
        subject = subject_of(item.event)
        if subject in subjects:
            yield run
            run, subjects = [], set()
        run.append(item)
        subjects.add(subject)
    if run:
        yield run


@dataclass(frozen=True)
class NewEmail:
    signature_id: UUID
    kind: EmailKind
    petition_id: UUID
    address_key: str
    recipient: str
    content: EmailContent
    message_id: str
    status: EmailStatus
    correlation_id: str | None
    sequence: int = 1


@dataclass(frozen=True)
class Supporter:
    """A possible mailing recipient (adapters/mailings.py reads these rows)."""

    signature_id: UUID
    petition_id: UUID
    address_key: str
    recipient: str
    first_name: str
    postcode_area: str | None
    contact_consent: bool
    confirmed: bool


@dataclass(frozen=True)
class Notice:
    """An already-signed notice, sent only if the per-signature cap allows it; the cap
    (adapters/intake.py) gives its sequence number."""

    signature_id: UUID
    occurred_at: datetime
    email: NewEmail


@dataclass
class Rows:
    # address_key -> (signature, petition) it was last seen with: the later event wins.
    recipients: dict[str, tuple[UUID, UUID]] = field(default_factory=dict)
    # petition_id -> (slug, title), the later event's.
    petitions: dict[UUID, tuple[str, str]] = field(default_factory=dict)
    supporters: list[Supporter] = field(default_factory=list)
    emails: list[NewEmail] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    # (log event, subject): what was left out, for the handler to say.
    skipped: list[tuple[str, UUID]] = field(default_factory=list)


def plan(opened: Iterable[Opened], now: datetime, new_message_id: Callable[[], str]) -> Rows:
    """The rows for a run of events with distinct subjects (see `rounds`)."""
    rows = Rows()
    for item in opened:
        event, contact = item.event, item.contact
        if isinstance(event, SignatureCreated):
            _created(rows, item, new_message_id)
        elif isinstance(event, SignatureDuplicateAttempted):
            address_key = canonical_address(contact.email)
            rows.recipients[address_key] = (event.signature_id, event.petition_id)
            email = NewEmail(
                signature_id=event.signature_id,
                kind="already_signed",
                petition_id=event.petition_id,
                address_key=address_key,
                recipient=contact.email.strip(),
                content=EmailContent(
                    first_name=first_name(contact.name),
                    petition_title=event.petition_title,
                    petition_slug=event.petition_slug,
                    share_code=event.share_code,
                ),
                message_id=new_message_id(),
                status=EmailStatus.QUEUED,
                correlation_id=item.correlation_id,
            )
            rows.notices.append(Notice(event.signature_id, event.occurred_at, email))
        else:
            _privacy_link(rows, item, now, new_message_id)
    return rows


def _created(rows: Rows, item: Opened, new_message_id: Callable[[], str]) -> None:
    event, contact = item.event, item.contact
    assert isinstance(event, SignatureCreated)
    if event.status == "pending" and not contact.confirmation_token:
        # Only a replay leaves the token out, and only for a signature that can no
        # longer be confirmed (expired, withdrawn): there is nothing to send.
        rows.skipped.append(("confirmation_not_sendable", event.signature_id))
        return
    content = EmailContent(
        first_name=first_name(contact.name),
        petition_title=event.petition_title,
        petition_slug=event.petition_slug,
        share_code=event.share_code,
        withdraw_token=contact.withdraw_token,
    )
    address_key = canonical_address(contact.email)
    recipient = contact.email.strip()
    rows.recipients[address_key] = (event.signature_id, event.petition_id)
    rows.petitions[event.petition_id] = (event.petition_slug, event.petition_title)
    rows.supporters.append(
        Supporter(
            signature_id=event.signature_id,
            petition_id=event.petition_id,
            address_key=address_key,
            recipient=recipient,
            first_name=content.first_name,
            postcode_area=event.postcode_area.upper() if event.postcode_area else None,
            contact_consent=event.contact_consent,
            confirmed=event.status == "signed" or item.confirmed,
        )
    )

    def email(kind: EmailKind, body: EmailContent, status: EmailStatus) -> NewEmail:
        return NewEmail(
            signature_id=event.signature_id,
            kind=kind,
            petition_id=event.petition_id,
            address_key=address_key,
            recipient=recipient,
            content=body,
            message_id=new_message_id(),
            status=status,
            correlation_id=item.correlation_id,
        )

    # The thank-you is recorded now, while the address is known; a pending signature's
    # waits ("held") for SignatureConfirmed (unless that came first, while the contact
    # waited for its key).
    held = event.status == "pending" and not item.confirmed
    if held:
        confirmation = dataclasses.replace(
            content, withdraw_token=None, confirmation_token=contact.confirmation_token
        )
        rows.emails.append(email("confirmation", confirmation, EmailStatus.QUEUED))
    rows.emails.append(
        email("thank_you", content, EmailStatus.HELD if held else EmailStatus.QUEUED)
    )


def _privacy_link(
    rows: Rows, item: Opened, now: datetime, new_message_id: Callable[[], str]
) -> None:
    """The link of an erasure or access request, to the address it names. Its rows go
    when signing shreds the request's key (the request is done or expired)."""
    event, contact = item.event, item.contact
    assert isinstance(event, PrivacyRequested)
    if event.expires_at <= now or not contact.verification_token:
        # Reached us after its link expired (the mailer was down for a day): a dead
        # link helps nobody, and the person can ask again.
        rows.skipped.append(("privacy_link_expired", event.request_id))
        return
    address_key = canonical_address(contact.email)
    rows.recipients[address_key] = (event.request_id, event.request_id)
    rows.emails.append(
        NewEmail(
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
            message_id=new_message_id(),
            status=EmailStatus.QUEUED,
            correlation_id=item.correlation_id,
        )
    )
