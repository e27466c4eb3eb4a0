"""Outgoing events: count snapshots and milestones, built from petition records."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid5

from groundswell_contracts.events import MilestoneReached, PetitionCountChanged

from groundswell_counter.domain.milestones import MilestoneHit, milestone_event_id
from groundswell_counter.domain.processing import PetitionRecord
from groundswell_counter.domain.tally import top_buckets

DEFAULT_SOURCE_LIMIT = 20


def count_snapshot(
    record: PetitionRecord, *, source_limit: int = DEFAULT_SOURCE_LIMIT
) -> PetitionCountChanged:
    """The public snapshot of a petition record; `by_source` keeps its `source_limit`
    largest sources and sums the rest under "other" (the record keeps them all)."""
    tally = record.tally
    # Built without validation: every value comes from our own record, and this runs
    # for every changed petition up to ten times a second (validation was half its cost).
    return PetitionCountChanged.model_construct(
        # One id per petition version: a snapshot published again is recognisably the same.
        event_id=uuid5(record.petition_id, f"count:{record.version}"),
        occurred_at=record.updated_at or datetime.now(UTC),
        petition_id=record.petition_id,
        slug=record.slug,
        signatures=tally.signatures,
        pending=tally.pending,
        withdrawn=tally.withdrawn,
        invalidated=tally.invalidated,
        by_area=dict(tally.by_area),
        by_country=dict(tally.by_country),
        by_source=top_buckets(tally.by_source, source_limit),
        by_referral=dict(tally.by_referral),
        goal=record.goal,
        milestones=list(record.reached),
    )


def milestone_reached(record: PetitionRecord, hit: MilestoneHit) -> MilestoneReached:
    return MilestoneReached(
        event_id=milestone_event_id(record.petition_id, hit.threshold),
        occurred_at=record.updated_at or datetime.now(UTC),
        petition_id=record.petition_id,
        slug=record.slug,
        threshold=hit.threshold,
        signatures=hit.signatures,
    )
