"""The demo petition `make up` seeds, modelled on a real UK campaign."""

from __future__ import annotations

from typing import Any

import httpx

DEMO_SLUG = "local-contact-tracing"

DEMO_PETITION: dict[str, Any] = {
    "slug": DEMO_SLUG,
    "title": "Let local public health teams run contact tracing",
    "target": "The Secretary of State for Health and Social Care",
    "body": (
        "Contact tracing works best when it is run by people who know their area. "
        "Local public health teams already trace outbreaks of measles, TB and food poisoning; "
        "they know the languages spoken, the workplaces and the community leaders.\n\n"
        "We ask the Health Secretary to move the money for contact tracing from the "
        "outsourcing contractor to local authority public health teams, so that tracing is "
        "run locally, accountable locally and reaches everyone."
    ),
    "goal": 100_000,
    # So that a first signature counts at once in the demo; real campaigns keep double opt-in.
    "requires_confirmation": False,
    "milestones": [],
}


def seed_demo(signing_url: str, admin_token: str) -> str:
    """Create the demo petition unless it exists; returns its page URL."""
    response = httpx.post(
        f"{signing_url}/api/admin/petitions",
        json=DEMO_PETITION,
        headers={"Authorization": f"Bearer {admin_token}"},
        timeout=10,
    )
    if response.status_code not in (201, 409):
        raise RuntimeError(
            f"seeding the demo petition failed: {response.status_code} {response.text}"
        )
    return f"{signing_url}/p/{DEMO_SLUG}"
