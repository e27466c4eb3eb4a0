"""What a retention run says it did: Prometheus text and one log line, counts only.

Retention runs are batch jobs (cron, a Kubernetes CronJob, the loop in `make up`):
nothing scrapes a process that lives for a second, so each run leaves its figures in a
file for node_exporter's textfile collector (`--metrics-file`, written whole and then
renamed by prometheus_client, so the collector never reads half a file) and prints the
same text. The figures are gauges of the last run: a run that stops happening shows as
a `..._last_run_timestamp_seconds` that no longer moves, which is what to alert on.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import asyncpg
import structlog
from prometheus_client import CollectorRegistry, Gauge, generate_latest, write_to_textfile

log = structlog.get_logger()


def add_retention_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `retention` subcommand, the same in every service."""
    retention = commands.add_parser(
        "retention", help="delete or anonymise what is past its retention period, then exit"
    )
    retention.add_argument(
        "--metrics-file",
        type=Path,
        default=None,
        help="also write the run's figures here (node_exporter textfile, e.g. "
        "/var/lib/node_exporter/textfile/groundswell-<service>-retention.prom)",
    )


async def delete_in_batches(
    pool: asyncpg.Pool, statement: str, *args: object, batch_size: int
) -> int:
    """Run a DELETE whose last parameter is its batch size (`... LIMIT $n` in a subquery)
    until it deletes less than a batch; each batch is its own short transaction, so a
    large backlog never holds many row locks at once. Returns the rows deleted."""
    total = 0
    while True:
        async with pool.acquire() as conn:
            deleted = int((await conn.execute(statement, *args, batch_size)).split()[-1])
        total += deleted
        if deleted < batch_size:
            return total


def report(
    service: str,
    counts: Mapping[str, int],
    *,
    seconds: float,
    finished_at: float,
    metrics_file: Path | None = None,
) -> str:
    """Log the run (counts only: never an address, a name or an id) and return its
    Prometheus text, also written to `metrics_file` when given."""
    registry = CollectorRegistry()
    rows = Gauge(
        "groundswell_retention_rows",
        "Rows the last retention run deleted or anonymised, per action",
        ["service", "action"],
        registry=registry,
    )
    for action, count in counts.items():
        rows.labels(service, action).set(count)
    Gauge(
        "groundswell_retention_last_run_timestamp_seconds",
        "When the last retention run finished (Unix time)",
        ["service"],
        registry=registry,
    ).labels(service).set(finished_at)
    Gauge(
        "groundswell_retention_last_run_duration_seconds",
        "How long the last retention run took",
        ["service"],
        registry=registry,
    ).labels(service).set(seconds)
    if metrics_file is not None:
        metrics_file.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(str(metrics_file), registry)
    log.info("retention_run", seconds=round(seconds, 3), **dict(counts))
    return generate_latest(registry).decode()
