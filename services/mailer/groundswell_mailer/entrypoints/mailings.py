"""Mailings and milestone notes: the organisers' API, the pacer, the campaign consumer,
and what the dispatcher calls to write a mailing's or a milestone's email.

- Admin API (Bearer ADMIN_TOKEN): compose a mailing, see its audience and preview, send
  a test, send, cancel, follow its progress (also on /metrics).
- Pacer: releases waiting copies at `MAILER_MAILING_RATE_PER_SECOND`, marks finished
  mailings sent, refreshes the progress gauges (adapters/pacer.py).
- Campaign consumer (a group of its own on `milestones`): the milestone notes, once per
  petition and threshold, whatever the event ids.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Callable
from typing import Annotated, Any, Literal

import asyncpg
import structlog
from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from groundswell_contracts.events import SLUG_PATTERN, AnyEvent, MilestoneReached
from groundswell_runtime.admin_auth import admin_check
from groundswell_runtime.consumer import claim_event
from groundswell_runtime.http_errors import unprocessable
from prometheus_client import Gauge
from pydantic import BaseModel, Field, field_validator

from groundswell_mailer.adapters import audience, milestones, pacer, supporters
from groundswell_mailer.adapters import mailings as store
from groundswell_mailer.adapters import repository as repo
from groundswell_mailer.adapters.queue import ClaimedEmail
from groundswell_mailer.adapters.smtp import SmtpConnection, new_message_id, sender_domain
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.domain import mailings as rules
from groundswell_mailer.domain.messages import Campaign, ComposedEmail, Links
from groundswell_mailer.domain.mime import MessageWriter, check_mailbox, utf8_mailbox

log = structlog.get_logger()

MAILING_EMAILS = Gauge(
    "groundswell_mailer_mailing_emails",
    "Copies of a mailing by state (waiting for the pacer, queued, sending, sent, failed, "
    "bounced, suppressed)",
    ["mailing", "state"],
)
CAMPAIGN_KINDS = frozenset({"mailing", "milestone"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def links_of(settings: MailerSettings) -> Links:
    return Links(
        public_base_url=settings.public_base_url,
        share_base_url=settings.share_base_url,
        mailer_public_url=settings.public_url,
    )


def render(row: asyncpg.Record, links: Links) -> rules.Mailing:
    return rules.Mailing.render(
        id=row["id"],
        subject=row["subject"],
        body_markdown=row["body_markdown"],
        category=row["category"],
        source=row["source"],
        cta_label=row["cta_label"],
        petition_slug=row["petition_slug"],
        petition_title=row["petition_title"],
        first_name_fallback=row["first_name_fallback"],
        links=links,
    )


class CampaignMail:
    """The dispatcher's writer for mailing and milestone emails. A mailing is rendered
    once per process (its text never changes once it is sending)."""

    def __init__(self, pool: asyncpg.Pool, settings: MailerSettings) -> None:
        self._pool = pool
        self._links = links_of(settings)
        self._campaign = settings.campaign()
        self._mailings: dict[int, rules.Mailing] = {}

    async def compose(self, email: ClaimedEmail) -> ComposedEmail:
        if email.kind == "milestone":
            return rules.compose_milestone(
                petition_title=email.content.petition_title,
                petition_slug=email.content.petition_slug,
                threshold=email.sequence,
                links=self._links,
                campaign=self._campaign,
            )
        mailing = self._mailings.get(email.sequence)
        if mailing is None:
            async with self._pool.acquire() as conn:
                row = await store.mailing(conn, email.sequence)
            if row is None:
                raise ValueError("the mailing is gone")
            mailing = self._mailings[email.sequence] = render(row, self._links)
        return rules.compose_mailing(
            mailing, email.content.first_name, self._links, email.unsubscribe_token, self._campaign
        )


# --- the campaign consumer -------------------------------------------------------------


class CampaignHandler:
    """Milestone notes, from `milestones` (a consumer group of its own). Confirmations
    and withdrawals reach the supporters' states through the main handler."""

    def __init__(self, settings: MailerSettings) -> None:
        self._settings = settings

    async def __call__(self, conn: asyncpg.Connection, event: AnyEvent) -> None:
        if isinstance(event, MilestoneReached):
            await self._milestone(conn, event)

    async def _milestone(self, conn: asyncpg.Connection, event: MilestoneReached) -> None:
        address = self._settings.organisation.notify_address
        if not await claim_event(conn, repo.SCHEMA, event.event_id):
            return
        if address is None:
            log.info("milestone_not_notified", reason="no ORG_NOTIFY_ADDRESS")
            return
        added = await milestones.record_milestone(
            conn,
            petition_id=event.petition_id,
            slug=event.slug,
            threshold=event.threshold,
            notify_address=address,
            message_id=new_message_id(self._settings.mail_from),
            new_token=secrets.token_urlsafe(24),
        )
        log.info(
            "milestone_note",
            petition_id=str(event.petition_id),
            threshold=event.threshold,
            queued=added,
        )


