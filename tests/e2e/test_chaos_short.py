"""`groundswell-stack chaos --short` (issue 9): the stack as `make up` runs it, under a
low signing load, survives kill -9 of the mailer, a fast PostgreSQL restart and a poison
record on every topic, and every invariant holds after each (see docs/reliability.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from groundswell_stack.chaos.faults import CONSUMERS_OF


def test_short_chaos_run_keeps_every_invariant() -> None:
    # Not pytest's tmp_path: its parents are private to root, and PostgreSQL runs as postgres.
    work = Path(tempfile.mkdtemp(prefix="groundswell-chaos-test-"))
    work.chmod(0o755)
    results = work / "chaos.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "groundswell-stack"),
            "chaos",
            "--short",
            "--no-doc",
            "--json",
            str(results),
            "--run-dir",
            str(work / "run"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    printed = done.stdout[-6000:] + done.stderr[-3000:]
    assert results.exists(), printed
    rows = json.loads(results.read_text())["rows"]
    assert [r["fault"] for r in rows] == [
        "kill -9 mailer",
        "PostgreSQL restart (fast)",
        "poison event on every topic",
    ], printed
    for row in rows:
        assert row["recovery_s"] is not None, f"{row['fault']} never recovered\n{printed}"
        assert row["drain_s"] is not None, f"{row['fault']}: the stack never went quiet\n{printed}"
        failed = [c for c in row["checks"] if not c["ok"]]
        assert not failed, f"{row['fault']}: {failed}\n{printed}"
        assert {c["name"] for c in row["checks"]} >= {
            "202 in PostgreSQL",
            "count = PostgreSQL",
            "sharing knows every signer",
            "one thank-you each",
            "every DLQ entry explained",
            "no 5xx outside faults",
            "no 503 shed outside faults",
        }
    # The poison reached every consumer's dead-letter topic, and nothing else is there.
    final = {c["name"]: c["detail"] for c in rows[-1]["checks"]}
    # One per consumer of each topic (signatures: counter, mailer, sharing; petitions:
    # counter, sharing; signer-keys, privacy, milestones: mailer).
    expected = sum(len(consumers) for consumers in CONSUMERS_OF.values())
    assert final["every DLQ entry explained"].startswith(
        f"{expected} dead letters, 0 unexplained"
    ), final
    assert done.returncode == 0, printed
    shutil.rmtree(work, ignore_errors=True)  # kept for a look when anything failed
