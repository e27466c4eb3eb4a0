"""Event models: the JSON documents on every topic.

Each event names its own type (`event_type`) and version (`schema_version`), so a
consumer can validate a raw record with `parse_event` without knowing the topic.
Consumers ignore fields they do not know, so adding a field is not a breaking
change; removing or retyping one needs a new `schema_version` and an upcaster in
`groundswell_contracts.upcasting`, which turns the old document into the new shape
before validation, so records written before the change (still on the topics, in
dead-letter topics, or replayed) parse as the current model.

Personal data: events on shared topics carry no address, name or token in clear. What
the mailer needs travels sealed (`groundswell_contracts.sealed`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from groundswell_contracts.sealed import Contact, SealedContact
from groundswell_contracts.topics import Topic
from groundswell_contracts.upcasting import UPCASTERS, upcast

# What a petition's slug may be, wherever one is accepted (signing creates them; the
# mailer's audiences name them).
SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,78}[a-z0-9])?$"


def utcnow() -> datetime:
    return datetime.now(UTC)


class BaseEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: UUID = Field(default_factory=uuid4)
    event_type: str
    schema_version: int = 1
    occurred_at: datetime = Field(default_factory=utcnow)

    @property
    def key(self) -> str:
        """The record key: what ordering (and, on compacted topics, retention) is per."""
        raise NotImplementedError


class Event(BaseEvent):
    petition_id: UUID

    # Every petition event is keyed by the petition: ordering matters per petition.
    @property
    def key(self) -> str:
        return str(self.petition_id)


# --- petitions -------------------------------------------------------------


class PetitionState(Event):
    """Full petition state: consumers never need an earlier event to use one."""

    slug: str
    title: str
    target: str
    goal: int | None = None
    requires_confirmation: bool = True
    status: Literal["open", "closed"] = "open"
    closes_at: datetime | None = None
    milestones: list[int] = Field(default_factory=list)
    auto_raise_goal: bool = False


class PetitionCreated(PetitionState):
    event_type: Literal["PetitionCreated"] = "PetitionCreated"


class PetitionUpdated(PetitionState):
    event_type: Literal["PetitionUpdated"] = "PetitionUpdated"


class PetitionClosed(PetitionState):
    event_type: Literal["PetitionClosed"] = "PetitionClosed"


# --- signatures ------------------------------------------------------------

SignatureStatus = Literal["pending", "signed", "fraudulent"]


class SignatureCreated(Event):
    """Version 2: the signer's address, name and tokens are sealed for the mailer.

    Version 1 carried them in clear (`email`, `name`, `confirmation_token`,
    `withdraw_token`); its upcaster moves them into `legacy_contact`, which only the mailer
    reads and which no producer writes any more.
    """

    event_type: Literal["SignatureCreated"] = "SignatureCreated"
    schema_version: Literal[2] = 2
    signature_id: UUID
    petition_slug: str
    petition_title: str
    # "signed" counts at once; "pending" waits for SignatureConfirmed;
    # "fraudulent" is kept for the record and never counted.
    status: SignatureStatus
    # Address, first name, and the one-time secrets for the mailer (the confirmation
    # token only when "pending"; no withdraw token when rebuilt by a replay, since
    # signing keeps only hashes). None for "fraudulent": nobody is written to.
    contact: SealedContact | None = None
    legacy_contact: Contact | None = None
    contact_consent: bool
    # The first name, only for signers who agreed to appear on a public leaderboard.
    leaderboard_name: str | None = None
    postcode_area: str | None = None
    country: str
    source: str | None = None
    ref: str | None = None
    # The channel the referring link was shared through (email, whatsapp, ...), if known.
    ref_channel: str | None = None
    share_code: str


class SignatureDuplicateAttempted(Event):
    """Someone signed again with an address that has signed: tell the owner, count nothing.

    Version 2 seals the address and name under the existing signature's key.
    """

    event_type: Literal["SignatureDuplicateAttempted"] = "SignatureDuplicateAttempted"
    schema_version: Literal[2] = 2
    signature_id: UUID
    petition_slug: str
    petition_title: str
    contact: SealedContact | None = None
    legacy_contact: Contact | None = None
    share_code: str


class SignatureConfirmed(Event):
    event_type: Literal["SignatureConfirmed"] = "SignatureConfirmed"
    signature_id: UUID


class SignatureWithdrawn(Event):
    event_type: Literal["SignatureWithdrawn"] = "SignatureWithdrawn"
    signature_id: UUID


class SignatureInvalidated(Event):
    event_type: Literal["SignatureInvalidated"] = "SignatureInvalidated"
    signature_id: UUID
    reason: str


class SignatureErased(Event):
    """The signer's personal data is gone (erasure request or retention).

    `counted`: the signature still counts, anonymised (the campaign's policy); when
    False a SignatureWithdrawn precedes this event. Consumers forget what they hold
    about the signature (names, links to the person).
    """

    event_type: Literal["SignatureErased"] = "SignatureErased"
    signature_id: UUID
    counted: bool


# --- sharing ---------------------------------------------------------------


class ShareLinkClicked(Event):
    event_type: Literal["ShareLinkClicked"] = "ShareLinkClicked"
    share_code: str
    channel: str | None = None


class ReferralAttributed(Event):
    event_type: Literal["ReferralAttributed"] = "ReferralAttributed"
    share_code: str
    referrer_signature_id: UUID
    signature_id: UUID


# --- counts ----------------------------------------------------------------


class PetitionCountChanged(Event):
    """The latest snapshot of a petition's counts (the `counts` topic keeps the last per key)."""

    event_type: Literal["PetitionCountChanged"] = "PetitionCountChanged"
    slug: str | None
    signatures: int
    pending: int
    withdrawn: int = 0
    invalidated: int = 0
    by_area: dict[str, int] = Field(default_factory=dict)
    by_country: dict[str, int] = Field(default_factory=dict)
    by_source: dict[str, int] = Field(default_factory=dict)
    by_referral: dict[str, int] = Field(default_factory=dict)
    goal: int | None = None
    milestones: list[int] = Field(default_factory=list)


class MilestoneReached(Event):
    event_type: Literal["MilestoneReached"] = "MilestoneReached"
    slug: str | None
    threshold: int
    signatures: int


# --- data keys (mailer only) -----------------------------------------------


class DataKeyIssued(BaseEvent):
    """The data key that opens one signer's (or privacy request's) sealed contact."""

    event_type: Literal["DataKeyIssued"] = "DataKeyIssued"
    key_id: UUID
    data_key: str

    @property
    def key(self) -> str:
        return str(self.key_id)

    def __repr__(self) -> str:  # never print a key by accident
        return f"DataKeyIssued(key_id={self.key_id})"

    __str__ = __repr__


class DataKeyShredded(BaseEvent):
    """The key is destroyed: whatever was sealed under it can no longer be read.

    Same record key as the DataKeyIssued it supersedes, so compaction drops the key.
    """

    event_type: Literal["DataKeyShredded"] = "DataKeyShredded"
    key_id: UUID

    @property
    def key(self) -> str:
        return str(self.key_id)


PrivacyRequestKind = Literal["erasure", "access"]


class PrivacyRequested(BaseEvent):
    """Someone asked to erase or see what is held about an address: the mailer sends the
    verification link (the address and token sealed under the request's own key, which is
    shredded when the request is done)."""

    event_type: Literal["PrivacyRequested"] = "PrivacyRequested"
    request_id: UUID
    kind: PrivacyRequestKind
    contact: SealedContact
    expires_at: datetime

    @property
    def key(self) -> str:
        return str(self.request_id)


# --- email -----------------------------------------------------------------

# "privacy_verification": the link of an erasure or access request. Its EmailSent and
# EmailFailed name the request's id as both signature_id and petition_id.
# "mailing": an organiser's mailing to one supporter (`signature_id` is the supporter's
# latest signature); "milestone": the organisation's note that a petition reached a
# milestone (`signature_id` is uuid5(petition_id, "milestone"), naming no signer).
EmailKind = Literal[
    "confirmation", "thank_you", "already_signed", "privacy_verification", "mailing", "milestone"
]


class EmailSent(Event):
    event_type: Literal["EmailSent"] = "EmailSent"
    kind: EmailKind
    signature_id: UUID


class EmailFailed(Event):
    event_type: Literal["EmailFailed"] = "EmailFailed"
    kind: EmailKind
    signature_id: UUID
    permanent: bool
    error: str


class Unsubscribed(Event):
    event_type: Literal["Unsubscribed"] = "Unsubscribed"
    signature_id: UUID


class PreferencesChanged(Event):
    """A recipient changed what they get, in the preference centre. Per mailbox, like
    `Unsubscribed`: it names the mailbox's most recent signature and petition, and
    carries no address. `updates`: mailings about petitions they signed; `news`: the
    campaign's news; `unsubscribed`: nothing but confirmations of new signatures."""

    event_type: Literal["PreferencesChanged"] = "PreferencesChanged"
    signature_id: UUID
    updates: bool
    news: bool
    unsubscribed: bool


AnyEvent = Annotated[
    PetitionCreated
    | PetitionUpdated
    | PetitionClosed
    | SignatureCreated
    | SignatureDuplicateAttempted
    | SignatureConfirmed
    | SignatureWithdrawn
    | SignatureInvalidated
    | SignatureErased
    | DataKeyIssued
    | DataKeyShredded
    | PrivacyRequested
    | ShareLinkClicked
    | ReferralAttributed
    | PetitionCountChanged
    | MilestoneReached
    | EmailSent
    | EmailFailed
    | Unsubscribed
    | PreferencesChanged,
    Field(discriminator="event_type"),
]

_any_event: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)

