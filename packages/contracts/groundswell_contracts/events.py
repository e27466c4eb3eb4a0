"""Event models: the JSON documents on every topic.

Each event names its own type (`event_type`) and version (`schema_version`), so a
consumer can validate a raw record with `parse_event` without knowing the topic.
Consumers ignore fields they do not know, so adding a field is not a breaking
change; removing or retyping one needs a new `schema_version`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from groundswell_contracts.topics import Topic


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: UUID = Field(default_factory=uuid4)
    event_type: str
    schema_version: int = 1
    occurred_at: datetime = Field(default_factory=utcnow)
    petition_id: UUID

    # Every event is keyed by the petition it concerns: ordering matters per petition.
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
    event_type: Literal["SignatureCreated"] = "SignatureCreated"
    signature_id: UUID
    petition_slug: str
    petition_title: str
    # "signed" counts at once; "pending" waits for SignatureConfirmed;
    # "fraudulent" is kept for the record and never counted.
    status: SignatureStatus
    # Personal data travels only to the consumers that email the signer.
    email: str
    name: str
    contact_consent: bool
    postcode_area: str | None = None
    country: str
    source: str | None = None
    ref: str | None = None
    # The channel the referring link was shared through (email, whatsapp, ...), if known.
    ref_channel: str | None = None
    share_code: str
    # Present only when status is "pending": the one-time secret the confirmation
    # email carries. The signing service keeps only its hash.
    confirmation_token: str | None = None
    # Absent when the event is rebuilt from PostgreSQL (`groundswell-signing replay`):
    # only hashes are stored, and the signer already has their links.
    withdraw_token: str | None = None


class SignatureDuplicateAttempted(Event):
    """Someone signed again with an address that has signed: tell the owner, count nothing."""

    event_type: Literal["SignatureDuplicateAttempted"] = "SignatureDuplicateAttempted"
    signature_id: UUID
    petition_slug: str
    petition_title: str
    email: str
    name: str
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


# --- email -----------------------------------------------------------------

EmailKind = Literal["confirmation", "thank_you", "already_signed"]


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


AnyEvent = Annotated[
    PetitionCreated
    | PetitionUpdated
    | PetitionClosed
    | SignatureCreated
    | SignatureDuplicateAttempted
    | SignatureConfirmed
    | SignatureWithdrawn
    | SignatureInvalidated
    | ShareLinkClicked
    | ReferralAttributed
    | PetitionCountChanged
    | MilestoneReached
    | EmailSent
    | EmailFailed
    | Unsubscribed,
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
    "ShareLinkClicked": Topic.SHARE_CLICKS,
    "ReferralAttributed": Topic.REFERRALS,
    "PetitionCountChanged": Topic.COUNTS,
    "MilestoneReached": Topic.MILESTONES,
    "EmailSent": Topic.EMAIL_EVENTS,
    "EmailFailed": Topic.EMAIL_EVENTS,
    "Unsubscribed": Topic.EMAIL_EVENTS,
}


def topic_for(event: Event) -> Topic:
    return TOPIC_OF[event.event_type]


def encode(event: Event) -> bytes:
    return event.model_dump_json().encode()


def parse_event(raw: bytes | str) -> AnyEvent:
    """Validate one record's value; raises pydantic.ValidationError on anything malformed."""
    return _any_event.validate_json(raw)
