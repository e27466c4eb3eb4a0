"""How every service's HTTP server runs: one place for the limits that refuse abuse.

uvicorn's defaults accept any number of connections and keep idle ones for long; a
public service wants bounded header sizes, short idle and header timeouts and a cap on
concurrent work (beyond it uvicorn answers 503 at once, the cheapest answer there is).
"""

from __future__ import annotations

from typing import Any

import uvicorn

# Beyond this many connections or in-flight requests per process, answer 503 at once.
MAX_CONCURRENCY = 2_048
# Idle keep-alive connections are closed after this long.
KEEP_ALIVE_SECONDS = 5
# Largest incomplete HTTP event (request line plus headers) accepted by the h11 parser.
MAX_HEADER_BYTES = 16 * 1024


def serve(
    app: Any,
    *,
    host: str,
    port: int,
    workers: int = 1,
    factory: bool = False,
    **overrides: Any,
) -> None:
    """Run an ASGI app (or, with `workers` > 1, an import string of an app factory)."""
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": None,  # keep the JSON logging the service configured
        "access_log": False,
        "server_header": False,
        # Forwarded headers are read by groundswell_runtime.client_address, with the
        # service's own trusted-proxy list; uvicorn must not rewrite the peer first.
        "proxy_headers": False,
        "limit_concurrency": MAX_CONCURRENCY,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "backlog": 2_048,
        "loop": "uvloop",
        "http": "httptools",
    }
    if workers > 1:
        options.update(workers=workers, factory=factory)
    uvicorn.run(app, **options | overrides)