# Where each event type is published: producers never pick a topic by hand.
TOPIC_OF: dict[str, Topic] = {
    "PetitionCreated": Topic.PETITIONS,
    "PetitionUpdated": Topic.PETITIONS,
    "PetitionClosed": Topic.PETITIONS,
    "SignatureCreated": Topic.SIGNATURES,
    "SignatureDuplicateAttempted": Topic.SIGNATURES,
    "SignatureConfirmed": Topic.SIGNATURES,
    "SignatureWithdrawn": Topic.SIGNATURES,
    "SignatureInvalidated": Topic.SIGNATURES,
    "SignatureErased": Topic.SIGNATURES,
    "DataKeyIssued": Topic.SIGNER_KEYS,
    "DataKeyShredded": Topic.SIGNER_KEYS,
    "PrivacyRequested": Topic.PRIVACY,
    "ShareLinkClicked": Topic.SHARE_CLICKS,
    "ReferralAttributed": Topic.REFERRALS,
    "PetitionCountChanged": Topic.COUNTS,
    "MilestoneReached": Topic.MILESTONES,
    "EmailSent": Topic.EMAIL_EVENTS,
    "EmailFailed": Topic.EMAIL_EVENTS,
    "Unsubscribed": Topic.EMAIL_EVENTS,
    "PreferencesChanged": Topic.EMAIL_EVENTS,
}


def topic_for(event: BaseEvent) -> Topic:
    return TOPIC_OF[event.event_type]


def encode_text(event: BaseEvent) -> str:
    """An event as its JSON document: what a record's value holds (`encode`), and what an
    outbox row stores until the relay publishes it."""
    return event.model_dump_json()


def encode(event: BaseEvent) -> bytes:
    return encode_text(event).encode()


def parse_event(raw: bytes | str) -> AnyEvent:
    """Validate one record's value; raises pydantic.ValidationError on anything malformed.

    Current documents validate straight from JSON (the fast path, every record today);
    only a document that fails is decoded and upcast, then validated again.
    """
    try:
        return _any_event.validate_json(raw)
    except ValidationError as invalid:
        try:
            document = json.loads(raw)
        except ValueError:
            raise invalid from None
        if not isinstance(document, dict) or (
            (document.get("event_type"), document.get("schema_version", 1)) not in UPCASTERS
        ):
            raise
        return _any_event.validate_python(upcast(document))
