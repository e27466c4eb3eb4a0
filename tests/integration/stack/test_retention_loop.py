"""The retention loop of `make up`: the three real commands, one after another, against
a real PostgreSQL, each leaving its Prometheus textfile; the clock is passed in."""

from __future__ import annotations

import json
import time
from pathlib import Path

from groundswell_stack.infra import Infra
from groundswell_stack.retention import SERVICES, RetentionLoop
from groundswell_stack.services import clean_env

from ...conftest import scratch_database

TOKEN = "retention-loop-admin-token-0123456789abcdef"


def _run_round(loop: RetentionLoop, now: float) -> None:
    """Tick (at the frozen time `now`) until the round's three commands have finished."""
    deadline = time.monotonic() + 180  # a safety net against a hang, not a measurement
    loop.tick(now)
    while loop.current is not None or loop.queue:
        assert time.monotonic() < deadline, "retention commands did not finish"
        time.sleep(0.1)
        loop.tick(now)


async def test_a_round_runs_each_service_once_and_then_waits(infra: Infra, tmp_path: Path) -> None:
    said: list[str] = []
    async with scratch_database(infra, "retention") as url:
        env = clean_env() | {
            "DATABASE_URL": url,
            "ADMIN_TOKEN": TOKEN,
            "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
            "RETENTION_INTERVAL_SECONDS": "600",
        }
        loop = RetentionLoop(env, tmp_path, say=said.append)
        start = loop.due
        _run_round(loop, start)
        assert said == []  # no command failed
        for service in SERVICES:
            text = (tmp_path / "metrics" / f"groundswell-{service}-retention.prom").read_text()
            assert (
                f'groundswell_retention_last_run_timestamp_seconds{{service="{service}"}}' in text
            )
        runs = [
            json.loads(line)
            for line in (tmp_path / "logs" / "retention.log").read_text().splitlines()
            if '"retention_run"' in line
        ]
        assert [r["service"] for r in runs] == list(SERVICES)

        # Not due again before the interval has passed...
        loop.tick(start + 599)
        assert loop.current is None and loop.rounds == 1
        # ...and a second round once it has.
        _run_round(loop, start + 600)
        assert loop.rounds == 2
        loop.stop()


async def test_a_failing_command_is_said_and_does_not_stop_the_round(
    tmp_path: Path,
) -> None:
    said: list[str] = []
    env = clean_env() | {
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",  # nothing listens on 9
        "ADMIN_TOKEN": TOKEN,
    }
    loop = RetentionLoop(env, tmp_path, say=said.append)
    _run_round(loop, loop.due)
    assert len(said) == len(SERVICES)
    assert all("failed" in line and "runs again next round" in line for line in said)
