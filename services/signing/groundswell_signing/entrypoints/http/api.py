"""The public JSON API: read a petition, sign it, from our pages or a campaign's own site."""

from __future__ import annotations

import functools
from datetime import datetime

from fastapi import APIRouter, Request, Response, status

from groundswell_signing.domain.petitions import Petition
from groundswell_signing.domain.signatures import SignatureInput, validate_signature
from groundswell_signing.entrypoints.http.dependencies import (
    ClientIP,
    Now,
    Petitions,
    Policy,
    Pool,
    Settings,
    Writer,
)
from groundswell_signing.entrypoints.http.schemas import (
    PetitionOut,
    SignatureAccepted,
    SignatureRequest,
)
from groundswell_signing.service_layer import petitions as petition_service
from groundswell_signing.service_layer.group_commit import SignatureWriter
from groundswell_signing.service_layer.petitions import PetitionCache
from groundswell_signing.service_layer.signing import (
    AbusePolicy,
    SignOutcome,
    SignStatus,
    sign_petition,
)

router = APIRouter(prefix="/api/petitions", tags=["public"])

ERRORS: dict[int | str, dict[str, str]] = {
    404: {"description": "No such petition"},
    409: {"description": "The petition is closed"},
    413: {"description": "Request body too large"},
    422: {"description": "A field is missing or invalid; each bad field is named"},
    429: {"description": "Too many signatures from this network; see Retry-After"},
    503: {"description": "Over capacity or the database is briefly away; see Retry-After"},
}


def accepted_message(outcome: SignOutcome) -> str:
    if outcome.status == "pending_confirmation":
        return (
            "Check your email: follow the link in it to confirm your signature. "
            "Your personal link to share comes with it."
        )
    return "Thank you for signing. We have emailed you your personal link to share."


def share_url(settings: Settings, share_code: str) -> str:
    """A signer's personal share link: only ever shown to the signer (email, confirmed page)."""
    return f"{settings.share_base_url}/s/{share_code}"


def petition_url(settings: Settings, slug: str) -> str:
    """What the answer to a signing request offers for sharing. Never a personal link:
    the answer to a duplicate must not reveal anything about the person who signed."""
    return petition_page(settings.public_base_url, slug)


def petition_page(public_base_url: str, slug: str) -> str:
    return f"{public_base_url}/p/{slug}"


def _cors_allowed(origin: str | None, petition: Petition, settings: Settings) -> bool:
    return origin is not None and (
        origin in settings.cors_origins or origin in petition.cors_origins
    )


@router.get("/{slug}", response_model=PetitionOut, responses={404: ERRORS[404]})
async def read_petition(
    slug: str, pool: Pool, settings: Settings, now: Now, response: Response
) -> PetitionOut:
    petition = await petition_service.get_petition(pool, slug)
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Cache-Control"] = "public, max-age=30"
    return PetitionOut.of(petition, settings.public_base_url, settings.counter_public_url, now)


@router.options("/{slug}/signatures", include_in_schema=False)
async def signing_preflight(
    slug: str, request: Request, pool: Pool, settings: Settings
) -> Response:
    petition = await petition_service.get_petition(pool, slug)
    origin = request.headers.get("origin")
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    if _cors_allowed(origin, petition, settings):
        assert origin is not None
        response.headers.update(
            {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": "Content-Type, X-Request-ID",
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            }
        )
    return response


@router.post(
    "/{slug}/signatures",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SignatureAccepted,
    responses={k: v for k, v in ERRORS.items() if k != 422},
)
async def sign(
    slug: str,
    body: SignatureRequest,
    request: Request,
    response: Response,
    writer: Writer,
    petitions: Petitions,
    policy: Policy,
    settings: Settings,
    ip: ClientIP,
    now: Now,
) -> SignatureAccepted:
    """Sign a petition. Signing again gets the same answer and counts once; the personal
    share link arrives by email."""
    outcome = await accept_signature(body, slug, writer, petitions, policy, ip, now)
    answer = signature_accepted(settings.public_base_url, slug, outcome.status)
    origin = request.headers.get("origin")
    if origin and _cors_allowed(origin, await petitions.get(slug), settings):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    return answer


async def accept_signature(
    body: SignatureRequest,
    slug: str,
    writer: SignatureWriter,
    petitions: PetitionCache,
    policy: AbusePolicy,
    ip: str | None,
    now: datetime,
) -> SignOutcome:
    """What both ways in (this route, and fast_sign's lean path) do with a request body."""
    valid = validate_signature(
        SignatureInput(
            name=body.name,
            email=body.email,
            postcode=body.postcode,
            country=body.country,
            contact_consent=body.contact_consent,
            ref=body.ref,
            source=body.source,
            ref_channel=body.ref_channel,
            leaderboard_consent=body.leaderboard_consent,
        )
    )
    return await sign_petition(writer, petitions, policy, slug, valid, ip, now)


def signature_accepted(public_base_url: str, slug: str, status: SignStatus) -> SignatureAccepted:
    """The answer to an accepted signature: the same for every signer of a petition (and
    for a duplicate), so fast_sign.py keeps it encoded (`accepted_json`)."""
    return SignatureAccepted(
        status=status,
        share_url=petition_page(public_base_url, slug),  # never a personal link
        message=accepted_message(SignOutcome(status)),
    )


@functools.lru_cache(maxsize=1024)
def accepted_json(public_base_url: str, slug: str, status: SignStatus) -> bytes:
    """`signature_accepted` as JSON bytes, made once per petition and status. Only slugs
    of petitions that exist get here (the petition was found), and the cache is bounded."""
    return signature_accepted(public_base_url, slug, status).model_dump_json().encode()
