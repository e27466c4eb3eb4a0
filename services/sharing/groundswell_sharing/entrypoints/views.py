"""What the stats endpoints answer: the public view names nobody, the organisers' view does.

Both come from the same tallies; the only difference is whether a referrer is shown as a
rank or as a rank with a first name and share code.
"""

from __future__ import annotations

import asyncpg
from fastapi import HTTPException
from pydantic import BaseModel, Field

from groundswell_sharing.adapters import repository as repo
from groundswell_sharing.domain import stats
from groundswell_sharing.domain.links import possible_slug

VIRAL_COEFFICIENT_DOC = (
    "Signatures that came through a signer's share link divided by the petition's "
    "counted signers (signatures_via_referrals / signers). 0.25 means one signer in four "
    "was brought in by another signer's link; at 1.0 each signer brings in one more on "
    "average, and above 1.0 sharing alone keeps the petition growing. 0 when nobody has "
    "signed yet."
)
UNKNOWN_PETITION = "No petition with this slug is known to the sharing service"


class ChannelStats(BaseModel):
    clicks: int = Field(description="Clicks on share links shared through this channel")
    signatures: int = Field(description="Counted signatures referred through this channel")


class RankedReferrer(BaseModel):
    rank: int = Field(description="1 for the link that brought the most signatures (then clicks)")
    clicks: int
    signatures: int


class NamedReferrer(RankedReferrer):
    first_name: str | None = Field(
        description="The sharer's first name (null when they gave none); organisers only"
    )
    share_code: str = Field(description="The sharer's link is /s/{share_code}")


class _ShareTotals(BaseModel):
    slug: str
    clicks: int = Field(
        description="Counted clicks on share links: people (robots excluded), once per "
        "network per link per day, within each network's hourly budget"
    )
    signatures_via_referrals: int = Field(
        description="Counted signatures that came through a signer's share link"
    )
    signers: int = Field(description="Counted signatures (the coefficient's denominator)")
    by_channel: dict[str, ChannelStats] = Field(
        description="Per channel (email, whatsapp, facebook, x, copy, direct, other, "
        "unknown): clicks and referred signatures"
    )
    by_source: dict[str, int] = Field(description="Counted signatures per campaign `source` code")
    viral_coefficient: float = Field(description=VIRAL_COEFFICIENT_DOC)


class ShareStats(_ShareTotals):
    top_referrers: list[RankedReferrer] = Field(
        description="The busiest share links by rank and counts only: no names, no codes"
    )


class AdminShareStats(_ShareTotals):
    top_referrers: list[NamedReferrer]


class LeaderboardEntry(BaseModel):
    slug: str
    title: str
    signatures_via_referrals: int
    clicks: int
    viral_coefficient: float = Field(description=VIRAL_COEFFICIENT_DOC)


class Leaderboard(BaseModel):
    petitions: list[LeaderboardEntry]


async def petition_or_404(
    pool: asyncpg.Pool, slug: str, referrer_limit: int
) -> tuple[str, repo.PetitionTallies]:
    """Checked before any query: a NUL or a lone surrogate would make PostgreSQL fail."""
    if not possible_slug(slug):
        raise HTTPException(status_code=404, detail=UNKNOWN_PETITION)
    petition = await repo.petition_by_slug(pool, slug)
    if petition is None:
        raise HTTPException(status_code=404, detail=UNKNOWN_PETITION)
    return petition[1], await repo.petition_tallies(pool, petition[0], referrer_limit)


def _totals(slug: str, tallies: repo.PetitionTallies) -> dict[str, object]:
    channels = stats.by_channel(tallies.clicks_by_channel, tallies.signatures_by_channel)
    referred = sum(tallies.signatures_by_channel.values())
    return {
        "slug": slug,
        "clicks": sum(tallies.clicks_by_channel.values()),
        "signatures_via_referrals": referred,
        "signers": tallies.signers,
        "by_channel": {
            name: ChannelStats(clicks=t.clicks, signatures=t.signatures)
            for name, t in channels.items()
        },
        "by_source": tallies.by_source,
        "viral_coefficient": stats.viral_coefficient(referred, tallies.signers),
    }


def public_stats(slug: str, tallies: repo.PetitionTallies, limit: int) -> ShareStats:
    ranked = stats.top_referrers(tallies.referrers, limit)
    return ShareStats.model_validate(
        _totals(slug, tallies)
        | {
            "top_referrers": [
                RankedReferrer(rank=i, clicks=t.clicks, signatures=t.signatures)
                for i, t in enumerate(ranked, start=1)
            ]
        }
    )


def admin_stats(slug: str, tallies: repo.PetitionTallies, limit: int) -> AdminShareStats:
    ranked = stats.top_referrers(tallies.referrers, limit)
    return AdminShareStats.model_validate(
        _totals(slug, tallies)
        | {
            "top_referrers": [
                NamedReferrer(
                    rank=i,
                    first_name=t.first_name,
                    share_code=t.share_code,
                    clicks=t.clicks,
                    signatures=t.signatures,
                )
                for i, t in enumerate(ranked, start=1)
            ]
        }
    )
