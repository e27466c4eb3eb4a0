"""Signature events with stable ids: the same fact always has the same event_id.

Stable ids let every consumer drop a republished or replayed event by id.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from groundswell_contracts.events import (
    SignatureConfirmed,
    SignatureCreated,
    SignatureInvalidated,
    SignatureWithdrawn,
)

from groundswell_signing.domain.signatures import first_name


def event_id(signature_id: uuid.UUID, fact: str) -> uuid.UUID:
    return uuid.uuid5(signature_id, fact)


def signature_created(
    row: Mapping[str, Any],
    *,
    petition_slug: str,
    petition_title: str,
    confirmation_token: str | None,
    withdraw_token: str | None,
) -> SignatureCreated:
    return SignatureCreated(
        event_id=event_id(row["id"], "created"),
        occurred_at=row["created_at"],
        petition_id=row["petition_id"],
        signature_id=row["id"],
        petition_slug=petition_slug,
        petition_title=petition_title,
        status=row["initial_status"],
        email=row["email"],
        name=first_name(row["name"]),
        contact_consent=row["contact_consent"],
        postcode_area=row["postcode_area"],
        country=row["country"],
        source=row["source"],
        ref=row["ref"],
        ref_channel=row["ref_channel"],
        share_code=row["share_code"],
        confirmation_token=confirmation_token,
        withdraw_token=withdraw_token,
    )


def signature_confirmed(
    signature_id: uuid.UUID, petition_id: uuid.UUID, at: Any
) -> SignatureConfirmed:
    return SignatureConfirmed(
        event_id=event_id(signature_id, "confirmed"),
        occurred_at=at,
        petition_id=petition_id,
        signature_id=signature_id,
    )


def signature_withdrawn(
    signature_id: uuid.UUID, petition_id: uuid.UUID, at: Any
) -> SignatureWithdrawn:
    return SignatureWithdrawn(
        event_id=event_id(signature_id, "withdrawn"),
        occurred_at=at,
        petition_id=petition_id,
        signature_id=signature_id,
    )


def signature_invalidated(
    signature_id: uuid.UUID, petition_id: uuid.UUID, reason: str, at: Any
) -> SignatureInvalidated:
    return SignatureInvalidated(
        event_id=event_id(signature_id, "invalidated"),
        occurred_at=at,
        petition_id=petition_id,
        signature_id=signature_id,
        reason=reason,
    )