# --- the pacer ---------------------------------------------------------------------------


async def run_pacer(pool: asyncpg.Pool, settings: MailerSettings) -> None:
    """Release waiting copies at the configured rate; every few seconds, mark finished
    mailings and refresh the progress gauges. Runs until cancelled."""
    rate = settings.mailing_rate_per_second
    tick = min(max(1.0 / rate, 0.05), 1.0)
    loop = asyncio.get_running_loop()
    last_report = 0.0
    while True:
        await pacer.release(pool, rate)
        if loop.time() - last_report > 2.0:
            last_report = loop.time()
            async with pool.acquire() as conn:
                for mailing_id in await pacer.finish_done(conn):
                    log.info("mailing_finished", mailing_id=mailing_id)
                for mailing_id in await pacer.active_mailings(conn):
                    counts = await pacer.progress(conn, mailing_id)
                    for state in rules.PROGRESS_STATES:
                        MAILING_EMAILS.labels(str(mailing_id), state).set(counts.get(state, 0))
        await asyncio.sleep(tick)


# --- the organisers' API -----------------------------------------------------------------


# A bigint in PostgreSQL: anything larger is no mailing (a 422, not a database error).
MailingId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The mailing's id")]


def _one_line(value: str) -> str:
    if _CONTROL.search(value) or not value.strip():
        raise ValueError("must be one line of text")
    return value.strip()


Slug = Annotated[str, Field(pattern=SLUG_PATTERN, examples=["local-contact-tracing"])]


def _text(value: str) -> str:
    # PostgreSQL's text cannot hold NUL or lone surrogates: refused here, a clear 422.
    if "\x00" in value or any(0xD800 <= ord(ch) <= 0xDFFF for ch in value):
        raise ValueError("must be text without NUL characters or broken Unicode")
    return value


class AudienceIn(BaseModel):
    signed: list[Slug] = Field(
        default_factory=list, max_length=100, description="petition slugs: signers of any of these"
    )
    not_signed: list[Slug] = Field(
        default_factory=list, max_length=100, description="petition slugs: leave out their signers"
    )
    areas: list[Annotated[str, Field(pattern=r"^[A-Za-z]{1,2}$")]] = Field(
        default_factory=list, max_length=200, description="postcode areas, such as OX or SW"
    )


class MailingIn(BaseModel):
    subject: str = Field(min_length=1, max_length=200)
    body_markdown: str = Field(min_length=1, max_length=50_000)
    category: Literal["news", "updates"] = "news"
    petition: Slug = Field(description="the call to action's petition slug")
    cta_label: str = Field("Sign the petition", min_length=1, max_length=80)
    first_name_fallback: str = Field("friend", min_length=1, max_length=40)
    source: str | None = Field(None, pattern=rules.SOURCE.pattern)
    audience: AudienceIn = Field(default_factory=AudienceIn)

    _texts = field_validator("subject", "body_markdown", "cta_label", "first_name_fallback")(_text)
    _lines = field_validator("subject", "cta_label", "first_name_fallback")(_one_line)


class TestIn(BaseModel):
    email: str = Field(min_length=3, max_length=320)
    first_name: str = Field("Sam", max_length=40)


def _view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "status": row["status"],
        "subject": row["subject"],
        "category": row["category"],
        "petition": row["petition_slug"],
        "source": row["source"],
        "recipients": row["recipients"],
        "skipped": row["skipped"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
    }


