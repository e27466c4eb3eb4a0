"""The campaign's supporters export (Bearer ADMIN_TOKEN): who ticked "the campaign may
email me", with the wording they agreed to and when.

Streamed from PostgreSQL: a server-side cursor inside one REPEATABLE READ transaction
yields CSV a page at a time, so memory stays flat however many supporters a petition
has, and the row count written to the audit log (taken in the same snapshot before the
first row goes out) is exactly what the file holds. The audit row commits on its own
connection before any data leaves: an export cut off half-way is still recorded.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence

import asyncpg
from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from groundswell_signing.adapters import exports, repository
from groundswell_signing.config import SigningSettings
from groundswell_signing.domain.petitions import PetitionNotFound
from groundswell_signing.entrypoints.http.admin import audit, spreadsheet_safe, token_fingerprint
from groundswell_signing.entrypoints.http.dependencies import Pool, Settings, require_admin

router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(require_admin)])

# Rows per fetch from the cursor, and so per chunk of the response.
PAGE = 500
ACTION = "supporters_export"


def _csv(rows: Iterable[Sequence[object]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def _cells(row: asyncpg.Record) -> list[str]:
    return [
        spreadsheet_safe(row["email"]),
        spreadsheet_safe(row["name"]),
        spreadsheet_safe(row["consent_wording_version"]),
        row["consent_at"].isoformat(),
    ]


async def _stream(
    pool: asyncpg.Pool, petition_id: uuid.UUID, slug: str, settings: SigningSettings
) -> AsyncIterator[str]:
    async with (
        pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        total = await exports.count_supporters(conn, petition_id)
        await exports.record_export(
            pool, who=token_fingerprint(settings), action=ACTION, petition_slug=slug, rows=total
        )
        audit(settings, ACTION, slug, rows=total)
        yield _csv([exports.SUPPORTERS_COLUMNS])
        cursor = await exports.supporters_cursor(conn, petition_id)
        while page := await cursor.fetch(PAGE):
            yield _csv(_cells(row) for row in page)


@router.get("/petitions/{slug}/supporters.csv", response_class=StreamingResponse)
async def export_supporters(slug: str, pool: Pool, settings: Settings) -> StreamingResponse:
    """Supporters who agreed to campaign email (email, name, consent wording version,
    consent time): confirmed, not withdrawn, invalidated or erased."""
    async with pool.acquire() as conn:
        petition = await repository.get_petition(conn, slug)
    # Before the response starts: an unknown petition is a 404, not a broken stream.
    if petition is None:
        raise PetitionNotFound(slug)
    return StreamingResponse(
        _stream(pool, petition.id, slug, settings),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{slug}-supporters.csv"'},
    )
