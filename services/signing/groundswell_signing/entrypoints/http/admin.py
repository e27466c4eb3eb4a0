"""The organisers' API (Bearer ADMIN_TOKEN).

Every call that succeeds leaves one `admin_audit` log line: who (the admin token, named
by a short fingerprint: never the token), the action, the petition and, for an export,
the rows handed out. Values (field contents, invalidation criteria) are never logged:
they can be personal data; the names of what changed are.
"""

from __future__ import annotations

import csv
import hashlib
import io
import ipaddress
from typing import Any

import structlog
from fastapi import APIRouter, Depends, status
from fastapi.responses import StreamingResponse
from groundswell_runtime.http_errors import unprocessable

from groundswell_signing.adapters import exports, repository
from groundswell_signing.config import SigningSettings
from groundswell_signing.domain.petitions import PetitionNotFound
from groundswell_signing.domain.signatures import FORMULA_PREFIXES
from groundswell_signing.entrypoints.http.dependencies import (
    Now,
    Petitions,
    Pool,
    Settings,
    require_admin,
)
from groundswell_signing.entrypoints.http.schemas import (
    AdminPetitionOut,
    InvalidationRequest,
    InvalidationResult,
    PetitionCreate,
    PetitionPatch,
)
from groundswell_signing.service_layer import petitions as petition_service

router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(require_admin)])

log = structlog.get_logger()


def token_fingerprint(settings: SigningSettings) -> str:
    """8 hex digits of the token's SHA-256: tells a rotated token from the old one in the
    audit trail. 32 bits of a hash of a 192-bit random token reveal nothing usable."""
    digest = hashlib.sha256(settings.admin_token.get_secret_value().encode()).hexdigest()
    return digest[:8]


def audit(settings: SigningSettings, action: str, slug: str | None = None, **facts: Any) -> None:
    log.info(
        "admin_audit",
        who=f"admin token {token_fingerprint(settings)}",
        action=action,
        petition=slug,
        **facts,
    )


@router.post("/petitions", status_code=status.HTTP_201_CREATED, response_model=AdminPetitionOut)
async def create_petition(
    body: PetitionCreate, pool: Pool, settings: Settings, now: Now
) -> AdminPetitionOut:
    petition = await petition_service.create_petition(pool, body.model_dump())
    audit(settings, "petition_create", petition.slug)
    return AdminPetitionOut.of_admin(
        petition, settings.public_base_url, settings.counter_public_url, now
    )


@router.get("/petitions", response_model=list[AdminPetitionOut])
async def list_petitions(pool: Pool, settings: Settings, now: Now) -> list[AdminPetitionOut]:
    petitions = await petition_service.list_petitions(pool)
    audit(settings, "petition_list", petitions=len(petitions))
    return [
        AdminPetitionOut.of_admin(p, settings.public_base_url, settings.counter_public_url, now)
        for p in petitions
    ]


@router.get("/petitions/{slug}", response_model=AdminPetitionOut)
async def read_petition(slug: str, pool: Pool, settings: Settings, now: Now) -> AdminPetitionOut:
    petition = await petition_service.get_petition(pool, slug)
    audit(settings, "petition_read", slug)
    return AdminPetitionOut.of_admin(
        petition, settings.public_base_url, settings.counter_public_url, now
    )


@router.patch("/petitions/{slug}", response_model=AdminPetitionOut)
async def update_petition(
    slug: str, body: PetitionPatch, pool: Pool, settings: Settings, now: Now, petitions: Petitions
) -> AdminPetitionOut:
    """Edit fields; `status: "closed"` closes, `"open"` reopens; `null` clears goal/closes_at."""
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    nullable = {"goal", "closes_at", "organiser_email"}
    for field, value in changes.items():
        if value is None and field not in nullable:
            raise unprocessable(field, f"{field} cannot be null")
    petition = await petition_service.update_petition(pool, slug, changes)
    petitions.forget(slug)
    audit(settings, "petition_update", slug, fields=sorted(changes))
    return AdminPetitionOut.of_admin(
        petition, settings.public_base_url, settings.counter_public_url, now
    )


@router.get("/petitions/{slug}/tally")
async def tally(slug: str, pool: Pool, settings: Settings) -> dict[str, int]:
    """Counts computed from PostgreSQL, the source of truth: the counter's figures must match."""
    figures = await petition_service.tally(pool, slug)
    audit(settings, "petition_tally", slug)
    return figures


@router.post("/petitions/{slug}/invalidations", response_model=InvalidationResult)
async def invalidate(
    slug: str, body: InvalidationRequest, pool: Pool, now: Now, settings: Settings
) -> InvalidationResult:
    """Invalidate every live signature matching ALL the given criteria; counts drop accordingly."""
    if not any([body.ip, body.email_domain, body.postcode, body.since, body.until]):
        raise unprocessable(None, "Give at least one of ip, email_domain, postcode, since, until")
    network = None
    if body.ip:
        try:
            network = str(ipaddress.ip_network(body.ip, strict=False))
        except ValueError:
            raise unprocessable("ip", "Give an IP address or CIDR range") from None
    count = await petition_service.invalidate_signatures(
        pool,
        slug,
        reason=body.reason,
        ip_network=network,
        email_domain=body.email_domain,
        postcode=body.postcode,
        since=body.since,
        until=body.until,
        now=now,
    )
    criteria = ("ip", "email_domain", "postcode", "since", "until")
    audit(
        settings,
        "signatures_invalidate",
        slug,
        criteria=[c for c in criteria if getattr(body, c)],
        invalidated=count,
    )
    return InvalidationResult(invalidated=count)


def spreadsheet_safe(value: object) -> str:
    """A cell that a spreadsheet will show as text, never run as a formula."""
    text = "" if value is None else str(value)
    if text.startswith((*FORMULA_PREFIXES, "\t", "\r")):
        return "'" + text
    return text


@router.get("/petitions/{slug}/signatures.csv", response_class=StreamingResponse)
async def export_signatures(slug: str, pool: Pool, settings: Settings) -> StreamingResponse:
    """Counted signatures (name, postcode, country, signed_at) for delivery to the target."""
    async with pool.acquire() as conn:
        petition = await repository.get_petition(conn, slug)
        if petition is None:
            raise PetitionNotFound(slug)
        rows = await repository.export_rows(conn, petition.id)
        await exports.record_export(
            conn,
            who=token_fingerprint(settings),
            action="signatures_export",
            petition_slug=slug,
            rows=len(rows),
        )
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["name", "postcode", "country", "signed_at"])
    for row in rows:
        writer.writerow(
            [
                spreadsheet_safe(row["name"]),
                spreadsheet_safe(row["postcode"]),
                spreadsheet_safe(row["country"]),
                row["signed_at"].isoformat(),
            ]
        )
    audit(settings, "signatures_export", slug, rows=len(rows))
    return StreamingResponse(
        iter([buffer.getvalue()]),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{slug}-signatures.csv"'},
    )
