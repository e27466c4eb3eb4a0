"""HTML pages: the petition (works without JavaScript), embed, confirm and withdraw."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request, status
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from groundswell_signing.domain.petitions import Petition, PetitionClosedError, PetitionNotFound
from groundswell_signing.domain.signatures import SignatureError, SignatureInput, validate_signature
from groundswell_signing.entrypoints.http.api import accepted_message, petition_url, share_url
from groundswell_signing.entrypoints.http.dependencies import (
    ClientIP,
    Now,
    Petitions,
    Policy,
    Pool,
    Settings,
    Writer,
)
from groundswell_signing.entrypoints.http.security import page_headers, refuse_cross_site_forms
from groundswell_signing.service_layer import petitions as petition_service
from groundswell_signing.service_layer.signing import (
    Blocked,
    RateLimited,
    TokenNotValid,
    confirm_signature,
    confirmation_pending,
    sign_petition,
    withdraw_signature,
    withdrawable,
)

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(include_in_schema=False)

# Every form post: a page on another site must not sign, confirm or withdraw for a visitor.
SAME_SITE_FORM = [Depends(refuse_cross_site_forms)]


def share_links(url: str, title: str) -> dict[str, str]:
    text = quote(f"I signed \u201c{title}\u201d. Will you sign too? {url}")
    return {
        "email": f"mailto:?subject={quote(title)}&body={text}",
        "whatsapp": f"https://wa.me/?text={text}",
        "facebook": f"https://www.facebook.com/sharer/sharer.php?u={quote(url, safe='')}",
        "x": f"https://x.com/intent/tweet?text={text}",
    }


def _page(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    embeddable: bool = False,
    secret_url: bool = False,
) -> HTMLResponse:
    """Pages may not be framed, except the embed page, which exists to be framed; pages
    whose address holds a token (`secret_url`) are not cached and send no referrer."""
    counter_url = request.app.state.settings.counter_public_url
    headers = page_headers(counter_url, embeddable=embeddable, secret_url=secret_url)
    return templates.TemplateResponse(
        request, template, context, status_code=status_code, headers=headers
    )


def message_page(
    request: Request, title: str, text: str, status_code: int, *, secret_url: bool = False
) -> HTMLResponse:
    return _page(
        request,
        "message.html",
        {"title": title, "text": text},
        status_code=status_code,
        secret_url=secret_url,
    )


async def _petition_page(
    request: Request,
    pool: Pool,
    settings: Settings,
    now: Now,
    slug: str,
    *,
    embed: bool,
    form: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    thanks: dict[str, Any] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    try:
        petition: Petition = await petition_service.get_petition(pool, slug)
    except PetitionNotFound:
        return message_page(
            request, "Petition not found", "There is no petition at this address.", 404
        )
    return _page(
        request,
        "petition.html",
        {
            "petition": petition,
            "open": petition.accepting_signatures(now),
            "embed": embed,
            "counter_url": settings.counter_public_url,
            "form": form
            or {
                "country": "GB",
                "ref": request.query_params.get("ref", ""),
                "source": request.query_params.get("source", ""),
                "ref_channel": request.query_params.get("ref_channel", ""),
            },
            "errors": errors or {},
            "thanks": thanks,
        },
        status_code=status_code,
        embeddable=embed,
    )


@router.get("/p/{slug}", response_class=HTMLResponse)
async def petition_page(
    slug: str, request: Request, pool: Pool, settings: Settings, now: Now
) -> HTMLResponse:
    return await _petition_page(request, pool, settings, now, slug, embed=False)


@router.get("/embed/{slug}", response_class=HTMLResponse)
async def embed_page(
    slug: str, request: Request, pool: Pool, settings: Settings, now: Now
) -> HTMLResponse:
    return await _petition_page(request, pool, settings, now, slug, embed=True)


@router.post("/p/{slug}", response_class=HTMLResponse, dependencies=SAME_SITE_FORM)
@router.post("/embed/{slug}", response_class=HTMLResponse, dependencies=SAME_SITE_FORM)
async def sign_from_form(
    slug: str,
    request: Request,
    pool: Pool,
    writer: Writer,
    petitions: Petitions,
    policy: Policy,
    settings: Settings,
    ip: ClientIP,
    now: Now,
    name: Annotated[str, Form(max_length=1000)] = "",
    email: Annotated[str, Form(max_length=1000)] = "",
    postcode: Annotated[str, Form(max_length=1000)] = "",
    country: Annotated[str, Form(max_length=100)] = "GB",
    contact_consent: Annotated[str, Form(max_length=10)] = "",
    ref: Annotated[str, Form(max_length=1000)] = "",
    source: Annotated[str, Form(max_length=1000)] = "",
    ref_channel: Annotated[str, Form(max_length=1000)] = "",
    website: Annotated[str, Form(max_length=1000)] = "",
) -> HTMLResponse:
    """The same signing as the JSON API, for browsers without JavaScript."""
    embed = request.url.path.startswith("/embed/")
    form = {
        "name": name,
        "email": email,
        "postcode": postcode,
        "country": country,
        "contact_consent": contact_consent == "yes",
        "ref": ref,
        "source": source,
        "ref_channel": ref_channel,
    }
    try:
        petition = await petition_service.get_petition(pool, slug)
    except PetitionNotFound:
        return message_page(
            request, "Petition not found", "There is no petition at this address.", 404
        )
    if website:
        # Only bots fill the hidden field: thank them and record nothing.
        thanks: dict[str, Any] = {
            "message": "Thank you for signing.",
            "share_url": petition_url(settings, slug),
        }
        return await _petition_page(request, pool, settings, now, slug, embed=embed, thanks=thanks)
    try:
        valid = validate_signature(
            SignatureInput(
                name=name,
                email=email,
                postcode=postcode or None,
                country=country,
                contact_consent=contact_consent == "yes",
                ref=ref or None,
                source=source or None,
                ref_channel=ref_channel or None,
            )
        )
        outcome = await sign_petition(writer, petitions, policy, slug, valid, ip, now)
    except SignatureError as exc:
        return await _petition_page(
            request,
            pool,
            settings,
            now,
            slug,
            embed=embed,
            form=form,
            errors=exc.errors,
            status_code=422,
        )
    except PetitionClosedError:
        return await _petition_page(
            request, pool, settings, now, slug, embed=embed, form=form, status_code=409
        )
    except RateLimited as exc:
        response = await _petition_page(
            request,
            pool,
            settings,
            now,
            slug,
            embed=embed,
            form=form,
            status_code=429,
            errors={
                "form": "Too many signatures from your network. "
                f"Try again in {exc.retry_after} seconds."
            },
        )
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except Blocked:
        return message_page(
            request, "Not accepted", "Signatures from your network are not accepted.", 403
        )
    url = petition_url(settings, slug)
    thanks = {
        "message": accepted_message(outcome),
        "share_url": url,
        "links": share_links(url, petition.title),
        "status": outcome.status,
    }
    return await _petition_page(request, pool, settings, now, slug, embed=embed, thanks=thanks)


@router.get("/confirm/{token}", response_class=HTMLResponse)
async def confirm_page(token: str, request: Request, pool: Pool, now: Now) -> HTMLResponse:
    # A GET never confirms: mail scanners fetch links before people do.
    if not await confirmation_pending(pool, token, now):
        return message_page(
            request,
            "Link not valid",
            "This confirmation link has expired or has already been used.",
            404,
            secret_url=True,
        )
    return _page(request, "confirm.html", {"action": f"/confirm/{token}"}, secret_url=True)


@router.post("/confirm/{token}", response_class=HTMLResponse, dependencies=SAME_SITE_FORM)
async def confirm(
    token: str, request: Request, pool: Pool, settings: Settings, now: Now
) -> HTMLResponse:
    try:
        done = await confirm_signature(pool, token, now)
    except PetitionClosedError:
        return message_page(
            request,
            "Petition closed",
            "This petition closed before your signature was confirmed, so it was not added.",
            409,
            secret_url=True,
        )
    except TokenNotValid:
        return message_page(
            request,
            "Link not valid",
            "This confirmation link has expired or has already been used.",
            404,
            secret_url=True,
        )
    url = share_url(settings, done.share_code)
    return _page(
        request,
        "confirmed.html",
        {
            "title": done.title,
            "slug": done.slug,
            "share_url": url,
            "links": share_links(url, done.title),
        },
        secret_url=True,  # and it shows the signer's personal share link
    )


@router.get("/withdraw/{token}", response_class=HTMLResponse)
async def withdraw_page(token: str, request: Request, pool: Pool) -> HTMLResponse:
    try:
        _, title = await withdrawable(pool, token)
    except TokenNotValid:
        return message_page(
            request,
            "Link not valid",
            "This signature has already been withdrawn.",
            404,
            secret_url=True,
        )
    return _page(
        request,
        "withdraw.html",
        {"title": title, "action": f"/withdraw/{token}"},
        secret_url=True,
    )


@router.post("/withdraw/{token}", response_class=HTMLResponse, dependencies=SAME_SITE_FORM)
async def withdraw(token: str, request: Request, pool: Pool, now: Now) -> HTMLResponse:
    try:
        _, title = await withdraw_signature(pool, token, now)
    except TokenNotValid:
        return message_page(
            request,
            "Link not valid",
            "This signature has already been withdrawn.",
            404,
            secret_url=True,
        )
    return message_page(
        request,
        "Signature withdrawn",
        f"Your signature on \u201c{title}\u201d has been removed.",
        status.HTTP_200_OK,
        secret_url=True,
    )
