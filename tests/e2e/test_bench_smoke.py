"""The surge benchmark keeps working: a few-second run with tiny rates, its figures sane.

No speed is asserted (speed is measured in bench/, never by tests): only that the command
ran the whole stack, produced its table, JSON and plot, and that what it reports holds
together (signatures accepted and every one of them counted, every email in the sink).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Per-thread scheduler figures (run-queue wait), on Linux with schedstats.
SCHEDSTAT = Path("/proc/self/schedstat")


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    """bench/surge.py with its own database, broker and sink, as for a developer without
    these variables set; asserts that it succeeded."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "SMTP_HOST", "SMTP_PORT")
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "surge.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_surge_bench_runs_end_to_end_and_reports_sane_figures(tmp_path: Path) -> None:
    results, plot = tmp_path / "surge.json", tmp_path / "surge.png"
    done = run_bench(
        "--steps",
        "15,30",
        "--seconds",
        "3",
        "--keep-going",
        "--part-seconds",
        "1",
        "--seed-signatures",
        "8",
        "--json",
        str(results),
        "--plot",
        str(plot),
    )
    assert "| offered/s |" in done.stdout  # the Markdown table was printed

    body = json.loads(results.read_text())
    assert [s["rate"] for s in body["steps"]] == [15, 30]
    for step in body["steps"]:
        assert step["accepted"] > 0
        assert step["accepted"] + step["shed"] + sum(step["errors"].values()) == step["requests"]
        assert step["http_ms"]["p50"] is not None
        # Accepted and refused answers apart: a 503 latency exactly when there were 503s.
        assert step["accepted_ms"]["p50"] is not None
        assert step["accepted_ms"]["max"] <= step["http_ms"]["max"]
        assert (step["shed_ms"]["p99"] is None) == (step["shed"] == 0)
        # Signing's refusals by rule, read from its metrics: every rule reported.
        reasons = step["shed_by_reason"]
        assert set(reasons) == {"in_flight", "loop_lag", "writer_queue", "outbox_backlog"}
        assert sum(reasons.values()) <= step["shed"]
        assert step["freshness_ms"]["p50"] is not None
        assert step["emails"]["all_in_sink_after_s"] is not None
        assert set(step["targets"]) == {
            "http_p99_under_50ms",
            "no_errors_but_shedding",
            "freshness_p99_under_1s",
            "emails_in_sink_within_3min",
        }
        for process in ("signing", "counter", "mailer", "sharing", "postgres", "broker"):
            assert step["cpu_ms_per_signature"][process] > 0, process
            assert step["peak_rss_mb"][process] > 0, process
        assert step["cpu_ms_per_signature"]["load generator"] > 0
        # How long each process waited for a core, where the kernel keeps the figure.
        waits = step["core_wait_share_during_load"]
        if SCHEDSTAT.exists():
            assert {"signing", "postgres", "broker"} <= set(waits), waits
        assert all(wait >= 0 for wait in waits.values()), waits
    checks = body["checks"]
    assert checks["every_accepted_signature_counted"], checks
    assert checks["nothing_counted_that_was_not_sent"], checks
    assert checks["emails_in_sink"] >= checks["emails_expected"] > 0
    assert body["sink"].startswith("smtp-sink") or "FALLBACK" in body["sink"]
    # The compiled generator whenever the machine can build it (bench/loadgen.c).
    assert body["generator"].startswith("compiled") == (shutil.which("cc") is not None)
    for name in ("bare endpoint", "asyncpg inserts", "aiokafka produce", "raw SMTP"):
        assert body["parts"][name].get("per_s", 0) > 0, body["parts"][name]
    assert body["machine"]["cores"] >= 1
    cores = body["timeline"]["cpu_cores"]  # second by second, per process
    for process in ("signing", "broker", "postgres"):
        values = sorted(cores[process].values())
        assert values and values[-1] > 0, process
        assert 0 <= values[len(values) // 2] <= body["machine"]["cores"], process
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_signing_alone_alternates_closed_loops_and_quotes_their_median(tmp_path: Path) -> None:
    results = tmp_path / "signing.json"
    done = run_bench(
        "--signing-only",
        "--rate",
        "20",
        "--seconds",
        "2",
        "--closed-seconds",
        "1",
        "--closed-rounds",
        "3",
        "--part-seconds",
        "0",
        "--seed-signatures",
        "8",
        "--json",
        str(results),
    )
    assert "median of the rounds" in done.stdout

    closed = json.loads(results.read_text())["closed_loop"]
    assert len(closed["rounds"]) == 3
    ratios = []
    for loop in closed["rounds"]:
        bare, signing = loop["bare endpoint"]["per_s"], loop["signing"]["per_s"]
        assert bare > 0 and signing > 0
        # Each loop ran for its time, not out of requests (then its rate is the plan's).
        assert loop["bare endpoint"]["exhausted"] is False
        assert loop["signing"]["exhausted"] is False
        assert loop["signing_vs_bare"] == signing / bare
        ratios.append(signing / bare)
    assert closed["signing_vs_bare"] == sorted(ratios)[1]
