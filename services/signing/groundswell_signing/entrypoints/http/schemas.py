"""Request and response bodies of the JSON API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
)

from groundswell_signing.domain.petitions import SLUG, Petition
from groundswell_signing.domain.signatures import reject_control_characters

# PostgreSQL cannot store NUL, and no field here has a use for control characters.
Line = Annotated[str, AfterValidator(lambda v: reject_control_characters(v, allow_newlines=False))]
Paragraphs = Annotated[
    str, AfterValidator(lambda v: reject_control_characters(v, allow_newlines=True))
]
# Counts are PostgreSQL integers; 41656.0 is not one.
Count = Annotated[StrictInt, Field(gt=0, le=1_000_000_000)]
Flag = StrictBool


def _iso_text(value: object) -> object:
    if not isinstance(value, (str, datetime)):
        raise ValueError("give a date and time as text, e.g. 2027-01-31T23:59:00Z")
    return value


# JSON has no date type: only ISO 8601 text is a date here (pydantic would take 0 as 1970).
When = Annotated[AwareDatetime, BeforeValidator(_iso_text)]
STRICT = ConfigDict(extra="forbid")
# A browser origin: scheme and host[:port], nothing else.
Origin = Annotated[Line, Field(pattern=r"^https?://[^/\s]+$", max_length=200)]


class SignatureRequest(BaseModel):
    """Lengths here are generous outer bounds; the domain rules give the precise messages."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(max_length=100, examples=["Ada Lovelace"])
    email: str = Field(max_length=254, examples=["ada@example.org"])
    postcode: str | None = Field(None, max_length=16, examples=["OX1 2JD"])
    country: str = Field("GB", min_length=2, max_length=2, examples=["GB"])
    contact_consent: StrictBool = Field(
        description="Explicit yes/no to being contacted about this campaign; separate from signing."
    )
    ref: str | None = Field(
        None, max_length=64, description="Share code of the person who referred you"
    )
    source: str | None = Field(
        None, max_length=64, description="Campaign source code, e.g. newsletter"
    )
    ref_channel: str | None = Field(
        None, max_length=64, description="Where the share link was shared: email, whatsapp, ..."
    )
    leaderboard_consent: StrictBool = Field(
        False,
        description="Yes to showing your first name to the campaign's organisers on the "
        "leaderboard of people whose shares brought signatures. Without it, no other "
        "service ever learns your name.",
    )


class SignatureAccepted(BaseModel):
    status: Literal["pending_confirmation", "signed"]
    share_url: str = Field(
        description="The petition's page, to share. The same for everyone: the signer's "
        "personal (attributed) link comes by email, so this answer reveals nothing about "
        "whether the address had signed before."
    )
    message: str


class PetitionFields(BaseModel):
    model_config = STRICT

    title: Line = Field(min_length=5, max_length=200)
    target: Line = Field(
        min_length=2, max_length=200, description="Who the petition is addressed to"
    )
    body: Paragraphs = Field(min_length=10, max_length=10_000)
    goal: Count | None = None
    requires_confirmation: Flag = True
    organiser_email: Line | None = Field(None, max_length=254)
    closes_at: When | None = None
    milestones: list[Count] = Field(
        default_factory=list, description="Counts that trigger MilestoneReached; empty = defaults"
    )
    auto_raise_goal: Flag = False
    cors_origins: list[Origin] = Field(
        default_factory=list, description="Origins allowed to call the signing API from a browser"
    )


class PetitionCreate(PetitionFields):
    slug: str = Field(pattern=SLUG.pattern, examples=["local-contact-tracing"])


class PetitionPatch(BaseModel):
    model_config = STRICT

    title: Line | None = Field(None, min_length=5, max_length=200)
    target: Line | None = Field(None, min_length=2, max_length=200)
    body: Paragraphs | None = Field(None, min_length=10, max_length=10_000)
    goal: Count | None = None
    requires_confirmation: Flag | None = None
    organiser_email: Line | None = Field(None, max_length=254)
    closes_at: When | None = None
    status: Literal["open", "closed"] | None = None
    milestones: list[Count] | None = None
    auto_raise_goal: Flag | None = None
    cors_origins: list[Origin] | None = None


class PetitionOut(BaseModel):
    id: str
    slug: str
    title: str
    target: str
    body: str
    goal: int | None
    requires_confirmation: bool
    status: Literal["open", "closed"]
    closes_at: datetime | None
    accepting_signatures: bool
    url: str
    count_url: str

    @classmethod
    def of(
        cls, petition: Petition, public_base: str, counter_base: str, now: datetime
    ) -> PetitionOut:
        return cls(
            id=str(petition.id),
            slug=petition.slug,
            title=petition.title,
            target=petition.target,
            body=petition.body,
            goal=petition.goal,
            requires_confirmation=petition.requires_confirmation,
            status=petition.status,
            closes_at=petition.closes_at,
            accepting_signatures=petition.accepting_signatures(now),
            url=f"{public_base}/p/{petition.slug}",
            count_url=f"{counter_base}/api/petitions/{petition.slug}/count",
        )


class AdminPetitionOut(PetitionOut):
    organiser_email: str | None
    milestones: list[int]
    auto_raise_goal: bool
    cors_origins: list[str]
    version: int

    @classmethod
    def of_admin(
        cls, petition: Petition, public_base: str, counter_base: str, now: datetime
    ) -> AdminPetitionOut:
        base = PetitionOut.of(petition, public_base, counter_base, now)
        return cls(
            **base.model_dump(),
            organiser_email=petition.organiser_email,
            milestones=petition.milestones,
            auto_raise_goal=petition.auto_raise_goal,
            cors_origins=petition.cors_origins,
            version=petition.version,
        )


class InvalidationRequest(BaseModel):
    model_config = STRICT

    ip: Line | None = Field(None, description="An address or a CIDR range, e.g. 203.0.113.0/24")
    email_domain: Line | None = Field(None, max_length=254)
    postcode: Line | None = Field(None, max_length=16)
    since: When | None = None
    until: When | None = None
    reason: Line = Field("admin invalidation", max_length=200)


class InvalidationResult(BaseModel):
    invalidated: int
