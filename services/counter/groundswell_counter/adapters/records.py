"""Table records as JSON documents (the changelog format).

The format is the durable state of the counter: fields may be added with a default,
never renamed or retyped, or recovery from an existing changelog breaks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast
from uuid import UUID

from groundswell_counter.domain.processing import (
    Change,
    PetitionRecord,
    SignatureRecord,
    Source,
)
from groundswell_counter.domain.tally import Origin, SignatureClass, SignatureFacts, Tally

JsonDict = dict[str, Any]


def signature_to_json(record: SignatureRecord) -> JsonDict:
    facts = record.facts
    origin = facts.origin
    return {
        "id": str(record.signature_id),
        "created_as": facts.created_as,
        "origin": None
        if origin is None
        else [origin.area, origin.country, origin.source, origin.referral],
        "confirmed": facts.confirmed,
        "excluded_by": facts.excluded_by,
        "changes": [[c.source.value, c.offset, c.previous.value] for c in record.changes],
    }


def signature_from_json(doc: JsonDict) -> SignatureRecord:
    origin = doc["origin"]
    return SignatureRecord(
        signature_id=UUID(doc["id"]),
        facts=SignatureFacts(
            created_as=doc["created_as"],
            origin=None if origin is None else Origin(*origin),
            confirmed=doc["confirmed"],
            excluded_by=doc["excluded_by"],
        ),
        changes=tuple(
            Change(Source(source), offset, SignatureClass(previous))
            for source, offset, previous in doc["changes"]
        ),
    )


def petition_to_json(record: PetitionRecord) -> JsonDict:
    tally = record.tally
    return {
        "id": str(record.petition_id),
        "partition": record.partition,
        "slug": record.slug,
        "signatures": tally.signatures,
        "pending": tally.pending,
        "withdrawn": tally.withdrawn,
        "invalidated": tally.invalidated,
        "by_area": dict(tally.by_area),
        "by_country": dict(tally.by_country),
        "by_source": dict(tally.by_source),
        "by_referral": dict(tally.by_referral),
        "goal": record.goal,
        "requested_goal": record.requested_goal,
        "thresholds": list(record.thresholds),
        "auto_raise_goal": record.auto_raise_goal,
        "reached": list(record.reached),
        "applied": dict(record.applied),
        "version": record.version,
        "updated_at": None if record.updated_at is None else record.updated_at.isoformat(),
    }


def petition_from_json(doc: JsonDict) -> PetitionRecord:
    updated_at = doc.get("updated_at")
    return PetitionRecord(
        petition_id=UUID(doc["id"]),
        partition=doc.get("partition"),
        slug=doc.get("slug"),
        tally=Tally(
            signatures=doc["signatures"],
            pending=doc["pending"],
            withdrawn=doc["withdrawn"],
            invalidated=doc["invalidated"],
            by_area=cast(dict[str, int], doc["by_area"]),
            by_country=cast(dict[str, int], doc["by_country"]),
            by_source=cast(dict[str, int], doc["by_source"]),
            by_referral=cast(dict[str, int], doc["by_referral"]),
        ),
        goal=doc.get("goal"),
        requested_goal=doc.get("requested_goal"),
        thresholds=tuple(doc.get("thresholds", ())),
        auto_raise_goal=doc.get("auto_raise_goal", False),
        reached=tuple(doc.get("reached", ())),
        applied=cast(dict[str, int], doc.get("applied", {})),
        version=doc.get("version", 0),
        updated_at=None if updated_at is None else datetime.fromisoformat(updated_at),
    )
