"""Sealed contact details and the version-1 upcaster (groundswell_contracts)."""

from __future__ import annotations

import json
import uuid

import pytest
from groundswell_contracts.events import SignatureCreated, encode, parse_event
from groundswell_contracts.sealed import (
    Contact,
    Unreadable,
    associated_data,
    new_data_key,
    seal,
    unseal,
)
from groundswell_contracts.testing import signed
from groundswell_runtime.dead_letters import without_key_material
from pydantic import ValidationError


def test_a_sealed_contact_opens_only_with_its_key_and_in_its_own_event() -> None:
    contact = Contact(email="ada@example.org", name="Ada", withdraw_token="w-1")
    key, event_id = new_data_key(), uuid.uuid4()
    aad = associated_data("SignatureCreated", event_id)
    sealed = seal(contact, key, uuid.uuid4(), aad)
    assert "ada@example.org" not in sealed.model_dump_json()
    assert unseal(sealed, key, aad) == contact
    with pytest.raises(Unreadable):
        unseal(sealed, new_data_key(), aad)  # another signer's key
    with pytest.raises(Unreadable):
        unseal(sealed, key, associated_data("SignatureCreated", uuid.uuid4()))  # moved
    # Two seals of the same contact differ (a fresh nonce each time).
    assert seal(contact, key, uuid.uuid4(), aad).ciphertext != sealed.ciphertext


def test_signature_events_carry_no_contact_in_clear() -> None:
    made = signed(
        petition_id=uuid.uuid4(),
        petition_slug="s",
        petition_title="t",
        status="pending",
        email="grace@navy.example",
        name="Grace Hopper",
        contact_consent=True,
        country="GB",
        share_code="abc",
        confirmation_token="secret-c",
        withdraw_token="secret-w",
    )
    wire = encode(made.event).decode()
    for secret in ("grace@navy.example", "Grace", "secret-c", "secret-w"):
        assert secret not in wire
    assert made.event.schema_version == 2
    assert "data_key" not in repr(made.key) and made.key.data_key not in str(made.key)


def test_version_1_events_are_upcast_with_the_contact_set_aside() -> None:
    v1 = {
        "event_id": str(uuid.uuid4()),
        "event_type": "SignatureCreated",
        "schema_version": 1,
        "occurred_at": "2026-01-01T00:00:00Z",
        "petition_id": str(uuid.uuid4()),
        "signature_id": str(uuid.uuid4()),
        "petition_slug": "s",
        "petition_title": "t",
        "status": "signed",
        "email": "ada@example.org",
        "name": "Ada Lovelace",
        "contact_consent": True,
        "country": "GB",
        "share_code": "abc",
        "withdraw_token": "w-1",
    }
    event = parse_event(json.dumps(v1))
    assert isinstance(event, SignatureCreated)
    assert event.schema_version == 2 and event.contact is None
    assert event.legacy_contact == Contact(
        email="ada@example.org", name="Ada Lovelace", withdraw_token="w-1"
    )
    # Malformed documents still fail as before, upcaster or not.
    with pytest.raises(ValidationError):
        parse_event(json.dumps(v1 | {"status": "nonsense"}))
    with pytest.raises(ValidationError):
        parse_event(b"not json")


def test_a_dead_letter_never_holds_a_data_key() -> None:
    made = signed(
        petition_id=uuid.uuid4(),
        petition_slug="s",
        petition_title="t",
        status="signed",
        email="a@example.org",
        contact_consent=False,
        country="GB",
        share_code="abc",
    )
    stub = without_key_material(encode(made.key))
    assert stub is not None and made.key.data_key.encode() not in stub
    assert json.loads(stub) == {
        "event_type": "DataKeyIssued",
        "key_id": str(made.key.key_id),
        "withheld": True,
    }
    # Anything else is dead-lettered as it came (a poison record must stay explainable).
    for raw in (encode(made.event), b'{"event_type": "DataKey', None):
        assert without_key_material(raw) == raw
