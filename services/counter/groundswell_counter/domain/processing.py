"""Applying source events to the stored state, exactly once, with no transactions.

Delivery is at least once: after a crash or a rebalance events are read again, and
the outbox may publish the same event twice at different offsets. The state lives
in two kinds of records, written to one ordered log (the table changelog partition
of the events' own source partition):

- a signature's record: its facts, plus every change of class it went through,
  each with the source offset that caused it and the class before it (a signature
  changes at most three times: created, confirmed, excluded);
- a petition's record: the counts, plus the last applied offset per source.

The worker writes each changed signature record as it applies an event, and each
changed petition record once per batch, after the signature records of the batch;
offsets are committed only after a batch's writes are durable. What survives a
crash is a prefix of the log, so re-reading an event at offset `o` meets one of
three states, each with one right answer:

- the petition record has applied `o` (or later): everything landed; skip;
- the signature record lists a change made at `o`: that write landed but the
  petition write covering it did not; replay the count change from the history;
- neither: nothing from `o` on landed; process normally.

An event already reflected in the signature's facts (a duplicate SignatureCreated, a
second confirmation) changes nothing and writes nothing, so it is harmless however
often it comes. Offsets are comparable because every event of a petition is keyed by
the petition id and so shares one partition per topic; an event on any other
partition cannot be checked this way and is rejected (`MisroutedEvent`).

The worker also records, after the petition records of a batch, the last offset it
applied per source partition (its watermark). A record at or below it is a replay
and is skipped without being read; a record beyond the next one means records were
skipped over, and they are read back and applied first (`delivery`). This relies on
nothing but Kafka's order within a partition, which faust does not always preserve
around a rebalance. Watermarks are only good for the log they were taken from: a
replayed record that shows the broker lost that log (`from_lost_log`) stops the
worker, whose restart rebuilds everything from what the new log holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from groundswell_contracts.events import (
    AnyEvent,
    PetitionClosed,
    PetitionCreated,
    PetitionState,
    PetitionUpdated,
    SignatureConfirmed,
    SignatureCreated,
    SignatureDuplicateAttempted,
    SignatureInvalidated,
    SignatureWithdrawn,
)

from groundswell_counter.domain.milestones import MilestoneHit, MilestonePolicy, progress
from groundswell_counter.domain.tally import (
    SignatureClass,
    SignatureEvent,
    SignatureFacts,
    Tally,
    learn,
)


class Source(StrEnum):
    """The topics the counter reads, by role (their names may carry a prefix)."""

    SIGNATURES = "signatures"
    PETITIONS = "petitions"


@dataclass(frozen=True, slots=True)
class Position:
    source: Source
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Change:
    """The signature changed class when the event at (`source`, `offset`) was applied."""

    source: Source
    offset: int
    previous: SignatureClass


@dataclass(frozen=True, slots=True)
class SignatureRecord:
    signature_id: UUID
    facts: SignatureFacts
    changes: tuple[Change, ...] = ()

    def transition_at(self, at: Position) -> tuple[SignatureClass, SignatureClass] | None:
        """The (before, after) classes of the change made by the event at `at`, if any."""
        for index, change in enumerate(self.changes):
            if change.source == at.source and change.offset == at.offset:
                following = self.changes[index + 1 : index + 2]
                after = following[0].previous if following else self.facts.classification
                return change.previous, after
        return None


@dataclass(frozen=True, slots=True)
class PetitionRecord:
    petition_id: UUID
    partition: int | None = None
    slug: str | None = None
    tally: Tally = field(default_factory=Tally)
    # The goal in force (possibly raised) and the one the organiser asked for.
    goal: int | None = None
    requested_goal: int | None = None
    thresholds: tuple[int, ...] = ()
    auto_raise_goal: bool = False
    reached: tuple[int, ...] = ()
    applied: Mapping[str, int] = field(default_factory=dict)
    # Bumped on every change anyone can see: orders snapshots of one petition.
    version: int = 0
    updated_at: datetime | None = None

    def applied_offset(self, source: Source) -> int:
        return self.applied.get(source.value, -1)


class Outcome(StrEnum):
    APPLIED = "applied"
    ALREADY_APPLIED = "already_applied"
    NO_CHANGE = "no_change"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class Step:
    """What to write: milestones are announced (and acknowledged) first, then the
    signature record; the petition record may wait for the end of the batch."""

    outcome: Outcome
    signature: SignatureRecord | None = None
    petition: PetitionRecord | None = None
    milestones: tuple[MilestoneHit, ...] = ()


class MisroutedEvent(Exception):
    """An event arrived on a partition other than its petition's: it cannot be deduplicated."""


