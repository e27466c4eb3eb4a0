"""Upcasters: older versions of an event, lifted to the current shape before validation.

Records stay on the topics (and in dead-letter topics, and come back in replays) long
after their schema changed; `parse_event` passes a document that fails validation through
`upcast`, which applies one step per (event_type, schema_version) until none applies.
Each step changes one version into the next and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _contact_in_clear(document: dict[str, Any]) -> dict[str, Any]:
    """Version 1 of the signature events carried the contact in clear: move it aside."""
    fields = ("email", "name", "confirmation_token", "withdraw_token")
    contact = {f: document.pop(f) for f in fields if f in document}
    if "email" in contact:
        document["legacy_contact"] = contact
    document["schema_version"] = 2
    return document


# (event_type, schema_version) -> the function that lifts that version one step.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("SignatureCreated", 1): _contact_in_clear,
    ("SignatureDuplicateAttempted", 1): _contact_in_clear,
}


def upcast(document: dict[str, Any]) -> dict[str, Any]:
    while True:
        step = UPCASTERS.get(
            (str(document.get("event_type")), int(document.get("schema_version", 1)))
        )
        if step is None:
            return document
        document = step(document)
