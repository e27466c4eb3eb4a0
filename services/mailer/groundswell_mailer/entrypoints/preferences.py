"""The preference centre: `/preferences/{token}`, linked from every email's footer.

The token is the mailbox's unsubscribe token (`mailer.recipients`), already in every
email but the confirmation: one secret per mailbox, so the page, the one-click
unsubscribe (RFC 8058) and the footer link all name the same person, and nothing new
needs keeping or erasing. A GET only shows the form (link scanners fetch every URL in
an email); a POST applies it, in one transaction with its `PreferencesChanged` event
(and `Unsubscribed` the first time a mailbox leaves), and suppresses the copies of
mailings still queued that the mailbox no longer wants, so the change holds before
the next send.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from html import escape
from typing import Annotated

import asyncpg
import structlog
from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse
from groundswell_contracts.events import PreferencesChanged, Unsubscribed
from groundswell_runtime.outbox import enqueue

from groundswell_mailer.adapters import repository as repo
from groundswell_mailer.adapters import supporters as store
from groundswell_mailer.entrypoints import pages

log = structlog.get_logger()

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def _form(token: str, prefs: store.Preferences, note: str = "") -> HTMLResponse:
    def box(name: str, checked: bool, label: str) -> str:
        mark = " checked" if checked else ""
        return (
            f'<p><label><input type="checkbox" name="{name}" value="yes"{mark}> '
            f"{escape(label)}</label></p>"
        )

    state = (
        "<p><strong>This address is unsubscribed</strong>: it gets no emails from us except "
        "the link that confirms a new signature. Tick what you would like to get again.</p>"
        if prefs.unsubscribed
        else ""
    )
    return pages.page(
        "Your email preferences",
        f"{note}{state}<p>Choose which emails this address gets.</p>"
        f'<form method="post" action="/preferences/{escape(token)}">'
        + box("updates", prefs.updates, "Updates on petitions I signed")
        + box("news", prefs.news, "The campaign's news and new petitions")
        + '<button type="submit" name="action" value="save">Save my choices</button>'
        + '<p style="margin-top:24px">Or stop everything: '
        '<button type="submit" name="action" value="unsubscribe">Unsubscribe from all</button>'
        "</p></form><p>Your signatures stay counted whatever you choose.</p>",
    )


def preferences_router(pool: Callable[[], asyncpg.Pool]) -> APIRouter:
    router = APIRouter(tags=["preferences"])

    @router.get(
        "/preferences/{token}",
        response_class=HTMLResponse,
        summary="Preference centre",
        description="A form: which emails the address gets (updates on petitions signed, "
        "the campaign's news), or unsubscribe from all. A GET changes nothing. Unknown "
        "tokens get a 404 page.",
        responses={404: {"description": "Unknown token"}},
    )
    async def show(token: str) -> HTMLResponse:
        if not _TOKEN.match(token):
            return pages.unknown_link()
        async with pool().acquire() as conn:
            prefs = await store.preferences(conn, token)
        if prefs is None:
            return pages.unknown_link()
        return _form(token, prefs)

    @router.post(
        "/preferences/{token}",
        response_class=HTMLResponse,
        summary="Change preferences",
        description="Form fields `updates` and `news` (present: yes) and `action` "
        "(`save`, or `unsubscribe` for unsubscribe from all). Takes effect at once: mailing "
        "copies still queued that the address no longer wants are suppressed. Emits "
        "`PreferencesChanged` on `email-events` (and `Unsubscribed` the first time). "
        "Saving with a box ticked re-subscribes an unsubscribed address.",
        responses={404: {"description": "Unknown token"}},
    )
    async def change(
        token: str,
        updates: Annotated[str | None, Form(max_length=10)] = None,
        news: Annotated[str | None, Form(max_length=10)] = None,
        action: Annotated[str, Form(max_length=20)] = "save",
    ) -> HTMLResponse:
        if not _TOKEN.match(token):
            return pages.unknown_link()
        wants_updates = updates is not None and action != "unsubscribe"
        wants_news = news is not None and action != "unsubscribe"
        async with pool().acquire() as conn, conn.transaction():
            before = await store.preferences(conn, token)
            if before is None:
                return pages.unknown_link()
            # Leaving both boxes empty keeps an unsubscribed address unsubscribed; only
            # ticking something (or the button) changes that.
            unsubscribed = action == "unsubscribe" or (
                before.unsubscribed and not (wants_updates or wants_news)
            )
            suppressed = await store.set_preferences(
                conn,
                before.address_key,
                updates=wants_updates,
                news=wants_news,
                unsubscribed=unsubscribed,
            )
            after = await store.preferences(conn, token)
            assert after is not None
            events: list[PreferencesChanged | Unsubscribed] = [
                PreferencesChanged(
                    petition_id=before.petition_id,
                    signature_id=before.signature_id,
                    updates=after.updates,
                    news=after.news,
                    unsubscribed=after.unsubscribed,
                )
            ]
            if unsubscribed and not before.unsubscribed:
                events.append(
                    Unsubscribed(petition_id=before.petition_id, signature_id=before.signature_id)
                )
            for event in events:
                await enqueue(conn, repo.SCHEMA, event)
        log.info("preferences_changed", suppressed=suppressed, unsubscribed=unsubscribed)
        if after.unsubscribed:
            return pages.unsubscribed()
        return _form(token, after, note="<p><strong>Saved.</strong> Your choices apply now.</p>")

    return router
