"""Petitions: what a campaign asks, of whom, and whether it is taking signatures."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from groundswell_contracts.events import (
    SLUG_PATTERN,
    PetitionClosed,
    PetitionCreated,
    PetitionState,
    PetitionUpdated,
)
from groundswell_runtime import ids

SLUG = re.compile(SLUG_PATTERN)
PetitionStatus = Literal["open", "closed"]


class PetitionNotFound(LookupError):
    pass


class PetitionClosedError(RuntimeError):
    pass


@dataclass
class Petition:
    id: uuid.UUID
    slug: str
    title: str
    target: str
    body: str
    goal: int | None
    requires_confirmation: bool
    organiser_email: str | None
    closes_at: datetime | None
    status: PetitionStatus
    version: int
    created_at: datetime
    milestones: list[int] = field(default_factory=list)
    auto_raise_goal: bool = False
    cors_origins: list[str] = field(default_factory=list)

    def accepting_signatures(self, now: datetime) -> bool:
        if self.status != "open":
            return False
        return self.closes_at is None or now < self.closes_at

    def state_event(self) -> PetitionState:
        """The event describing this version; its id is stable, so a replay dedupes."""
        kind: type[PetitionState]
        if self.version == 1:
            kind = PetitionCreated
        elif self.status == "closed":
            kind = PetitionClosed
        else:
            kind = PetitionUpdated
        return kind(
            event_id=ids.uuid5(self.id, f"petition-v{self.version}"),
            petition_id=self.id,
            slug=self.slug,
            title=self.title,
            target=self.target,
            goal=self.goal,
            requires_confirmation=self.requires_confirmation,
            status=self.status,
            closes_at=self.closes_at,
            milestones=self.milestones,
            auto_raise_goal=self.auto_raise_goal,
        )
