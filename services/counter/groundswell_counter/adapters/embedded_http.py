"""The HTTP server and the counts view as services inside the faust worker's event loop."""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager
from typing import Any

import mode
import uvicorn
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
        self._server = _EmbeddedServer(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_config=None,  # keep the JSON logging already configured
                access_log=False,  # client addresses are personal data
                lifespan="off",
                timeout_graceful_shutdown=2,  # open live streams must not hold up a stop
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
