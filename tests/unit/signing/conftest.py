"""What the signing unit tests share."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from groundswell_signing.service_layer.group_commit import Attempt


def attempt() -> Attempt:
    """A signing attempt with nothing in it: for the writer's queue, which never looks."""
    return Attempt(
        row={},
        petition=SimpleNamespace(),  # type: ignore[arg-type]
        hits=[],
        confirmation_token=None,
        withdraw_token="t",
        correlation_id=None,
        now=datetime.now(UTC),
    )
