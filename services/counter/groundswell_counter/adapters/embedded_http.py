"""The HTTP server and the counts view as services inside the faust worker's event loop."""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager
from typing import Any

import mode
import uvicorn
from groundswell_runtime.serving import server_config
from starlette.types import ASGIApp

from groundswell_counter.adapters.counts_view import CountsView


class _EmbeddedServer(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # faust owns SIGTERM/SIGINT and stops this server through `HttpService.on_stop`.
        yield


class HttpService(mode.Service):
    def __init__(self, app: ASGIApp, host: str, port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The limits every service's server has (header size and count, slow heads,
        # idle keep-alive, concurrency): groundswell_runtime.serving.
        self._server = _EmbeddedServer(
            server_config(
                app,
                host=host,
                port=port,
                lifespan="off",
                timeout_graceful_shutdown=2,  # open live streams must not hold up a stop
                loop="asyncio",  # faust's loop is already running; the server joins it
                # Each live count stream holds a connection (~14 KB when idle): far more
                # than other services' cap, and bounded per client network in http.py.
                limit_concurrency=20_000,
            )
        )

    @mode.Service.task
    async def _serve(self) -> None:
        await self._server.serve()

    async def on_stop(self) -> None:
        self._server.should_exit = True


class CountsViewService(mode.Service):
    def __init__(self, view: CountsView, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._view = view

    @mode.Service.task
    async def _run(self) -> None:
        await self._view.run()
