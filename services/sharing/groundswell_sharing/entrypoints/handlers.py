"""Petition and signature events -> share links and referrals.

Every change commits with `claim_event` in one transaction, so a redelivered event
changes nothing; the referral table's key (the referred signature) also holds
against replays that carry new event ids.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import structlog
from groundswell_contracts.events import (
    AnyEvent,
    PetitionClosed,
    PetitionCreated,
    PetitionUpdated,
    ReferralAttributed,
    ShareLinkClicked,
    SignatureConfirmed,
    SignatureCreated,
    SignatureErased,
    SignatureInvalidated,
    SignatureWithdrawn,
)
from groundswell_runtime.consumer import claim_event
from groundswell_runtime.outbox import enqueue

from groundswell_sharing.adapters import clicks
from groundswell_sharing.adapters import repository as repo
from groundswell_sharing.config import SharingSettings
from groundswell_sharing.domain.links import UNKNOWN, first_name, normalize_channel

log = structlog.get_logger()


class SharingHandler:
    """Applies one event inside the transaction it is given (see
    groundswell_runtime.consumer.InTransaction: one per event, or one per batch)."""

    def __init__(self, settings: SharingSettings) -> None:
        self._click_window = timedelta(hours=settings.referral_click_window_hours)

    async def __call__(self, conn: asyncpg.Connection, event: AnyEvent) -> None:
        if isinstance(event, PetitionCreated | PetitionUpdated | PetitionClosed):
            await repo.upsert_petition(
                conn, event.petition_id, event.slug, event.title, event.occurred_at
            )
        elif isinstance(event, SignatureCreated):
            await self._created(conn, event)
        elif isinstance(event, SignatureConfirmed):
            await self._confirmed(conn, event)
        elif isinstance(event, SignatureWithdrawn | SignatureInvalidated):
            await self._void(conn, event)
        elif isinstance(event, SignatureErased) and await claim_event(
            conn, repo.SCHEMA, event.event_id
        ):
            # The link and its referrals keep counting (no person in them); the name goes.
            await repo.forget_name(conn, event.signature_id)

    async def _created(self, conn: asyncpg.Connection, event: SignatureCreated) -> None:
        if event.status == "fraudulent":
            # Never counted, so neither its link nor its referral may count.
            return
        status = "counted" if event.status == "signed" else "pending"
        attributed: ReferralAttributed | None = None
        if not await claim_event(conn, repo.SCHEMA, event.event_id):
            return
        # Under the code's lock, held to commit: a click on this code waiting for it is
        # either committed before (and moved below) or sees the link (clicks.py).
        await clicks.store_link(
            conn,
            share_code=event.share_code,
            signature_id=event.signature_id,
            petition_id=event.petition_id,
            petition_slug=event.petition_slug,
            petition_title=event.petition_title,
            # Only signers who agreed to the organisers' leaderboard have one on the topic.
            first_name=first_name(event.leaderboard_name or ""),
            source=event.source,
            status=status,
            created_at=event.occurred_at,
        )
        waited = await clicks.attribute_pending(
            conn, event.share_code, event.petition_id, datetime.now(UTC)
        )
        for channel in waited:
            await enqueue(
                conn,
                repo.SCHEMA,
                ShareLinkClicked(
                    petition_id=event.petition_id, share_code=event.share_code, channel=channel
                ),
            )
        referrer = await self._referrer(conn, event)
        if referrer is not None:
            channel = await self._channel(conn, event, referrer)
            added = await repo.add_referral(
                conn,
                signature_id=event.signature_id,
                referrer=referrer,
                channel=channel,
                status=status,
                created_at=event.occurred_at,
            )
            # Attributed when it counts: now if signed, else on confirmation.
            if added and status == "counted":
                attributed = ReferralAttributed(
                    petition_id=event.petition_id,
                    share_code=referrer.share_code,
                    referrer_signature_id=referrer.signature_id,
                    signature_id=event.signature_id,
                )
                await enqueue(conn, repo.SCHEMA, attributed)
        if attributed is not None:
            log.info("referral_attributed", signature_id=str(event.signature_id))

    async def _referrer(
        self, conn: asyncpg.Connection, event: SignatureCreated
    ) -> repo.ShareLink | None:
        if not event.ref or event.ref == event.share_code:
            return None
        referrer = await repo.find_share_link(conn, event.ref)
        if referrer is None:
            log.info("referral_code_unknown", signature_id=str(event.signature_id))
            return None
        # A code from another petition's signer brought nobody to this one.
        if referrer.petition_id != event.petition_id or referrer.signature_id == event.signature_id:
            return None
        return referrer

    async def _channel(
        self, conn: asyncpg.Connection, event: SignatureCreated, referrer: repo.ShareLink
    ) -> str:
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
