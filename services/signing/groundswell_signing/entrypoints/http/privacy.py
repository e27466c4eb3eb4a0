"""Data-protection requests: erasure that reaches every copy (service_layer/erasure.py),
and a copy of what is held.

Self-service (service_layer/privacy_requests.py): `POST /api/privacy/requests` (or the
form at `/privacy/request`) emails a one-time link; `GET /privacy/requests/{token}` shows
a button and `POST` acts: erasure answers how many signatures were erased, access answers
the JSON document. Mail scanners that only GET change nothing.

`POST /api/admin/privacy/erasure` is for a request the campaign received by post or by
phone and has verified itself: the address's signatures on every petition are erased at
once. The answer says how many, never whose; the audit log records that an erasure was
made and its size, not the address.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Form, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, Response
from groundswell_contracts.events import PrivacyRequestKind
from pydantic import BaseModel, Field

from groundswell_signing.adapters import exports
from groundswell_signing.domain.signatures import SignatureError, check_email
from groundswell_signing.entrypoints.http.admin import audit, token_fingerprint
from groundswell_signing.entrypoints.http.dependencies import Now, Pool, Settings, require_admin
from groundswell_signing.entrypoints.http.pages import SAME_SITE_FORM, message_page, render_page
from groundswell_signing.service_layer import privacy_requests
from groundswell_signing.service_layer.erasure import erase_signatures, signatures_of

log = structlog.get_logger()

router = APIRouter(
    prefix="/api/admin/privacy", tags=["privacy"], dependencies=[Depends(require_admin)]
)
public = APIRouter(tags=["privacy"])

REQUESTED = (
    "If that address has signed with us, a link is on its way to it: open it within 24 "
    "hours to go ahead. No email? Check the spam folder, or ask again tomorrow."
)


class ErasureRequest(BaseModel):
    email: str = Field(max_length=254, examples=["ada@example.org"])


class PrivacyRequestIn(BaseModel):
    email: str = Field(max_length=254, examples=["ada@example.org"])
    kind: PrivacyRequestKind = Field(
        description="erasure: delete your personal data; access: a copy of what is held"
    )


class PrivacyRequestAccepted(BaseModel):
    message: str


def _canonical(email: str) -> tuple[str, str]:
    try:
        typed, canonical, _ = check_email(email)
    except ValueError as exc:
        raise SignatureError({"email": str(exc)}) from None
    return typed, canonical


@public.post(
    "/api/privacy/requests",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=PrivacyRequestAccepted,
)
async def request_privacy(body: PrivacyRequestIn, pool: Pool, now: Now) -> PrivacyRequestAccepted:
    """Email a one-time link to erase, or to get a copy of, what is held about an
    address. The answer is the same whether or not the address has signed anything."""
    typed, canonical = _canonical(body.email)
    await privacy_requests.request(pool, body.kind, typed, canonical, now)
    return PrivacyRequestAccepted(message=REQUESTED)


@public.get("/privacy/request", response_class=HTMLResponse, include_in_schema=False)
async def request_form(request: Request) -> HTMLResponse:
    return render_page(request, "privacy_request.html", {})


@public.post(
    "/privacy/request",
    response_class=HTMLResponse,
    include_in_schema=False,
    dependencies=SAME_SITE_FORM,
)
async def request_from_form(
    request: Request,
    pool: Pool,
    now: Now,
    email: Annotated[str, Form(max_length=254)],
    kind: Annotated[PrivacyRequestKind, Form()],
) -> HTMLResponse:
    try:
        typed, canonical = _canonical(email)
    except SignatureError as exc:
        return message_page(request, "Check the address", exc.errors["email"], 422)
    await privacy_requests.request(pool, kind, typed, canonical, now)
    return message_page(request, "Check your inbox", REQUESTED, 202)


_NOT_VALID = "This link has expired or has already been used. You can ask for a new one."
_CONFIRM = {
    "erasure": (
        "Erase your personal data",
        "Press the button to erase your name, email address, postcode and everything else "
        "that identifies you, from every petition you signed. This cannot be undone.",
        "Erase my data",
    ),
    "access": (
        "A copy of your data",
        "Press the button to download everything we hold about you, as a JSON file. "
        "The link then stops working.",
        "Download my data",
    ),
}


@public.get("/privacy/requests/{token}", response_class=HTMLResponse, include_in_schema=False)
async def confirm_request(token: str, request: Request, pool: Pool, now: Now) -> HTMLResponse:
    # A GET never acts: mail scanners fetch links before people do.
    open_request = await privacy_requests.pending(pool, token, now)
    if open_request is None:
        return message_page(request, "Link not valid", _NOT_VALID, 404, secret_url=True)
    heading, text, button = _CONFIRM[open_request.kind]
    return render_page(
        request,
        "privacy_confirm.html",
        {
            "heading": heading,
            "text": text,
            "button": button,
            "action": f"/privacy/requests/{token}",
            "primary": open_request.kind == "access",
        },
        secret_url=True,
    )


@public.post(
    "/privacy/requests/{token}",
    include_in_schema=False,
    dependencies=SAME_SITE_FORM,
    response_model=None,
)
async def act_on_request(
    token: str, request: Request, pool: Pool, settings: Settings, now: Now
) -> Response:
    open_request = await privacy_requests.pending(pool, token, now)
    if open_request is None:
        return message_page(request, "Link not valid", _NOT_VALID, 404, secret_url=True)
    if open_request.kind == "erasure":
        erased = await privacy_requests.erase(
            pool, token, now, counted=settings.erasure_keeps_count
        )
        if erased is None:  # used up by another press in between
            return message_page(request, "Link not valid", _NOT_VALID, 404, secret_url=True)
        log.info("privacy_erasure_done", signatures=erased)
        return message_page(
            request,
            "Your data is erased",
            f"We erased your personal data from {erased} signature"
            f"{'' if erased == 1 else 's'}. Emails on their way to you are cancelled.",
            200,
            secret_url=True,
        )
    report = await privacy_requests.access(pool, token, now)
    if report is None:
        return message_page(request, "Link not valid", _NOT_VALID, 404, secret_url=True)
    log.info("privacy_access_done", signatures=len(report["signatures"]))
    return JSONResponse(
        report,
        headers={
            "Content-Disposition": 'attachment; filename="my-data.json"',
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )


class ErasureDone(BaseModel):
    erased_signatures: int = Field(description="Signatures whose personal data is now gone")
    counted: bool = Field(
        description="Whether erased signatures keep counting, anonymised (the campaign's "
        "SIGNING_ERASURE_KEEPS_COUNT policy)"
    )
    erased_at: datetime


@router.post("/erasure", response_model=ErasureDone)
async def erase_person(
    body: ErasureRequest, pool: Pool, settings: Settings, now: Now
) -> ErasureDone:
    """Erase everything signing holds about an address, on every petition; the mailer
    and sharing forget it as the events reach them (seconds), and the sealed copies on
    the topics become unreadable at once. Asking again answers 0."""
    try:
        _, canonical, _ = check_email(body.email)
    except ValueError as exc:
        raise SignatureError({"email": str(exc)}) from None
    async with pool.acquire() as conn, conn.transaction():
        ids = await signatures_of(conn, canonical)
        erased = await erase_signatures(conn, ids, counted=settings.erasure_keeps_count, now=now)
        await exports.record_export(
            conn, who=token_fingerprint(settings), action="erasure", petition_slug=None, rows=erased
        )
    audit(settings, "erasure", rows=erased)
    return ErasureDone(
        erased_signatures=erased, counted=settings.erasure_keeps_count, erased_at=now
    )
