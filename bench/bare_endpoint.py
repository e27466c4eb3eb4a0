"""The ceiling for the signing endpoint: FastAPI + pydantic and nothing else.

    python bench/bare_endpoint.py --port 9001 [--workers 1]

The same route, request and response models as the signing service (imported from
it), served by uvicorn exactly as the services are (`groundswell_runtime.serving.serve`
where it exists, else the signing service's former `uvicorn.run` settings), but no
database, no abuse checks and no outbox: what the web stack alone costs per request.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from fastapi import FastAPI, status
from groundswell_signing.entrypoints.http.schemas import SignatureAccepted, SignatureRequest

try:  # the services turn FastAPI's native telemetry off; so does the reference
    from groundswell_runtime.service import NO_TELEMETRY

    app = FastAPI(title="bare endpoint", telemetry=NO_TELEMETRY)
except ImportError:  # a tree from before the service scaffold
    app = FastAPI(title="bare endpoint")


@app.post(
    "/api/petitions/{slug}/signatures",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SignatureAccepted,
)
async def sign(slug: str, body: SignatureRequest) -> SignatureAccepted:
    return SignatureAccepted(
        status="signed",
        share_url=f"http://127.0.0.1:8004/s/{slug[:4]}bare",
        message="Thank you for signing.",
    )


@app.get("/readyz")
async def ready() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    app_dir = str(Path(__file__).parent)
    try:
        from groundswell_runtime.serving import serve
    except ImportError:  # before the services shared one way of running uvicorn
        uvicorn.run(
            "bare_endpoint:app",
            app_dir=app_dir,
            host="127.0.0.1",
            port=args.port,
            workers=args.workers,
            log_config=None,
            access_log=False,
            proxy_headers=True,
        )
        return
    serve(
        "bare_endpoint:app", host="127.0.0.1", port=args.port, workers=args.workers, app_dir=app_dir
    )


if __name__ == "__main__":
    main()
