"""How a batch is cut into runs of new signatures and events applied alone
(groundswell_sharing.domain.signups), without I/O."""

from __future__ import annotations

import uuid
from typing import Any

from groundswell_contracts.events import (
    AnyEvent,
    SignatureConfirmed,
    SignatureCreated,
)
from groundswell_contracts.testing import duplicate_of, signed
from groundswell_sharing.domain.signups import One, Run, clicks_in_order, new_link, plan

PETITION = uuid.uuid4()


def created(**fields: Any) -> SignatureCreated:
    return signed(**_fields(**fields)).event


def _fields(**fields: Any) -> dict[str, Any]:
    unique = uuid.uuid4().hex[:8]
    defaults: dict[str, Any] = {
        "petition_id": PETITION,
        "petition_slug": "clean-rivers",
        "petition_title": "Clean rivers",
        "status": "signed",
        "email": f"{unique}@example.test",
        "name": "Ada Lovelace",
        "country": "GB",
        "contact_consent": False,
        "share_code": f"c{unique}",
    }
    return defaults | fields


def shape(events: list[AnyEvent]) -> list[Any]:
    """Each step as the list of its events' indexes (a run) or the index alone (one)."""
    index = {id(event): n for n, event in enumerate(events)}
    steps: list[Any] = []
    for step in plan([(event, None) for event in events]):
        if isinstance(step, Run):
            steps.append([index[id(link.event)] for link in step.links])
        else:
            assert isinstance(step, One)
            steps.append(index[id(step.event)])
    return steps


def test_new_signatures_go_together_until_an_event_applied_alone() -> None:
    a, b, c = created(), created(), created()
    confirmed = SignatureConfirmed(petition_id=PETITION, signature_id=b.signature_id)
    assert shape([a, b, confirmed, c]) == [[0, 1], 2, [3]]


def test_fraudulent_signatures_and_events_not_acted_on_are_left_out() -> None:
    a, fraudulent, b = created(), created(status="fraudulent"), created()
    duplicate = duplicate_of(signed(**_fields(share_code="cx")))
    assert shape([a, fraudulent, duplicate, b]) == [[0, 3]]


def test_a_repeated_id_signature_or_code_starts_a_new_run() -> None:
    a = created()
    replay = a.model_copy(update={"event_id": uuid.uuid4()})
    same_code = created(share_code=a.share_code)
    assert shape([a, a.model_copy()]) == [[0], [1]]  # delivered again
    assert shape([a, replay]) == [[0], [1]]
    assert shape([a, same_code]) == [[0], [1]]


def test_a_code_named_before_its_link_starts_a_new_run() -> None:
    later = created()
    referred = created(ref=later.share_code)
    earlier = created()
    referred_back = created(ref=earlier.share_code)
    assert shape([referred, later]) == [[0], [1]]
    # A referral to a link stored earlier in the run finds it, as one at a time.
    assert shape([earlier, referred_back]) == [[0, 1]]


def test_a_link_counts_when_signed_and_keeps_only_a_consenting_first_name() -> None:
    signed_link = new_link(created(leaderboard_name="Ada"), "cid")
    pending_link = new_link(created(status="pending"), None)
    assert signed_link is not None and pending_link is not None
    assert (signed_link.status, signed_link.first_name) == ("counted", "Ada")
    assert (pending_link.status, pending_link.first_name) == ("pending", None)
    assert new_link(created(status="fraudulent"), None) is None
    own = created()
    assert new_link(own.model_copy(update={"ref": own.share_code}), None).referrer_code is None  # type: ignore[union-attr]


def test_moved_clicks_follow_the_order_of_their_links_events() -> None:
    links = [new_link(created(), str(n)) for n in range(3)]
    assert all(links)
    first, second, third = (link.event.share_code for link in links if link)
    moved = [(third, "x"), (first, "sms"), (third, "email"), (first, "qr")]
    ordered = clicks_in_order([link for link in links if link], moved)
    assert [(link.correlation_id, channel) for link, channel in ordered] == [
        ("0", "sms"),
        ("0", "qr"),
        ("2", "x"),
        ("2", "email"),
    ]
    assert second not in {link.event.share_code for link, _ in ordered}
