"""`groundswell-stack reconcile` tells "cannot connect" (3) from drift (1), in one line."""

from __future__ import annotations

import os
import subprocess
import sys

from groundswell_stack.processes import free_port


def test_reconcile_exits_3_with_one_line_when_the_services_are_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "groundswell_stack.cli", "reconcile", "--signing-url", url],
        env={**os.environ, "ADMIN_TOKEN": "x" * 32},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"groundswell-stack reconcile: cannot reach the services ({url}")
