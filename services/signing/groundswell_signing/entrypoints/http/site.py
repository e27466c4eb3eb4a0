"""The campaign's own pages: the list of open petitions (`/`), the privacy notice
(`/privacy`) and the brand colour as a stylesheet (`/brand.css`).

The colour comes as a stylesheet of its own because the pages' CSP allows no inline
style; the organisation profile has validated it as a hex colour, so it cannot break out
of the declaration.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from groundswell_signing.entrypoints.http.dependencies import Now, Pool, Settings
from groundswell_signing.entrypoints.http.pages import render_page
from groundswell_signing.service_layer import petitions as petition_service

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def open_petitions(request: Request, pool: Pool, now: Now) -> HTMLResponse:
    petitions = [
        p for p in await petition_service.list_petitions(pool) if p.accepting_signatures(now)
    ]
    petitions.sort(key=lambda p: p.created_at, reverse=True)
    return render_page(request, "index.html", {"petitions": petitions})


@router.get("/privacy", response_class=HTMLResponse)
async def privacy_notice(request: Request, settings: Settings) -> Response:
    organisation = settings.organisation
    paragraphs = organisation.privacy_paragraphs()
    if not paragraphs and organisation.privacy_policy_url:
        # The campaign's own policy lives elsewhere; old links to /privacy still reach it.
        return RedirectResponse(organisation.privacy_url(settings.public_base_url), 302)
    return render_page(
        request,
        "privacy.html",
        {"paragraphs": paragraphs, "confirmation_ttl_hours": settings.confirmation_ttl_hours},
    )


@router.get("/brand.css")
async def brand_stylesheet(settings: Settings) -> Response:
    colour = settings.organisation.brand_colour
    return Response(
        f":root {{ --accent: {colour}; --brand: {colour}; }}\n",
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=300"},
    )
