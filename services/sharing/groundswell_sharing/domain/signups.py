"""A batch of signature events as sharing applies it: runs of `SignatureCreated` together,
every other event alone in its place. No I/O here; entrypoints/handlers.py runs the
plan and adapters/clicks.py writes a run's links with one statement.

Applied one at a time, event i of a run is handled entirely (claim, link, waiting clicks,
referral) before event i+1. A run does each step for all its events at once, so it
gives the same rows only if no event's step reads what a later event of the run writes.
`plan` cuts runs so that this holds:
- an event acted on that is not a `SignatureCreated` (a confirmation, a withdrawal, an
  erasure, a petition) ends the run and is applied alone in its place: it may be about
  a signature of the run, and must see its link, as it would have;
- an event id, signature or share code already in the run starts a new run: within a
  run each appears once, so the set statements never meet a row twice and "the first
  one wins" (ON CONFLICT DO NOTHING) stays what it was one at a time;
- a share code that an earlier event of the run names as its `ref` starts a new run:
  that event's referral, looked up after the run's links are stored, would otherwise
  find a link stored by a later event, which one at a time it could not.
Referrals to links stored earlier in the run find them, as they would have.

Fraudulent signatures are never counted, so they are left out before anything (not even
claimed, as before); events sharing does not act on (duplicates, unknown kinds) neither
end a run nor touch anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from uuid import UUID

from groundswell_contracts.events import (
    AnyEvent,
    PetitionClosed,
    PetitionCreated,
    PetitionUpdated,
    SignatureConfirmed,
    SignatureCreated,
    SignatureErased,
    SignatureInvalidated,
    SignatureWithdrawn,
)

from groundswell_sharing.domain.links import first_name

Item = tuple[AnyEvent, str | None]

# Applied alone, in their place in the batch.
ONE_AT_A_TIME = (
    PetitionCreated,
    PetitionUpdated,
    PetitionClosed,
    SignatureConfirmed,
    SignatureWithdrawn,
    SignatureInvalidated,
    SignatureErased,
)


@dataclass(frozen=True, slots=True)
class NewLink:
    """A signature's share link, as a `SignatureCreated` asks for it."""

    event: SignatureCreated
    correlation_id: str | None
    status: str  # 'counted' | 'pending'
    # Only signers who agreed to the organisers' leaderboard have one on the topic.
    first_name: str | None

    @property
    def referrer_code(self) -> str | None:
        """The share code that brought this signer, if it can be anyone else's."""
        ref = self.event.ref
        return ref if ref and ref != self.event.share_code else None


def new_link(event: SignatureCreated, correlation_id: str | None) -> NewLink | None:
    """None for a fraudulent signature: never counted, so neither its link nor its
    referral may count."""
    if event.status == "fraudulent":
        return None
    return NewLink(
        event=event,
        correlation_id=correlation_id,
        status="counted" if event.status == "signed" else "pending",
        first_name=first_name(event.leaderboard_name or "") or None,
    )


@dataclass
class Run:
    """`SignatureCreated` events whose ids, signatures and codes are distinct, none of
    them named as a `ref` by an earlier one."""

    links: list[NewLink] = field(default_factory=list)
    _seen: set[UUID | str] = field(default_factory=set)
    _refs: set[str] = field(default_factory=set)

    def admits(self, link: NewLink) -> bool:
        # Membership tests, not a set intersection: no throwaway set per event. py-spy put
        # 4.5 % of the service's samples on the intersection's line at 700 signatures/s,
        # far more than its own work; the allocation (and a cyclic GC pass it may set
        # off) is the likely part.
        event = link.event
        seen = self._seen
        return not (
            event.event_id in seen
            or event.signature_id in seen
            or event.share_code in seen
            or event.share_code in self._refs
        )

    def add(self, link: NewLink) -> None:
        event = link.event
        self.links.append(link)
        seen = self._seen
        seen.add(event.event_id)
        seen.add(event.signature_id)
        seen.add(event.share_code)
        if link.referrer_code is not None:
            self._refs.add(link.referrer_code)


@dataclass(frozen=True)
class One:
    event: AnyEvent
    correlation_id: str | None


def plan(items: Iterable[Item]) -> Iterator[Run | One]:
    """The batch's steps, in order (see the module docstring)."""
    run = Run()
    for event, correlation_id in items:
        if isinstance(event, SignatureCreated):
            link = new_link(event, correlation_id)
            if link is None:
                continue
            if not run.admits(link):
                yield run
                run = Run()
            run.add(link)
        elif isinstance(event, ONE_AT_A_TIME):
            if run.links:
                yield run
                run = Run()
            yield One(event, correlation_id)
    if run.links:
        yield run


def clicks_in_order(
    links: Iterable[NewLink], moved: Iterable[tuple[str, str]]
) -> list[tuple[NewLink, str]]:
    """Clicks moved onto the run's links, (share code, channel), as (link, channel) in the
    order of the run's events: the order one at a time would have emitted them."""
    by_code = {link.event.share_code: (n, link) for n, link in enumerate(links)}
    placed = sorted(enumerate(moved), key=lambda click: by_code[click[1][0]][0])
    return [(by_code[code][1], channel) for _, (code, channel) in placed]
