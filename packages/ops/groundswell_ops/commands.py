"""Each subcommand: gather through the data layer, print lines or JSON, return an exit code."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

from aiokafka.errors import KafkaError
from groundswell_contracts.headers import DLQ_SOURCE
from groundswell_contracts.topics import all_topics
from groundswell_runtime.kafka import TopicCreationError, ensure_topics
from rich.console import Console
from rich.live import Live
from rich.panel import Panel

from groundswell_ops import dlq
from groundswell_ops.cluster import Cluster, unreachable
from groundswell_ops.config import OpsConfig
from groundswell_ops.errors import Exit, OpsError
from groundswell_ops.render import render
from groundswell_ops.snapshot import Monitor, Snapshot
from groundswell_ops.streams import petition_key, tail, trace_logs, trace_topics


def emit(document: Any) -> None:
    print(json.dumps(document, default=str), flush=True)


async def monitor(
    config: OpsConfig,
    *,
    once: bool,
    interval: float,
    as_json: bool,
    svg: Path | None,
    console: Console,
) -> int:
    async with Cluster(config.bootstrap) as cluster:
        watcher = Monitor(config, cluster)
        try:
            if once or svg is not None:
                return await _monitor_once(watcher, interval, as_json, svg, console)
            await _monitor_live(watcher, interval, as_json, console)
            return Exit.OK
        finally:
            await watcher.close()


async def _monitor_once(
    watcher: Monitor, interval: float, as_json: bool, svg: Path | None, console: Console
) -> int:
    # Two readings: rates and lag trends need a before and an after.
    await watcher.tick()
    await asyncio.sleep(interval)
    snapshot = await watcher.tick()
    if as_json:
        emit(snapshot.to_json())
    else:
        console.print(render(snapshot))
    if svg is not None:
        save_svg(snapshot, svg)
    if snapshot.errors:
        return Exit.CANNOT_CONNECT  # the view is incomplete: say so to scripts
    return Exit.FINDING if snapshot.findings else Exit.OK


def save_svg(snapshot: Snapshot, path: Path) -> None:
    recorder = Console(record=True, width=150, file=io.StringIO(), force_terminal=True)
    recorder.print(render(snapshot))
    recorder.save_svg(str(path), title="groundswell-ops monitor")


async def _monitor_live(watcher: Monitor, interval: float, as_json: bool, console: Console) -> None:
    loop = asyncio.get_running_loop()
    if as_json:
        while True:
            started = loop.time()
            emit((await watcher.tick()).to_json())
            await asyncio.sleep(max(interval - (loop.time() - started), 0))
    with Live(console=console, screen=console.is_terminal, auto_refresh=False) as live:
        while True:
            started = loop.time()
            try:
                live.update(render(await watcher.tick()), refresh=True)
            except KafkaError as exc:
                # Keep watching: the broker coming back is exactly what an operator waits for.
                message = str(unreachable(watcher.cluster.bootstrap, exc))
                live.update(Panel(f"{message}; retrying", border_style="red"), refresh=True)
            await asyncio.sleep(max(interval - (loop.time() - started), 0))


async def topics(config: OpsConfig, *, create: bool, as_json: bool) -> int:
    if create:
        try:
            await ensure_topics(config.bootstrap, config.partitions, config.replication_factor)
        except TopicCreationError as exc:
            raise OpsError(str(exc)) from None
    async with Cluster(config.bootstrap) as cluster:
        layouts = await cluster.layout()
        configs = await cluster.configs(layouts)
    missing = [t for t in all_topics() if t not in layouts]
    rows: list[dict[str, Any]] = [
        {
            "topic": name,
            "partitions": len(layout.leaders),
            "replication": layout.replication,
            "configs": configs.get(name, {}),
            "expected_partitions": config.partitions if name in all_topics() else None,
        }
        for name, layout in layouts.items()
    ]
    wrong = [r for r in rows if r["expected_partitions"] not in (None, r["partitions"])]
    if as_json:
        emit({"topics": rows, "missing": missing, "wrong_partitions": [r["topic"] for r in wrong]})
    else:
        for r in rows:
            shown = " ".join(f"{k}={v}" for k, v in r["configs"].items())
            flag = f"  (expected {r['expected_partitions']} partitions)" if r in wrong else ""
            print(
                f"{r['topic']:<40} partitions={r['partitions']} "
                f"replication={r['replication']} {shown}{flag}".rstrip()
            )
        for name in missing:
            print(f"{name:<40} MISSING (groundswell-ops topics --create makes it)")
    return Exit.FINDING if missing or wrong else Exit.OK


async def dead_letters(
    config: OpsConfig,
    action: str,
    names: list[str],
    *,
    limit: int | None,
    dry_run: bool,
    as_json: bool,
) -> int:
    async with Cluster(config.bootstrap) as cluster:
        if action == "list":
            surveyed = await dlq.survey(cluster, names or None)
            if as_json:
                emit([{k: v for k, v in vars(d).items() if k != "pending"} for d in surveyed])
            for d in [] if as_json else surveyed:
                print(f"{d.topic:<24} held={d.total} redriven={d.redriven} waiting={d.waiting}")
            return Exit.FINDING if any(d.waiting for d in surveyed) else Exit.OK
        if action == "show":
            shown = []
            for name in names:
                shown += await dlq.waiting_records(cluster, name, limit)
            if as_json:
                emit([v.to_json() for v in shown])
            for v in [] if as_json else shown:
                print(v.line())
            return Exit.FINDING if shown else Exit.OK
        # redrive: the named topics, or every dead-letter topic with something waiting
        targets = names or [d.topic for d in await dlq.survey(cluster) if d.waiting]
        results = [await dlq.redrive(cluster, t, dry_run=dry_run) for t in targets]
    verb = "would send" if dry_run else "sent"
    if as_json:
        emit(
            [
                {
                    "topic": r.topic,
                    "dry_run": dry_run,
                    "sent": [v.to_json() for v in r.sent],
                    "unroutable": [v.to_json() for v in r.unroutable],
                }
                for r in results
            ]
        )
    for r in [] if as_json else results:
        print(f"{r.topic}: {verb} {len(r.sent)} back to their source topics")
        for v in r.unroutable:
            print(f"  NOT SENT (no {DLQ_SOURCE} header): {v.line()}")
    return Exit.FINDING if any(r.unroutable for r in results) else Exit.OK


async def tail_topic(
    config: OpsConfig,
    topic: str,
    *,
    from_beginning: bool,
    petition: str | None,
    follow: bool,
    as_json: bool,
) -> int:
    async with Cluster(config.bootstrap) as cluster:
        key = None
        if petition is not None:
            key = petition if _is_uuid(petition) else await petition_key(cluster, petition)
        async for record in tail(
            cluster, topic, from_beginning=from_beginning, follow_new=follow, key=key
        ):
            if as_json:
                emit(record.to_json())
            else:
                print(record.line(), flush=True)
    return Exit.OK


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


async def trace(
    config: OpsConfig,
    correlation_id: str,
    *,
    logs: Path | None,
    topic_names: list[str] | None,
    as_json: bool,
) -> int:
    log_lines = trace_logs(logs, correlation_id) if logs is not None else []
    async with Cluster(config.bootstrap) as cluster:
        records = await trace_topics(cluster, correlation_id, topic_names)
    if as_json:
        emit(
            {
                "correlation_id": correlation_id,
                "records": [r.to_json() for r in records],
                "logs": [line.to_json() for line in log_lines],
            }
        )
    else:
        timeline = sorted(
            [(r.time, r.line()) for r in records] + [(g.time, g.line()) for g in log_lines]
        )
        for _, text in timeline:
            print(text)
        print(f"{len(records)} records, {len(log_lines)} log lines", file=sys.stderr)
    return Exit.OK if records or log_lines else Exit.FINDING
