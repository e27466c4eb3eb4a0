"""Signature events with stable ids: the same fact always has the same event_id.

Stable ids let every consumer drop a republished or replayed event by id.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from groundswell_contracts.events import (
    DataKeyIssued,
    DataKeyShredded,
    SignatureConfirmed,
    SignatureCreated,
    SignatureDuplicateAttempted,
    SignatureErased,
    SignatureInvalidated,
    SignatureWithdrawn,
)
from groundswell_contracts.sealed import Contact, associated_data, encode_key, seal
from groundswell_runtime import ids

from groundswell_signing.domain.signatures import first_name


def event_id(signature_id: uuid.UUID, fact: str) -> uuid.UUID:
    return ids.uuid5(signature_id, fact)


def signature_created(
    row: Mapping[str, Any],
    *,
    petition_slug: str,
    petition_title: str,
    confirmation_token: str | None,
    withdraw_token: str | None,
) -> SignatureCreated:
    """The contact details go sealed under the row's data key (none for "fraudulent":
    nobody is written to, and none once erased)."""
    created_id = event_id(row["id"], "created")
    contact = None
    if row["initial_status"] != "fraudulent" and row["data_key"] is not None:
        contact = seal(
            Contact(
                email=row["email"],
                name=first_name(row["name"]),
                confirmation_token=confirmation_token,
                withdraw_token=withdraw_token,
            ),
            row["data_key"],
            row["id"],
            associated_data("SignatureCreated", created_id),
        )
    return SignatureCreated(
        event_id=created_id,
        occurred_at=row["created_at"],
        petition_id=row["petition_id"],
        signature_id=row["id"],
        petition_slug=petition_slug,
        petition_title=petition_title,
        status=row["initial_status"],
        contact=contact,
        contact_consent=row["contact_consent"],
        leaderboard_name=first_name(row["name"]) if row["leaderboard_consent"] else None,
        postcode_area=row["postcode_area"],
        country=row["country"],
        source=row["source"],
        ref=row["ref"],
        ref_channel=row["ref_channel"],
        share_code=row["share_code"],
    )


def duplicate_attempted(
    *,
    petition_id: uuid.UUID,
    petition_slug: str,
    petition_title: str,
    existing: Mapping[str, Any],
    email: str,
    name: str,
) -> SignatureDuplicateAttempted:
    """Told to the address owner by email, sealed under the existing signature's key;
    the person asking learns nothing."""
    attempted_id = uuid.uuid4()  # each attempt is a new fact
    return SignatureDuplicateAttempted(
        event_id=attempted_id,
        petition_id=petition_id,
        signature_id=existing["id"],
        petition_slug=petition_slug,
        petition_title=petition_title,
        contact=seal(
            Contact(email=email, name=first_name(name)),
            existing["data_key"],
            existing["id"],
            associated_data("SignatureDuplicateAttempted", attempted_id),
        ),
        share_code=existing["share_code"],
    )


def data_key_issued(key_id: uuid.UUID, key: bytes, at: Any) -> DataKeyIssued:
    # The same id every time the same key is handed over: the mailer drops repeats.
    return DataKeyIssued(
        event_id=event_id(key_id, "data-key"),
        occurred_at=at,
        key_id=key_id,
        data_key=encode_key(key),
    )


def data_key_shredded(key_id: uuid.UUID, at: Any) -> DataKeyShredded:
    return DataKeyShredded(
        event_id=event_id(key_id, "data-key-shredded"), occurred_at=at, key_id=key_id
    )


def signature_erased(
    signature_id: uuid.UUID, petition_id: uuid.UUID, counted: bool, at: Any
) -> SignatureErased:
    return SignatureErased(
        event_id=event_id(signature_id, "erased"),
        occurred_at=at,
        petition_id=petition_id,
        signature_id=signature_id,
        counted=counted,
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