def admin_router(settings: MailerSettings, pool: Callable[[], asyncpg.Pool]) -> APIRouter:
    router = APIRouter(
        prefix="/api/admin/mailings",
        dependencies=[Depends(admin_check(settings.admin_token))],
        tags=["mailings"],
        responses={401: {"description": "Missing or wrong admin token"}},
    )
    links = links_of(settings)
    campaign: Campaign = settings.campaign()

    async def found(conn: asyncpg.Connection, mailing_id: int) -> asyncpg.Record:
        row = await store.mailing(conn, mailing_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "No such mailing")
        return row

    @router.post("", status_code=201, summary="Compose a mailing (a draft)")
    async def create(body: MailingIn) -> dict[str, Any]:
        unknown = rules.unknown_placeholders(body.subject, body.body_markdown)
        if unknown:
            raise unprocessable(
                "body_markdown",
                f"Unknown placeholders: {', '.join('{' + u + '}' for u in unknown)}; "
                f"use {', '.join('{' + p + '}' for p in sorted(rules.PLACEHOLDERS))}",
            )
        if body.category == "updates" and not body.audience.signed:
            raise unprocessable(
                ("audience", "signed"), "An updates mailing goes to signers: set audience.signed"
            )
        slugs = {body.petition, *body.audience.signed, *body.audience.not_signed}
        async with pool().acquire() as conn, conn.transaction():
            ids = await supporters.petition_ids(conn, sorted(slugs))
            missing = sorted(slugs - set(ids))
            if missing:
                raise unprocessable(
                    "petition", f"No signatures seen yet for petition(s): {', '.join(missing)}"
                )
            if body.source and await conn.fetchval(
                "SELECT true FROM mailer.mailings WHERE source = $1", body.source
            ):
                raise HTTPException(409, "Another mailing uses that source code")
            mailing_id = await store.create_mailing(
                conn,
                {
                    "subject": body.subject,
                    "body_markdown": body.body_markdown,
                    "category": body.category,
                    "cta_petition_id": ids[body.petition],
                    "cta_label": body.cta_label,
                    "first_name_fallback": body.first_name_fallback,
                    "source": body.source,
                    "audience": {
                        "signed": body.audience.signed,
                        "not_signed": body.audience.not_signed,
                        "signed_ids": [str(ids[s]) for s in body.audience.signed],
                        "not_signed_ids": [str(ids[s]) for s in body.audience.not_signed],
                        "areas": [a.upper() for a in body.audience.areas],
                    },
                },
            )
            return await _details(conn, await found(conn, mailing_id))

    async def _details(conn: asyncpg.Connection, row: asyncpg.Record) -> dict[str, Any]:
        view = _view(row)
        if row["status"] == "draft":
            would, wont = await audience.audience_size(
                conn, row["category"], audience.audience_of(row)
            )
            view["audience"] = {"would_receive": would, "would_skip": wont}
        view["progress"] = await pacer.progress(conn, row["id"])
        return view

    @router.get("", summary="Mailings, newest first")
    async def index() -> list[dict[str, Any]]:
        async with pool().acquire() as conn:
            return [_view(row) for row in await store.mailings(conn)]

    @router.get("/{mailing_id}", summary="A mailing: audience size (draft) and progress")
    async def show(mailing_id: MailingId) -> dict[str, Any]:
        async with pool().acquire() as conn:
            return await _details(conn, await found(conn, mailing_id))

    @router.get("/{mailing_id}/preview", summary="The email as a sample recipient gets it")
    async def preview(
        mailing_id: MailingId, first_name: Annotated[str, Query(max_length=40)] = "Sam"
    ) -> dict[str, str]:
        async with pool().acquire() as conn:
            row = await found(conn, mailing_id)
        composed = rules.compose_mailing(
            render(row, links), first_name, links, "preview-token-not-a-real-one", campaign
        )
        return {"subject": composed.subject, "html": composed.html, "text": composed.text}

    @router.post("/{mailing_id}/test", summary="Send one copy to an address, now")
    async def test(mailing_id: MailingId, body: TestIn) -> dict[str, Any]:
        try:
            recipient = check_mailbox(body.email.strip())
        except ValueError:
            raise unprocessable("email", "email must be one plain address") from None
        async with pool().acquire() as conn:
            row = await found(conn, mailing_id)
        composed = rules.compose_mailing(
            render(row, links), body.first_name, links, "test-token-not-a-real-one", campaign
        )
        composed = ComposedEmail(
            f"[Test] {composed.subject}", composed.text, composed.html, composed.headers
        )
        writer = MessageWriter(settings.mail_from)
        message = writer.write(
            composed, recipient=recipient, message_id=new_message_id(settings.mail_from)
        )
        connection = SmtpConnection(settings)
        try:
            failure = await connection.send(
                writer.envelope_from, recipient, message, utf8=utf8_mailbox(recipient)
            )
        finally:
            await connection.close()
        if failure is not None:
            raise HTTPException(502, f"The mail server did not take it: {failure.describe()}")
        return {"sent": True}

    @router.post("/{mailing_id}/send", status_code=202, summary="Send it to its audience")
    async def send(mailing_id: MailingId) -> dict[str, Any]:
        async with pool().acquire() as conn, conn.transaction():
            await found(conn, mailing_id)
            started = await store.start_sending(conn, mailing_id, sender_domain(settings.mail_from))
            if started is None:
                raise HTTPException(
                    409, "Only a draft can be sent (this one was sent or cancelled)"
                )
        queued, skipped = started
        log.info("mailing_started", mailing_id=mailing_id, recipients=queued, skipped=skipped)
        return {"id": mailing_id, "recipients": queued, "skipped": skipped}

    @router.post("/{mailing_id}/cancel", summary="Stop sending: copies not yet out are cancelled")
    async def cancel(mailing_id: MailingId) -> dict[str, Any]:
        async with pool().acquire() as conn, conn.transaction():
            await found(conn, mailing_id)
            cancelled = await store.cancel(conn, mailing_id)
        if cancelled is None:
            raise HTTPException(409, "The mailing is finished")
        return {"id": mailing_id, "cancelled": cancelled}

    return router
