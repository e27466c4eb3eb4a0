"""schemathesis against sharing's own OpenAPI: no 5xx, responses match the schema.

A general guard for item 12 (bad input is a 4xx, never a 500). It is not the item's
reproduction: with this seed and budget schemathesis does not generate the NUL slug
that made the old code fail; test_sharing_holes.py does that on purpose.

The module's app (already started) is served over real HTTP by an in-process uvicorn,
and schemathesis runs as a subprocess against it, as tests/e2e does for signing.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import uvicorn

CHECKS = "not_a_server_error,response_schema_conformance,negative_data_rejection"


async def test_sharing_openapi_has_no_server_errors(sharing: Any, kit: Any, tmp_path: Path) -> None:
    # Something to find: a petition with a link, so valid slugs and codes are exercised too.
    event = kit.signature(petition_slug="openapi-probe", share_code="openapiprobe")
    await kit.publish(event)

    async def stored() -> bool:
        response = await sharing.client.get("/api/petitions/openapi-probe/shares")
        return response.status_code == 200

    await kit.eventually(stored)

    server = uvicorn.Server(
        uvicorn.Config(sharing.app, host="127.0.0.1", port=0, lifespan="off", log_config=None)
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        cli = Path(sys.executable).parent / "schemathesis"
        process = await asyncio.create_subprocess_exec(
            str(cli),
            "run",
            f"http://127.0.0.1:{port}/openapi.json",
            "--checks",
            CHECKS,
            "--max-examples",
            "40",
            "--header",
            f"Authorization: Bearer {kit.admin_token}",
            "--seed",
            "20261202",
            "--report-dir",
            str(tmp_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=300)
    finally:
        server.should_exit = True
        await serving
    stdout, stderr = out.decode(), err.decode()
    failures = stdout.split("FAILURES", 1)[-1].split("WARNINGS", 1)[0]
    assert process.returncode == 0, failures[:8000] + stderr[-2000:]
    assert "passed" in stdout.lower()
