"""`/docs` and `/redoc` that work without the internet, on every service.

FastAPI's own pages load Swagger UI and ReDoc from a CDN (and a favicon from FastAPI's
site), so on an offline machine or a locked-down network they are blank. The assets come
instead from the `fastapi-offline` package (Swagger UI 5, which reads OpenAPI 3.1 as
FastAPI writes it, and ReDoc), served by the service itself under `ASSETS_PATH`. Only its
files are used: its `FastAPIOffline` factory would have to build each service's app.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import BaseRoute, Route

ASSETS_PATH = "/docs-assets"
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")


def assets_directory() -> Path:
    return Path(str(files("fastapi_offline").joinpath("static")))


def install_offline_docs(app: FastAPI) -> None:
    """Replace the app's CDN-backed `/docs` and `/redoc` pages with self-hosted ones.

    The app keeps its own URLs (`docs_url`, `redoc_url`; None leaves a page off) and
    its OAuth2 redirect page, which needs no assets.
    """
    docs_url, redoc_url, openapi_url = app.docs_url, app.redoc_url, app.openapi_url
    if openapi_url is None or (docs_url is None and redoc_url is None):
        return
    replaced = {url for url in (docs_url, redoc_url) if url is not None}
    app.router.routes[:] = [r for r in app.router.routes if not _serves(r, replaced)]
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_directory()), name="docs-assets")

    def asset(request: Request, name: str) -> str:
        return f"{request.scope.get('root_path', '')}{ASSETS_PATH}/{name}"

    if docs_url is not None:

        async def swagger_ui(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            return get_swagger_ui_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - Swagger UI",
                oauth2_redirect_url=app.swagger_ui_oauth2_redirect_url,
                swagger_js_url=asset(request, "swagger-ui-bundle.js"),
                swagger_css_url=asset(request, "swagger-ui.css"),
                swagger_favicon_url=asset(request, "favicon.png"),
                swagger_ui_parameters=app.swagger_ui_parameters,
            )

        app.add_api_route(docs_url, swagger_ui, include_in_schema=False)

    if redoc_url is not None:

        async def redoc(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            return get_redoc_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=asset(request, "redoc.standalone.js"),
                redoc_favicon_url=asset(request, "favicon.png"),
                with_google_fonts=False,  # fonts from Google are another CDN
            )

        app.add_api_route(redoc_url, redoc, include_in_schema=False)


def _serves(route: BaseRoute, paths: set[str]) -> bool:
    return isinstance(route, Route) and route.path in paths
