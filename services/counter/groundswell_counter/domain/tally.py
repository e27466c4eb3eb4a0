"""What one signature contributes to its petition's counts, and how counts move.

A signature's contribution is a pure function of what is known about it (its
`SignatureFacts`). Every event only ever adds facts, and each fact is set once, so
replaying an event cannot change anything twice. A count changes by the difference
between the contribution before and after an event: this one rule covers
confirmations, withdrawals, invalidations and events that arrive out of order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, assert_never

from groundswell_contracts.events import (
    SignatureConfirmed,
    SignatureCreated,
    SignatureInvalidated,
    SignatureStatus,
    SignatureWithdrawn,
)

SignatureEvent = SignatureCreated | SignatureConfirmed | SignatureWithdrawn | SignatureInvalidated
Exclusion = Literal["withdrawn", "invalidated"]

UNKNOWN_AREA = "unknown"
NO_SOURCE = "none"
REFERRAL = "referral"
DIRECT = "direct"


class SignatureClass(StrEnum):
    # Follow-up events were seen before the signature itself: nothing to count yet.
    UNKNOWN = "unknown"
    PENDING = "pending"
    COUNTED = "counted"
    FRAUDULENT = "fraudulent"
    WITHDRAWN = "withdrawn"
    INVALIDATED = "invalidated"


@dataclass(frozen=True, slots=True)
class Origin:
    """The breakdown buckets a counted signature falls in."""

    area: str
    country: str
    source: str
    referral: str

    @classmethod
    def of(cls, event: SignatureCreated) -> Origin:
        return cls(
            area=event.postcode_area or UNKNOWN_AREA,
            country=event.country,
            source=event.source or NO_SOURCE,
            referral=REFERRAL if event.ref else DIRECT,
        )


@dataclass(frozen=True, slots=True)
class SignatureFacts:
    created_as: SignatureStatus | None = None
    origin: Origin | None = None
    confirmed: bool = False
    # The first exclusion wins: a withdrawn signature later invalidated stays "withdrawn".
    excluded_by: Exclusion | None = None

    @property
    def classification(self) -> SignatureClass:
        if self.created_as is None:
            return SignatureClass.UNKNOWN
        if self.created_as == "fraudulent":
            return SignatureClass.FRAUDULENT
        if self.excluded_by == "withdrawn":
            return SignatureClass.WITHDRAWN
        if self.excluded_by == "invalidated":
            return SignatureClass.INVALIDATED
        if self.created_as == "signed" or self.confirmed:
            return SignatureClass.COUNTED
        return SignatureClass.PENDING


_NO_FACTS = SignatureFacts()


def learn(facts: SignatureFacts | None, event: SignatureEvent) -> SignatureFacts:
    """The facts after `event`; equal to `facts` when the event teaches nothing new."""
    # Plain constructors rather than dataclasses.replace: this runs for every event,
    # and replace() costs several times as much (it inspects the fields each call).
    known = facts if facts is not None else _NO_FACTS
    match event:
        case SignatureCreated():
            if known.created_as is not None:
                return known  # a duplicate or a republish
            return SignatureFacts(
                event.status, Origin.of(event), known.confirmed, known.excluded_by
            )
        case SignatureConfirmed():
            if known.confirmed:
                return known
            return SignatureFacts(known.created_as, known.origin, True, known.excluded_by)
        case SignatureWithdrawn():
            if known.excluded_by:
                return known
            return SignatureFacts(known.created_as, known.origin, known.confirmed, "withdrawn")
        case SignatureInvalidated():
            if known.excluded_by:
                return known
            return SignatureFacts(known.created_as, known.origin, known.confirmed, "invalidated")
        case _:
            assert_never(event)


def _moved(buckets: Mapping[str, int], key: str, delta: int) -> dict[str, int]:
    moved = dict(buckets)
    value = moved.get(key, 0) + delta
    if value:
        moved[key] = value
    else:
        moved.pop(key, None)
    return moved


@dataclass(frozen=True, slots=True)
class Tally:
    signatures: int = 0
    pending: int = 0
    withdrawn: int = 0
    invalidated: int = 0
    by_area: Mapping[str, int] = field(default_factory=dict)
    by_country: Mapping[str, int] = field(default_factory=dict)
    by_source: Mapping[str, int] = field(default_factory=dict)
    by_referral: Mapping[str, int] = field(default_factory=dict)

    def moved(self, before: SignatureClass, after: SignatureClass, origin: Origin | None) -> Tally:
        """The tally once one signature goes from class `before` to class `after`."""
        if before == after:
            return self
        return self._with(before, -1, origin)._with(after, +1, origin)

    def _with(self, cls: SignatureClass, delta: int, origin: Origin | None) -> Tally:
        # Constructors rather than dataclasses.replace: see `learn`.
        match cls:
            case SignatureClass.UNKNOWN | SignatureClass.FRAUDULENT:
                return self
            case SignatureClass.PENDING:
                return Tally(
                    self.signatures,
                    self.pending + delta,
                    self.withdrawn,
                    self.invalidated,
                    self.by_area,
                    self.by_country,
                    self.by_source,
                    self.by_referral,
                )
            case SignatureClass.WITHDRAWN:
                return Tally(
                    self.signatures,
                    self.pending,
                    self.withdrawn + delta,
                    self.invalidated,
                    self.by_area,
                    self.by_country,
                    self.by_source,
                    self.by_referral,
                )
            case SignatureClass.INVALIDATED:
                return Tally(
                    self.signatures,
                    self.pending,
                    self.withdrawn,
                    self.invalidated + delta,
                    self.by_area,
                    self.by_country,
                    self.by_source,
                    self.by_referral,
                )
            case SignatureClass.COUNTED:
                # Only a created signature can be counted, and creation sets the origin.
                assert origin is not None, "a counted signature always has an origin"
                return Tally(
                    self.signatures + delta,
                    self.pending,
                    self.withdrawn,
                    self.invalidated,
                    _moved(self.by_area, origin.area, delta),
                    _moved(self.by_country, origin.country, delta),
                    _moved(self.by_source, origin.source, delta),
                    _moved(self.by_referral, origin.referral, delta),
                )
            case _:
                assert_never(cls)


OTHER_SOURCES = "other"


def top_buckets(buckets: Mapping[str, int], limit: int) -> dict[str, int]:
    """The `limit` largest buckets, and the rest summed under "other".

    Signers choose their `source`, so a petition can gather any number of them; the
    public count keeps its size bounded this way. Ties go by name so that every
    worker renders the same document. A source literally named "other" is merged
    with the remainder.
    """
    if len(buckets) <= limit:
        return dict(buckets)
    ranked = sorted(buckets.items(), key=lambda item: (-item[1], item[0]))
    kept = {name: count for name, count in ranked[:limit] if name != OTHER_SOURCES}
    rest = sum(count for name, count in buckets.items() if name not in kept)
    kept[OTHER_SOURCES] = rest
    return kept
