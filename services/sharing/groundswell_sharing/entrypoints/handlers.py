"""Petition and signature events -> share links and referrals.

Every change commits with its event's claim (processed_events) in one transaction, so a
redelivered event changes nothing; the referral table's key (the referred signature)
also holds against replays that carry new event ids.

A batch (a partition's fetch, one transaction: groundswell_runtime.consumer) is applied
as domain/signups.py plans it: each run of `SignatureCreated` events with two statements
for the whole run (adapters/clicks.py: claims and links, then the clicks that waited for
them), plus the referral work of the few events that came through someone's share link;
every other event alone, in its place. The runtime hands the handler the whole batch
(`InTransaction(handle_batch=...)`), with each event's correlation id; a single event
(the one-by-one fallback after a failed batch) is a batch of one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import structlog
from groundswell_contracts.events import (
    PetitionClosed,
    PetitionCreated,
    PetitionUpdated,
    ReferralAttributed,
    ShareLinkClicked,
    SignatureConfirmed,
    SignatureErased,
    SignatureInvalidated,
    SignatureWithdrawn,
)
from groundswell_runtime.consumer import Item, claim_event
from groundswell_runtime.correlation import bind_correlation_id
from groundswell_runtime.outbox import enqueue, enqueue_correlated

from groundswell_sharing.adapters import clicks
from groundswell_sharing.adapters import repository as repo
from groundswell_sharing.config import SharingSettings
from groundswell_sharing.domain.links import UNKNOWN, normalize_channel
from groundswell_sharing.domain.signups import NewLink, One, Run, clicks_in_order, plan

log = structlog.get_logger()


class SharingHandler:
    """Applies a batch of events inside the transaction it is given (see
    groundswell_runtime.consumer.InTransaction with `handle_batch`)."""

    def __init__(self, settings: SharingSettings) -> None:
        self._click_window = timedelta(hours=settings.referral_click_window_hours)

    async def __call__(self, conn: asyncpg.Connection, items: list[Item]) -> None:
        for step in plan(items):
            if isinstance(step, Run):
                await self._created(conn, step.links)
            else:
                bind_correlation_id(step.correlation_id)
                await self._one(conn, step)

    async def _one(self, conn: asyncpg.Connection, step: One) -> None:
        event = step.event
        if isinstance(event, PetitionCreated | PetitionUpdated | PetitionClosed):
            await repo.upsert_petition(
                conn, event.petition_id, event.slug, event.title, event.occurred_at
            )
        elif isinstance(event, SignatureConfirmed):
            await self._confirmed(conn, event)
        elif isinstance(event, SignatureWithdrawn | SignatureInvalidated):
            await self._void(conn, event)
        elif isinstance(event, SignatureErased) and await claim_event(
            conn, repo.SCHEMA, event.event_id
        ):
            # The link and its referrals keep counting (no person in them); the name goes.
            await repo.forget_name(conn, event.signature_id)

    async def _created(self, conn: asyncpg.Connection, links: list[NewLink]) -> None:
        """A run of new signatures (domain/signups.py): their links, the clicks that
        waited for them, and their referrals."""
        claimed = await clicks.store_links(conn, links)
        new = [link for link in links if link.event.event_id in claimed]
        if not new:
            return
        moved = await clicks.attribute_pending(
            conn,
            [(link.event.share_code, link.event.petition_id) for link in new],
            datetime.now(UTC),
        )
        await enqueue_correlated(
            conn,
            repo.SCHEMA,
            [
                (
                    ShareLinkClicked(
                        petition_id=link.event.petition_id,
                        share_code=link.event.share_code,
                        channel=channel,
                    ),
                    link.correlation_id,
                )
                for link, channel in clicks_in_order(new, moved)
            ],
        )
        for link in new:
            if link.referrer_code is not None:
                bind_correlation_id(link.correlation_id)
                await self._referral(conn, link, link.referrer_code)

    async def _referral(self, conn: asyncpg.Connection, link: NewLink, code: str) -> None:
        event = link.event
        referrer = await self._referrer(conn, link, code)
        if referrer is None:
            return
        channel = await self._channel(conn, link, referrer)
        added = await repo.add_referral(
            conn,
            signature_id=event.signature_id,
            referrer=referrer,
            channel=channel,
            status=link.status,
            created_at=event.occurred_at,
        )
        # Attributed when it counts: now if signed, else on confirmation.
        if added and link.status == "counted":
            await enqueue(
                conn,
                repo.SCHEMA,
                ReferralAttributed(
                    petition_id=event.petition_id,
                    share_code=referrer.share_code,
                    referrer_signature_id=referrer.signature_id,
                    signature_id=event.signature_id,
                ),
            )
            log.info("referral_attributed", signature_id=str(event.signature_id))

    async def _referrer(
        self, conn: asyncpg.Connection, link: NewLink, code: str
    ) -> repo.ShareLink | None:
        event = link.event
        referrer = await repo.find_share_link(conn, code)
        if referrer is None:
            log.info("referral_code_unknown", signature_id=str(event.signature_id))
            return None
        # A code from another petition's signer brought nobody to this one.
        if referrer.petition_id != event.petition_id or referrer.signature_id == event.signature_id:
            return None
        return referrer

    async def _channel(
        self, conn: asyncpg.Connection, link: NewLink, referrer: repo.ShareLink
    ) -> str:
        event = link.event
        # The page carries the channel from the share link to the signature; a signer
        # who arrived some other way is credited to the latest click on the same link.
        if event.ref_channel:
            return normalize_channel(event.ref_channel)
        recent = await repo.latest_click_channel(
            conn, referrer.share_code, event.occurred_at, self._click_window
        )
        return recent or UNKNOWN

    async def _confirmed(self, conn: asyncpg.Connection, event: SignatureConfirmed) -> None:
        if not await claim_event(conn, repo.SCHEMA, event.event_id):
            return
        referral = await repo.confirm_signature(conn, event.signature_id)
        if referral is not None:
            await enqueue(
                conn,
                repo.SCHEMA,
                ReferralAttributed(
                    petition_id=referral.petition_id,
                    share_code=referral.share_code,
                    referrer_signature_id=referral.referrer_signature_id,
                    signature_id=event.signature_id,
                ),
            )

    async def _void(
        self, conn: asyncpg.Connection, event: SignatureWithdrawn | SignatureInvalidated
    ) -> None:
        if not await claim_event(conn, repo.SCHEMA, event.event_id):
            return
        voided = await repo.void_signature(conn, event.signature_id)
        if voided:
            log.info("referral_voided", signature_id=str(event.signature_id))
