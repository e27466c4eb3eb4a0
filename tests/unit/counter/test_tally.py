"""Counting rules for one signature and one petition's tally (pure, no I/O)."""

from __future__ import annotations

import uuid

import pytest
from groundswell_contracts.events import (
    SignatureConfirmed,
    SignatureCreated,
    SignatureInvalidated,
    SignatureWithdrawn,
)
from groundswell_counter.domain.tally import (
    Origin,
    SignatureClass,
    SignatureFacts,
    Tally,
    learn,
)

PETITION = uuid.uuid4()


def created(sig: uuid.UUID, status: str = "signed", **overrides: object) -> SignatureCreated:
    fields: dict[str, object] = {
        "petition_id": PETITION,
        "signature_id": sig,
        "petition_slug": "owls",
        "petition_title": "Save the owls",
        "status": status,
        "contact_consent": False,
        "postcode_area": "OX",
        "country": "GB",
        "share_code": "abc",
        "withdraw_token": "w",
    }
    fields.update(overrides)
    return SignatureCreated.model_validate(fields)


def classify(*events: object) -> SignatureClass:
    facts: SignatureFacts | None = None
    for event in events:
        facts = learn(facts, event)  # type: ignore[arg-type]
    assert facts is not None
    return facts.classification


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("signed", SignatureClass.COUNTED),
        ("pending", SignatureClass.PENDING),
        ("fraudulent", SignatureClass.FRAUDULENT),
    ],
)
def test_creation_status_decides_the_first_class(status: str, expected: SignatureClass) -> None:
    assert classify(created(uuid.uuid4(), status)) == expected


def test_confirmation_moves_pending_to_counted() -> None:
    sig = uuid.uuid4()
    confirm = SignatureConfirmed(petition_id=PETITION, signature_id=sig)
    assert classify(created(sig, "pending"), confirm) == SignatureClass.COUNTED


def test_fraudulent_is_never_counted_even_when_confirmed() -> None:
    sig = uuid.uuid4()
    confirm = SignatureConfirmed(petition_id=PETITION, signature_id=sig)
    assert classify(created(sig, "fraudulent"), confirm) == SignatureClass.FRAUDULENT


def test_withdrawal_and_invalidation_exclude_and_the_first_exclusion_wins() -> None:
    sig = uuid.uuid4()
    withdraw = SignatureWithdrawn(petition_id=PETITION, signature_id=sig)
    invalidate = SignatureInvalidated(petition_id=PETITION, signature_id=sig, reason="ip")
    assert classify(created(sig), withdraw, invalidate) == SignatureClass.WITHDRAWN
    assert classify(created(sig), invalidate, withdraw) == SignatureClass.INVALIDATED
    assert classify(created(sig, "pending"), invalidate) == SignatureClass.INVALIDATED


def test_follow_ups_before_creation_are_remembered() -> None:
    sig = uuid.uuid4()
    confirm = SignatureConfirmed(petition_id=PETITION, signature_id=sig)
    withdraw = SignatureWithdrawn(petition_id=PETITION, signature_id=sig)
    assert classify(confirm) == SignatureClass.UNKNOWN
    assert classify(confirm, created(sig, "pending")) == SignatureClass.COUNTED
    assert classify(withdraw, created(sig)) == SignatureClass.WITHDRAWN


def test_repeated_events_teach_nothing() -> None:
    sig = uuid.uuid4()
    first = learn(None, created(sig, "pending"))
    confirmed = learn(first, SignatureConfirmed(petition_id=PETITION, signature_id=sig))
    assert learn(first, created(sig, "signed")) == first  # a duplicate creation
    assert learn(confirmed, SignatureConfirmed(petition_id=PETITION, signature_id=sig)) == confirmed


def test_origin_buckets() -> None:
    sig = uuid.uuid4()
    assert Origin.of(created(sig, source="tw", ref="abc")) == Origin("OX", "GB", "tw", "referral")
    assert Origin.of(created(sig, postcode_area=None)) == Origin("unknown", "GB", "none", "direct")


def test_tally_moves_counts_and_breakdowns_together() -> None:
    origin = Origin("OX", "GB", "tw", "direct")
    tally = Tally().moved(SignatureClass.UNKNOWN, SignatureClass.PENDING, origin)
    assert (tally.signatures, tally.pending) == (0, 1)
    assert tally.by_area == {}  # breakdowns cover counted signatures only
    tally = tally.moved(SignatureClass.PENDING, SignatureClass.COUNTED, origin)
    assert (tally.signatures, tally.pending) == (1, 0)
    assert tally.by_area == {"OX": 1} and tally.by_source == {"tw": 1}
    assert tally.by_country == {"GB": 1} and tally.by_referral == {"direct": 1}
    tally = tally.moved(SignatureClass.COUNTED, SignatureClass.WITHDRAWN, origin)
    assert (tally.signatures, tally.withdrawn) == (0, 1)
    assert tally.by_area == {} and tally.by_country == {}  # empty buckets disappear
    assert tally.moved(SignatureClass.WITHDRAWN, SignatureClass.WITHDRAWN, origin) is tally


def test_fraudulent_and_unknown_contribute_nothing() -> None:
    origin = Origin("OX", "GB", "none", "direct")
    assert Tally().moved(SignatureClass.UNKNOWN, SignatureClass.FRAUDULENT, origin) == Tally()
