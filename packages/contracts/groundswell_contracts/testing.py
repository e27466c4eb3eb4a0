"""Signature events as signing writes them, for tests and benchmarks that play signing.

A `SignatureCreated` carries its contact sealed under a data key of its own, which
travels apart as `DataKeyIssued`; `signed(...)` makes the pair from plain values so a
test can say `email=...` and still publish what the real producer publishes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from groundswell_contracts.events import (
    BaseEvent,
    DataKeyIssued,
    SignatureCreated,
    SignatureDuplicateAttempted,
)
from groundswell_contracts.sealed import (
    Contact,
    associated_data,
    encode_key,
    new_data_key,
    seal,
)

_CONTACT_FIELDS = ("email", "name", "confirmation_token", "withdraw_token")


@dataclass(frozen=True)
class Signed:
    """A SignatureCreated with the key and contact behind it. Attribute reads fall
    through to the event, then to the contact (`signed.email`, `signed.petition_id`)."""

    event: SignatureCreated
    key: DataKeyIssued
    contact: Contact
    data_key: bytes

    def __getattr__(self, name: str) -> Any:
        if name in _CONTACT_FIELDS:
            return getattr(self.contact, name)
        return getattr(self.event, name)

    @property
    def events(self) -> list[BaseEvent]:
        """What signing's outbox publishes for it, in order: the key, then the event."""
        return [self.key, self.event]

    def again(self, **changes: Any) -> SignatureCreated:
        """The same signature in another event (new id unless given), sealed afresh."""
        fields = self.event.model_dump(exclude={"contact", "legacy_contact"})
        fields.update(event_id=uuid.uuid4())
        fields.update(changes)
        return _sealed_event(SignatureCreated, fields, self.contact, self.data_key)


def _sealed_event(
    model: type[SignatureCreated], fields: dict[str, Any], contact: Contact, key: bytes
) -> SignatureCreated:
    event_id = fields.setdefault("event_id", uuid.uuid4())
    sealed = seal(
        contact,
        key,
        fields["signature_id"],
        associated_data(model.model_fields["event_type"].default, event_id),
    )
    return model(**fields, contact=sealed)


def signed(**fields: Any) -> Signed:
    """`SignatureCreated` fields plus `email`, `name`, `confirmation_token` and
    `withdraw_token` in clear; `status="fraudulent"` gets no contact, as from signing."""
    contact = Contact(**{k: fields.pop(k) for k in _CONTACT_FIELDS if k in fields})
    fields.setdefault("signature_id", uuid.uuid4())
    data_key = new_data_key()
    key = DataKeyIssued(key_id=fields["signature_id"], data_key=encode_key(data_key))
    if fields.get("status") == "fraudulent":
        event = SignatureCreated(**fields)
    else:
        event = _sealed_event(SignatureCreated, fields, contact, data_key)
    return Signed(event, key, contact, data_key)


def duplicate_of(
    original: Signed, *, email: str | None = None, name: str = "", **fields: Any
) -> SignatureDuplicateAttempted:
    """An attempt to sign again with `original`'s address, sealed under its key."""
    event_id = fields.pop("event_id", uuid.uuid4())
    contact = Contact(email=email or original.contact.email, name=name)
    return SignatureDuplicateAttempted(
        event_id=event_id,
        petition_id=fields.pop("petition_id", original.event.petition_id),
        signature_id=original.event.signature_id,
        petition_slug=fields.pop("petition_slug", original.event.petition_slug),
        petition_title=fields.pop("petition_title", original.event.petition_title),
        share_code=original.event.share_code,
        contact=seal(
            contact,
            original.data_key,
            original.event.signature_id,
            associated_data("SignatureDuplicateAttempted", event_id),
        ),
        **fields,
    )
