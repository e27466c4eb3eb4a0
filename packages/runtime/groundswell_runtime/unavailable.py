"""A database that is briefly away is a 503 with Retry-After, never a 500.

The rule for what counts as "briefly away" is `db.TEMPORARY_DATABASE_ERRORS`; this is
the HTTP answer for services without pages of their own to show (signing has its own,
with a page for people).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from groundswell_runtime.db import TEMPORARY_DATABASE_ERRORS

RETRY_AFTER_SECONDS = 2


def install_database_unavailable_handler(app: FastAPI) -> None:
    async def unavailable(_: Request, exc: Exception) -> Response:
        return JSONResponse(
            {
                "detail": "The service is briefly unavailable; try again in "
                f"{RETRY_AFTER_SECONDS} seconds."
            },
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS), "Cache-Control": "no-store"},
        )

    for kind in TEMPORARY_DATABASE_ERRORS:
        app.add_exception_handler(kind, unavailable)  # type: ignore[arg-type]
