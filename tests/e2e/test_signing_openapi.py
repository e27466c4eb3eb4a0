"""schemathesis against the signing service's own OpenAPI: no 5xx, responses match the schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import ADMIN_TOKEN, Stack

CHECKS = "not_a_server_error,response_schema_conformance,negative_data_rejection"


def test_signing_api_conforms_to_its_openapi(stack: Stack, tmp_path: Path) -> None:
    cli = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [
            str(cli),
            "run",
            f"{stack.urls['signing']}/openapi.json",
            "--checks",
            CHECKS,
            "--max-examples",
            "40",
            "--header",
            f"Authorization: Bearer {ADMIN_TOKEN}",
            "--seed",
            "20261128",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    failures = result.stdout.split("FAILURES", 1)[-1].split("WARNINGS", 1)[0]
    assert result.returncode == 0, failures[:8000] + result.stderr[-2000:]
    assert "passed" in result.stdout.lower()
