"""HTML pages: the petition (works without JavaScript), embed, confirm and withdraw.

Every page carries the campaign (groundswell_runtime.organisation): its name and logo in
the header, its postal address and privacy notice in the footer (`_campaign`, a context
processor, so a template added later gets them too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, status
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from groundswell_runtime.db import TEMPORARY_DATABASE_ERRORS
from groundswell_runtime.organisation import Organisation
from groundswell_runtime.share_links import ShareLinks, share_links, tagged

from groundswell_signing.config import SigningSettings
from groundswell_signing.domain.countries import COUNTRY_CHOICES
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
from groundswell_signing.entrypoints.http.security import (
    origin_of,
    page_headers,
    refuse_cross_site_forms,
)
from groundswell_signing.service_layer import petitions as petition_service
from groundswell_signing.service_layer.petitions import CountCache
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

# The link-preview image when the campaign has no logo (1200x630, as Facebook and
# WhatsApp want it).
DEFAULT_PREVIEW_IMAGE = "/static/preview.png"
DESCRIPTION_MAX = 200


def _campaign(request: Request) -> dict[str, Any]:
    settings: SigningSettings = request.app.state.service.settings
    organisation = settings.organisation
    return {
        "organisation": organisation,
        "privacy_url": organisation.privacy_url(settings.public_base_url),
        "logo_url": organisation.logo(settings.public_base_url),
    }


templates = Jinja2Templates(
    directory=Path(__file__).parent / "templates", context_processors=[_campaign]
)
router = APIRouter(include_in_schema=False)

# Every form post: a page on another site must not sign, confirm or withdraw for a visitor.
SAME_SITE_FORM = [Depends(refuse_cross_site_forms)]


def petition_share_links(url: str, title: str) -> ShareLinks:
    """The petition's own page, tagged per channel with `ref_channel` (carried into the
    signature by the form's hidden field)."""
    return share_links(url, title, tagged(url, "ref_channel"))


def personal_share_links(url: str, title: str) -> ShareLinks:
    """A signer's `/s/{code}` link, tagged per channel with `c` (counted by sharing)."""
    return share_links(url, title, tagged(url, "c"))


def _description(petition: Petition) -> str:
    text = " ".join(petition.body.split())
    if len(text) <= DESCRIPTION_MAX:
        return text
    return text[: DESCRIPTION_MAX - 1].rsplit(" ", 1)[0] + "\u2026"


def _preview(petition: Petition, settings: SigningSettings) -> dict[str, str]:
    """Open Graph / Twitter card fields: what a shared link shows in a chat or feed."""
    organisation: Organisation = settings.organisation
    image = organisation.logo(settings.public_base_url) or Organisation.absolute(
        DEFAULT_PREVIEW_IMAGE, settings.public_base_url
    )
    return {
        "title": petition.title,
        "description": _description(petition),
        "url": petition_url(settings, petition.slug),
        "image": image,
        "site_name": organisation.name,
    }


def render_page(
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
    settings: SigningSettings = request.app.state.service.settings
    headers = page_headers(
        settings.counter_public_url, embeddable=embeddable, secret_url=secret_url
    )
    logo = settings.organisation.logo(settings.public_base_url)
    if logo:
        # A logo on another site: the page's CSP lets images come only from us.
        headers["Content-Security-Policy"] = allow_image_from(
            headers["Content-Security-Policy"], logo
        )
    return templates.TemplateResponse(
        request, template, context, status_code=status_code, headers=headers
    )


def allow_image_from(policy: str, image_url: str) -> str:
    origin = origin_of(image_url)
    if origin is None:
        return policy
    return "; ".join(
        f"{part} {origin}" if part.startswith("img-src ") else part for part in policy.split("; ")
    )


def message_page(
    request: Request, title: str, text: str, status_code: int, *, secret_url: bool = False
) -> HTMLResponse:
    return render_page(
        request,
        "message.html",
        {"title": title, "text": text},
        status_code=status_code,
        secret_url=secret_url,
    )


async def _count_or_none(request: Request, petition: Petition) -> dict[str, int] | None:
    """The count to show before the live count connects; the page is still served (the
    live count fills it in) if the database cannot answer now."""
    try:
        counts: CountCache = request.app.state.service.counts
        return await counts.get(petition.id)
    except TEMPORARY_DATABASE_ERRORS:
        return None


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
    url = petition_url(settings, slug)
    count = await _count_or_none(request, petition)
    return render_page(
        request,
        "petition.html",
        {
            "petition": petition,
            "count": count,
            "open": petition.accepting_signatures(now),
            "embed": embed,
            "counter_url": settings.counter_public_url,
            "preview": _preview(petition, settings),
            "countries": COUNTRY_CHOICES,
            # The thank-you panel's share buttons, ready for in-page signing too: what
            # the page offers is the petition itself, never the signer's personal link.
            "share": petition_share_links(url, petition.title),
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
        await petition_service.get_petition(pool, slug)
    except PetitionNotFound:
        return message_page(
            request, "Petition not found", "There is no petition at this address.", 404
        )

    async def page(**shown: Any) -> HTMLResponse:
        return await _petition_page(request, pool, settings, now, slug, embed=embed, **shown)

    if website:
        # Only bots fill the hidden field: thank them and record nothing.
        return await page(thanks={"message": "Thank you for signing."})
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
        return await page(form=form, errors=exc.errors, status_code=422)
    except PetitionClosedError:
        return await page(form=form, status_code=409)
    except RateLimited as exc:
        response = await page(
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
    return await page(thanks={"message": accepted_message(outcome), "status": outcome.status})


def _link_not_valid(request: Request, why: str) -> HTMLResponse:
    """A token link that no longer works (used, expired or never issued): the same page
    whichever it is, so a guess learns nothing."""
    return message_page(request, "Link not valid", why, 404, secret_url=True)


_CONFIRMATION_SPENT = "This confirmation link has expired or has already been used."
_WITHDRAWN = "This signature has already been withdrawn."


@router.get("/confirm/{token}", response_class=HTMLResponse)
async def confirm_page(token: str, request: Request, pool: Pool, now: Now) -> HTMLResponse:
    # A GET never confirms: mail scanners fetch links before people do.
    if not await confirmation_pending(pool, token, now):
        return _link_not_valid(request, _CONFIRMATION_SPENT)
    return render_page(request, "confirm.html", {"action": f"/confirm/{token}"}, secret_url=True)


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
        return _link_not_valid(request, _CONFIRMATION_SPENT)
    url = share_url(settings, done.share_code)
    return render_page(
        request,
        "confirmed.html",
        {
            "title": done.title,
            "slug": done.slug,
            "share": personal_share_links(url, done.title),
        },
        secret_url=True,  # and it shows the signer's personal share link
    )


@router.get("/withdraw/{token}", response_class=HTMLResponse)
async def withdraw_page(token: str, request: Request, pool: Pool) -> HTMLResponse:
    try:
        _, title = await withdrawable(pool, token)
    except TokenNotValid:
        return _link_not_valid(request, _WITHDRAWN)
    return render_page(
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
        return _link_not_valid(request, _WITHDRAWN)
    return message_page(
        request,
        "Signature withdrawn",
        f"Your signature on \u201c{title}\u201d has been removed.",
        status.HTTP_200_OK,
        secret_url=True,
    )
