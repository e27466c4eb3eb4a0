"""Sharing statistics from per-channel and per-referrer tallies."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ChannelTally:
    clicks: int = 0
    signatures: int = 0


@dataclass(frozen=True)
class ReferrerTally:
    """One counted signer's share link. The first name and code are for organisers only:
    the public stats show a rank and the two counts, nothing that names a person."""

    share_code: str
    first_name: str | None
    clicks: int
    signatures: int


def viral_coefficient(signatures_via_referrals: int, signers: int) -> float:
    """Signatures that came through a signer's share link, per counted signer.

    0.25: one signer in four was brought in by another signer's link. At 1.0 every
    signer brings in one more on average; above it, sharing alone grows the petition.
    """
    if signers <= 0:
        return 0.0
    return round(signatures_via_referrals / signers, 4)


def by_channel(clicks: Mapping[str, int], signatures: Mapping[str, int]) -> dict[str, ChannelTally]:
    channels = sorted(set(clicks) | set(signatures))
    return {c: ChannelTally(clicks.get(c, 0), signatures.get(c, 0)) for c in channels}


def top_referrers(tallies: Iterable[ReferrerTally], limit: int) -> list[ReferrerTally]:
    """Most referred signatures first, then most clicks; links with neither are left out.

    The rank is the position in this list (1-based). A signer whose name is blank still
    ranks: the ranking is about links, and names are shown to organisers only.
    """
    active = [t for t in tallies if t.clicks or t.signatures]
    active.sort(key=lambda t: (-t.signatures, -t.clicks))
    return active[:limit]
