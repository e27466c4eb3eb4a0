from __future__ import annotations

import uuid
from datetime import UTC, datetime

from groundswell_contracts.events import parse_event
from groundswell_signing.domain.petitions import Petition
from groundswell_signing.entrypoints.http.admin import spreadsheet_safe


def test_spreadsheet_safe_cells() -> None:
    for hostile in ["=1+1", "+44 20", "-2", "@SUM(1)", "\tx", "\rx"]:
        assert spreadsheet_safe(hostile).startswith("'")
    assert spreadsheet_safe("Ada") == "Ada"
    assert spreadsheet_safe(None) == ""


def petition(version: int, status: str = "open") -> Petition:
    return Petition(
        id=uuid.UUID(int=7),
        slug="s",
        title="Title here",
        target="Someone",
        body="Body text",
        goal=None,
        requires_confirmation=True,
        organiser_email=None,
        closes_at=None,
        status=status,
        version=version,
        created_at=datetime.now(UTC),  # type: ignore[arg-type]
    )


def test_petition_events_have_stable_ids_per_version() -> None:
    first, again = petition(1).state_event(), petition(1).state_event()
    assert first.event_id == again.event_id and first.event_type == "PetitionCreated"
    assert petition(2).state_event().event_id != first.event_id
    assert petition(3, "closed").state_event().event_type == "PetitionClosed"
    # What goes on the wire parses back to the same event.
    assert parse_event(first.model_dump_json()) == first
