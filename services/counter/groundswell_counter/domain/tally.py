"""What one signature contributes to its petition's counts, and how counts move.

A signature's contribution is a pure function of what is known about it (its
`SignatureFacts`). Every event only ever adds facts, and each fact is set once, so
replaying an event cannot change anything twice. A count changes by the difference
between the contribution before and after an event: this one rule covers
confirmations, withdrawals, invalidations and events that arrive out of order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
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


def learn(facts: SignatureFacts | None, event: SignatureEvent) -> SignatureFacts:
    """The facts after `event`; equal to `facts` when the event teaches nothing new."""
    known = facts if facts is not None else SignatureFacts()
    match event:
        case SignatureCreated():
            if known.created_as is not None:
                return known  # a duplicate or a republish
            return replace(known, created_as=event.status, origin=Origin.of(event))
        case SignatureConfirmed():
            return known if known.confirmed else replace(known, confirmed=True)
        case SignatureWithdrawn():
            return known if known.excluded_by else replace(known, excluded_by="withdrawn")
        case SignatureInvalidated():
            return known if known.excluded_by else replace(known, excluded_by="invalidated")
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
        match cls:
            case SignatureClass.UNKNOWN | SignatureClass.FRAUDULENT:
                return self
            case SignatureClass.PENDING:
                return replace(self, pending=self.pending + delta)
            case SignatureClass.WITHDRAWN:
                return replace(self, withdrawn=self.withdrawn + delta)
            case SignatureClass.INVALIDATED:
                return replace(self, invalidated=self.invalidated + delta)
            case SignatureClass.COUNTED:
                # Only a created signature can be counted, and creation sets the origin.
                assert origin is not None, "a counted signature always has an origin"
                return replace(
                    self,
                    signatures=self.signatures + delta,
                    by_area=_moved(self.by_area, origin.area, delta),
                    by_country=_moved(self.by_country, origin.country, delta),
                    by_source=_moved(self.by_source, origin.source, delta),
                    by_referral=_moved(self.by_referral, origin.referral, delta),
                )
            case _:
                assert_never(cls)