class Delivery(StrEnum):
    """Where a delivered offset falls against the partition's applied watermark."""

    REPLAY = "replay"  # at or below the watermark: applied before, skip it
    NEXT = "next"  # the one after the watermark (or the first ever seen)
    GAP = "gap"  # beyond the next one: records in between were never delivered


def delivery(offset: int, applied_upto: int | None) -> Delivery:
    """Classify a delivered source offset.

    Kafka delivers a partition in order, but faust has been seen here to skip
    records around a rebalance (and then commit past them); offsets are how
    replays are recognised, so a gap must be filled before the record after it.
    """
    if applied_upto is None or offset == applied_upto + 1:
        return Delivery.NEXT
    if offset <= applied_upto:
        return Delivery.REPLAY
    return Delivery.GAP


def from_lost_log(
    offset: int,
    timestamp: float | None,
    highwater: int | None,
    applied_upto: int,
    applied_timestamp: float | None,
) -> bool:
    """True when a record at or below the watermark cannot belong to the log the
    watermark was taken from: the broker lost the partition and started it again.

    A Kafka log only grows, so the high-water mark of the log a record is read from
    is above every offset ever applied from it; and the record at the watermark's own
    offset is the one applied, with the same timestamp. A broker restarted empty
    (the local broker keeps everything in memory; a lost cluster) breaks one or the
    other as soon as the new log is read from its start. Its records must then be
    counted, not skipped as replays: the state built from the lost log has to go.
    """
    if highwater is not None and highwater <= applied_upto:
        return True
    return (
        offset == applied_upto
        and timestamp is not None
        and applied_timestamp is not None
        and timestamp != applied_timestamp
    )


def signature_key(signature_id: UUID) -> str:
    return f"s:{signature_id}"


def petition_key(petition_id: UUID) -> str:
    return f"p:{petition_id}"


def watermark_key(source: Source, partition: int) -> str:
    """The record holding the last offset applied from one source partition."""
    return f"o:{source.value}:{partition}"


def process(
    event: AnyEvent,
    at: Position,
    petition: PetitionRecord | None,
    signature: SignatureRecord | None,
    *,
    policy: MilestonePolicy,
    now: datetime,
) -> Step:
    """Decide the writes for `event` read at `at`, given the records stored so far.

    `signature` is the stored record of the event's signature (None if the event
    concerns no signature or the signature is new).
    """
    if (
        petition is not None
        and petition.partition is not None
        and petition.partition != at.partition
    ):
        raise MisroutedEvent(
            f"petition lives on partition {petition.partition}, event arrived on {at.partition}"
        )
    if petition is not None and at.offset <= petition.applied_offset(at.source):
        return Step(Outcome.ALREADY_APPLIED)
    match event:
        case (
            SignatureCreated()
            | SignatureConfirmed()
            | SignatureWithdrawn()
            | SignatureInvalidated()
        ):
            return _signature_step(event, at, petition, signature, policy, now)
        case PetitionCreated() | PetitionUpdated() | PetitionClosed():
            return _petition_step(event, at, petition, policy, now)
        case SignatureDuplicateAttempted():
            # Counts nothing; it only tells us the slug of a petition we have not met.
            if petition is not None and petition.slug is not None:
                return Step(Outcome.NO_CHANGE)
            base = petition or PetitionRecord(event.petition_id)
            return Step(Outcome.APPLIED, petition=_touched(base, at, now, slug=event.petition_slug))
        case _:
            return Step(Outcome.IGNORED)


