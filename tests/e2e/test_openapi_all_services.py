"""schemathesis against every service's own OpenAPI: no 5xx, responses match the schema.

The four services run as separate processes (the e2e stack); schemathesis runs as a
subprocess per service, two at a time, and its HAR report says how many requests it
sent, so the budget below is checked, not assumed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import ADMIN_TOKEN, Stack

CHECKS = "not_a_server_error,response_schema_conformance,negative_data_rejection"
# Examples per operation and phase: sized so the suite sends well over 2,000 requests.
MAX_EXAMPLES = {"signing": 50, "counter": 100, "mailer": 60, "sharing": 80}
MIN_REQUESTS = 2_000
# The live count stream never ends by design; its JSON twin is tested instead.
EXCLUDE_PATH = r".*/count/stream$"


def start(name: str, url: str, report: Path) -> subprocess.Popen[str]:
    cli = Path(sys.executable).parent / "schemathesis"
    return subprocess.Popen(
        [
            str(cli),
            "run",
            f"{url}/openapi.json",
            "--checks",
            CHECKS,
            "--max-examples",
            str(MAX_EXAMPLES[name]),
            "--exclude-path-regex",
            EXCLUDE_PATH,
            "--header",
            f"Authorization: Bearer {ADMIN_TOKEN}",
            "--seed",
            "20261202",
            "--request-timeout",
            "10",
            "--report",
            "har",
            "--report-har-path",
            str(report),
            "--report-dir",
            str(report.parent),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_every_service_conforms_to_its_openapi(stack: Stack, tmp_path: Path) -> None:
    names = list(MAX_EXAMPLES)
    outcomes: dict[str, tuple[int, str, str]] = {}
    requests: dict[str, int] = {}
    for pair in (names[:2], names[2:]):  # two at a time: the machine has two cores
        running = {n: start(n, stack.urls[n], tmp_path / n / "run.har") for n in pair}
        for name, process in running.items():
            out, err = process.communicate(timeout=300)
            outcomes[name] = (process.returncode, out, err)
    for name, (code, out, err) in outcomes.items():
        failures = out.split("FAILURES", 1)[-1].split("WARNINGS", 1)[0]
        assert code == 0, f"{name}:\n{failures[:6000]}{err[-2000:]}"
        assert "passed" in out.lower(), name
        har = json.loads((tmp_path / name / "run.har").read_text())
        requests[name] = len(har["log"]["entries"])
        statuses = [entry["response"]["status"] for entry in har["log"]["entries"]]
        assert not [s for s in statuses if s >= 500], (name, sorted(set(statuses)))
    print(f"schemathesis requests per service: {requests}")
    assert sum(requests.values()) >= MIN_REQUESTS, requests
