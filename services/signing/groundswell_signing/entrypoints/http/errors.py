"""Domain errors as HTTP answers a person can act on."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from groundswell_runtime.db import TEMPORARY_DATABASE_ERRORS

from groundswell_signing.domain.petitions import PetitionClosedError, PetitionNotFound
from groundswell_signing.domain.signatures import SignatureError
from groundswell_signing.entrypoints.http.security import CrossSiteForm
from groundswell_signing.service_layer.group_commit import Overloaded, Unavailable
from groundswell_signing.service_layer.petitions import SlugTaken
from groundswell_signing.service_layer.signing import Blocked, RateLimited


def field_errors(errors: dict[str, str]) -> list[dict[str, object]]:
    """The same shape FastAPI uses for its own 422s, so clients handle one format."""
    return [
        {"loc": ["body", field], "msg": message, "type": "value_error"}
        for field, message in errors.items()
    ]


_SURROGATE = re.compile("[\ud800-\udfff]")


def encodable(value: Any) -> Any:
    """Lone surrogates replaced by U+FFFD all through a JSON-able value: a 422 that echoes
    the bad input (FastAPI's does) must not itself fail to encode as UTF-8."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {encodable(k): encodable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [encodable(v) for v in value]
    return value


def try_again_soon(request: Request, retry_after: int, detail: str) -> Response:
    """503 with Retry-After: JSON for the API, a friendly page for people."""
    headers = {"Retry-After": str(retry_after), "Cache-Control": "no-store"}
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": detail}, status_code=503, headers=headers)
    from groundswell_signing.entrypoints.http.pages import message_page

    page = message_page(
        request,
        "Please try again in a moment",
        "We are very busy right now and could not take your signature. "
        "Nothing was recorded: please try again in a moment.",
        503,
    )
    page.headers.update(headers)
    return page


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> Response:
        return try_again_soon(
            request,
            exc.retry_after,
            "Too many signatures at once; nothing was recorded. "
            f"Try again in {exc.retry_after} second(s).",
        )

    async def database_away(request: Request, exc: Exception) -> Response:
        return try_again_soon(
            request,
            Unavailable.retry_after,
            "The service is briefly unavailable; nothing was "
            f"recorded. Try again in {Unavailable.retry_after} seconds.",
        )

    temporary: tuple[type[BaseException], ...] = (Unavailable, *TEMPORARY_DATABASE_ERRORS)
    for kind in temporary:
        app.add_exception_handler(kind, database_away)  # type: ignore[arg-type]

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = encodable(jsonable_encoder(exc.errors()))
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(CrossSiteForm)
    async def cross_site(request: Request, exc: CrossSiteForm) -> Response:
        from groundswell_signing.entrypoints.http.pages import message_page

        return message_page(
            request,
            "Form sent from another site",
            "This form was sent from a page on another website, so nothing was done. "
            "If you meant to sign, confirm or withdraw, open the link on this site "
            "and use its button.",
            403,
            secret_url=request.url.path.startswith(("/confirm/", "/withdraw/")),
        )

    @app.exception_handler(SignatureError)
    async def invalid_signature(_: Request, exc: SignatureError) -> JSONResponse:
        return JSONResponse({"detail": field_errors(exc.errors)}, status_code=422)

    @app.exception_handler(PetitionNotFound)
    async def not_found(_: Request, exc: PetitionNotFound) -> JSONResponse:
        return JSONResponse({"detail": f"No petition called '{exc}'"}, status_code=404)

    @app.exception_handler(PetitionClosedError)
    async def closed(_: Request, exc: PetitionClosedError) -> JSONResponse:
        return JSONResponse(
            {"detail": "This petition is closed and no longer accepts signatures"}, status_code=409
        )

    @app.exception_handler(RateLimited)
    async def limited(_: Request, exc: RateLimited) -> JSONResponse:
        return JSONResponse(
            {
                "detail": "Too many signatures from your network; "
                f"try again in {exc.retry_after} seconds"
            },
            status_code=429,
            headers={"Retry-After": str(exc.retry_after)},
        )

    @app.exception_handler(Blocked)
    async def blocked(_: Request, exc: Blocked) -> JSONResponse:
        return JSONResponse(
            {"detail": "Signatures from your network are not accepted"}, status_code=403
        )

    @app.exception_handler(SlugTaken)
    async def taken(_: Request, exc: SlugTaken) -> JSONResponse:
        errors = field_errors({"slug": f"The slug '{exc}' is taken"})
        return JSONResponse({"detail": errors}, status_code=409)