def _signature_step(
    event: SignatureEvent,
    at: Position,
    petition: PetitionRecord | None,
    signature: SignatureRecord | None,
    policy: MilestonePolicy,
    now: datetime,
) -> Step:
    new_signature: SignatureRecord | None = None
    landed = signature.transition_at(at) if signature is not None else None
    if landed is not None:
        # This event's signature write survived a crash; the petition write did not.
        assert signature is not None
        (before, after), facts = landed, signature.facts
    else:
        known = signature.facts if signature is not None else None
        facts = learn(known, event)
        if facts == known:
            return Step(Outcome.NO_CHANGE)
        before = known.classification if known is not None else SignatureClass.UNKNOWN
        after = facts.classification
        history = signature.changes if signature is not None else ()
        new_signature = SignatureRecord(
            event.signature_id, facts, (*history, Change(at.source, at.offset, before))
        )
    base = petition or PetitionRecord(event.petition_id)
    slug = event.petition_slug if isinstance(event, SignatureCreated) else None
    updated = _touched(
        base, at, now, slug=base.slug or slug, tally=base.tally.moved(before, after, facts.origin)
    )
    updated, hits = _with_milestones(updated, policy)
    return Step(Outcome.APPLIED, signature=new_signature, petition=updated, milestones=hits)


def _petition_step(
    event: PetitionState,
    at: Position,
    petition: PetitionRecord | None,
    policy: MilestonePolicy,
    now: datetime,
) -> Step:
    base = petition or PetitionRecord(event.petition_id)
    updated = _touched(base, at, now, slug=event.slug)
    if event.goal != base.requested_goal:
        # A new goal from the organiser replaces any goal we raised from the old one.
        updated = replace(updated, goal=event.goal, requested_goal=event.goal)
    updated = replace(
        updated,
        thresholds=tuple(sorted(set(event.milestones))),
        auto_raise_goal=event.auto_raise_goal,
    )
    updated, hits = _with_milestones(updated, policy)
    return Step(Outcome.APPLIED, petition=updated, milestones=hits)


def _touched(
    record: PetitionRecord,
    at: Position,
    now: datetime,
    *,
    slug: str | None,
    tally: Tally | None = None,
) -> PetitionRecord:
    # One constructor call rather than dataclasses.replace: this runs for every event.
    return PetitionRecord(
        petition_id=record.petition_id,
        partition=at.partition,
        slug=slug,
        tally=record.tally if tally is None else tally,
        goal=record.goal,
        requested_goal=record.requested_goal,
        thresholds=record.thresholds,
        auto_raise_goal=record.auto_raise_goal,
        reached=record.reached,
        applied={**record.applied, at.source.value: at.offset},
        version=record.version + 1,
        updated_at=now,
    )


def _nothing_due(record: PetitionRecord, policy: MilestonePolicy) -> bool:
    """True when `progress` would leave the record as it is: no threshold or goal is
    newly reached, and no reached goal waits to be raised. Checked first because it is
    the answer for almost every event, and far cheaper than `progress`."""
    signatures = record.tally.signatures
    reached = record.reached
    for threshold in record.thresholds or policy.default_thresholds:
        if 0 < threshold <= signatures and threshold not in reached:
            return False
    goal = record.goal
    return not (
        goal is not None
        and 0 < goal <= signatures
        and (record.auto_raise_goal or goal not in reached)
    )


def _with_milestones(
    record: PetitionRecord, policy: MilestonePolicy
) -> tuple[PetitionRecord, tuple[MilestoneHit, ...]]:
    if _nothing_due(record, policy):
        return record, ()
    result = progress(
        record.tally.signatures,
        thresholds=record.thresholds or policy.default_thresholds,
        goal=record.goal,
        auto_raise_goal=record.auto_raise_goal,
        reached=record.reached,
    )
    return replace(record, goal=result.goal, reached=result.reached), result.hits
