"""Count freshness: from SignatureCreated published to the count API showing it.

Starts its own infrastructure (groundswell_stack.infra.start_infra: the local broker,
or whatever KAFKA_BOOTSTRAP_SERVERS names) and one counter worker process, publishes
signatures at a steady rate, and polls `GET /api/petitions/{slug}/count` (with
If-None-Match, as a browser would) to see when each signature is counted.

    .venv/bin/python bench/counter_freshness.py [--rate 1000] [--seconds 30]

Freshness of signature k of a petition = the first poll showing a count >= k, minus
the moment signature k was handed to the producer. Polling every --poll-ms adds on
average half that interval; the figures include it. Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from groundswell_contracts.events import PetitionCreated, SignatureCreated, encode
from groundswell_counter.config import CounterTopics
from groundswell_runtime.kafka import ensure_topics, make_producer
from groundswell_stack.infra import Infra, start_infra
from groundswell_stack.processes import ManagedProcess, free_port

PARTITIONS = 4


@dataclass
class Probe:
    petition: PetitionCreated
    published_at: list[float] = field(default_factory=list)  # index k-1: signature k
    seen_at: dict[int, float] = field(default_factory=dict)  # k -> first poll showing >= k
    seen: int = 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def poll(http: httpx.AsyncClient, probe: Probe, interval: float, stop: asyncio.Event) -> int:
    etag = None
    requests = 0
    while not stop.is_set():
        headers = {"If-None-Match": etag} if etag else {}
        response = await http.get(f"/api/petitions/{probe.petition.slug}/count", headers=headers)
        now = time.perf_counter()
        requests += 1
        if response.status_code == 200:
            etag = response.headers["etag"]
            count = response.json()["signatures"]
            for k in range(probe.seen + 1, count + 1):
                probe.seen_at[k] = now
            probe.seen = max(probe.seen, count)
        await asyncio.sleep(interval)
    return requests


async def publish(
    bootstrap: str, topics: CounterTopics, probes: list[Probe], rate: float, seconds: float
) -> float:
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        total = int(rate * seconds)
        tick = 0.01
        per_tick = rate * tick
        started = time.perf_counter()
        sent = 0
        while sent < total:
            due = min(total, int((time.perf_counter() - started) / tick * per_tick) + 1)
            while sent < due:
                probe = probes[sent % len(probes)]
                event = SignatureCreated(
                    petition_id=probe.petition.petition_id,
                    signature_id=uuid.uuid4(),
                    petition_slug=probe.petition.slug,
                    petition_title="Bench",
                    status="signed",
                    contact_consent=False,
                    postcode_area="OX",
                    country="GB",
                    share_code="bench",
                )
                probe.published_at.append(time.perf_counter())
                await producer.send(topics.signatures, encode(event), key=event.key.encode())
                sent += 1
            await asyncio.sleep(tick)
        await producer.flush()
        return sent / (time.perf_counter() - started)
    finally:
        await producer.stop()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    try:
        async with asyncio.timeout(within):
            # Polling is the point: the bench watches another process from outside.
            while not await check():  # noqa: ASYNC110 (another process; nothing to await)
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise RuntimeError(f"timed out waiting for {what}") from None


async def run(args: argparse.Namespace, infra: Infra, run_dir: Path) -> None:
    worker: ManagedProcess | None = None
    try:
        topics = CounterTopics.with_prefix(f"bench{uuid.uuid4().hex[:6]}.")
        await ensure_topics(infra.kafka_bootstrap, PARTITIONS, 1, topics.all())
        port = free_port()
        worker = ManagedProcess(
            "counter-bench",
            [sys.executable, "-m", "groundswell_counter", "serve"],
            env={
                **os.environ,
                **infra.env(),
                "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
                "COUNTER_TOPIC_PREFIX": topics.signatures.removesuffix("signatures"),
                "COUNTER_APP_ID": f"counter-bench-{uuid.uuid4().hex[:6]}",
                "COUNTER_PORT": str(port),
                "COUNTER_DATA_DIR": str(run_dir / "counter"),
                "LOG_LEVEL": "WARNING",
            },
            log_path=run_dir / "counter.log",
        ).start()
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:

            async def ready() -> bool:
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, 90, f"the worker (log: {run_dir / 'counter.log'})")

            probes = [
                Probe(
                    PetitionCreated(
                        petition_id=uuid.uuid4(),
                        slug=f"bench-{i}",
                        title="Bench",
                        target="Parliament",
                    )
                )
                for i in range(args.petitions)
            ]
            producer = make_producer(infra.kafka_bootstrap)
            await producer.start()
            for probe in probes:
                await producer.send_and_wait(
                    topics.petitions, encode(probe.petition), key=probe.petition.key.encode()
                )
            await producer.stop()
            for probe in probes:
                path = f"/api/petitions/{probe.petition.slug}/count"

                async def served(path: str = path) -> bool:
                    return (await http.get(path)).status_code == 200

                await eventually(served, 30, path)

            stop = asyncio.Event()
            pollers = [
                asyncio.create_task(poll(http, p, args.poll_ms / 1000, stop)) for p in probes
            ]
            # What the worker spends with the pollers and nothing to count: subtracted
            # below to give the CPU each event costs.
            idle_cpu, idle_wall = cpu_seconds(worker.pid), time.perf_counter()
            await asyncio.sleep(args.idle_seconds)
            idle = (cpu_seconds(worker.pid) - idle_cpu) / (time.perf_counter() - idle_wall)
            cpu_before, wall_before = cpu_seconds(worker.pid), time.perf_counter()
            load_before = os.getloadavg()
            achieved = await publish(infra.kafka_bootstrap, topics, probes, args.rate, args.seconds)
            published = sum(len(p.published_at) for p in probes)

            async def all_seen() -> bool:
                return sum(p.seen for p in probes) >= published

            with contextlib.suppress(RuntimeError):
                await eventually(all_seen, 30, "the last signatures")
            stop.set()
            requests = sum(await asyncio.gather(*pollers))
            cpu_used = cpu_seconds(worker.pid) - cpu_before
            wall = time.perf_counter() - wall_before
            cpu = cpu_used / wall
            load_after = os.getloadavg()

        warmup = args.rate * args.warmup_seconds
        latencies = []
        missing = 0
        for probe in probes:
            for k, published_at in enumerate(probe.published_at, start=1):
                if (k - 1) * len(probes) < warmup:
                    continue
                if k in probe.seen_at:
                    latencies.append(probe.seen_at[k] - published_at)
                else:
                    missing += 1
        print(
            f"machine: {os.cpu_count()} cores, {platform.platform()}, Python "
            f"{platform.python_version()}; load average before {load_before[0]:.2f}, "
            f"after {load_after[0]:.2f} (other processes share these cores)"
        )
        print(
            f"broker: {'local Tansu' if infra.broker else infra.kafka_bootstrap}; "
            f"{PARTITIONS} partitions; one counter worker (HTTP in the same process)"
        )
        print(
            f"load: {published} SignatureCreated over {args.seconds:.0f}s to {args.petitions} "
            f"petitions, target {args.rate:.0f}/s, achieved {achieved:.0f}/s; "
            f"polling every {args.poll_ms} ms per petition ({requests} requests)"
        )
        print(
            f"worker CPU: {cpu:.0%} of one core during the run ({idle:.0%} idle with the "
            f"pollers); per event {cpu_used / published * 1000:.3f} ms, "
            f"{(cpu_used - idle * wall) / published * 1000:.3f} ms net of the idle cost"
        )
        if latencies:
            ms = {
                name: value * 1000
                for name, value in (
                    ("p50", percentile(latencies, 0.5)),
                    ("p90", percentile(latencies, 0.9)),
                    ("p99", percentile(latencies, 0.99)),
                    ("max", max(latencies)),
                    ("mean", statistics.mean(latencies)),
                )
            }
            print(
                f"freshness (published -> count API), {len(latencies)} signatures after "
                f"{args.warmup_seconds:.0f}s warm-up: "
                + ", ".join(f"{name} {value:.0f} ms" for name, value in ms.items())
            )
        if missing:
            print(f"NOT SEEN within 30 s after publishing ended: {missing} signatures")
    finally:
        if worker is not None:
            worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000, help="signatures per second")
    parser.add_argument("--seconds", type=float, default=30, help="how long to publish")
    parser.add_argument("--warmup-seconds", type=float, default=5)
    parser.add_argument("--petitions", type=int, default=4)
    parser.add_argument("--poll-ms", type=int, default=20)
    parser.add_argument(
        "--idle-seconds", type=float, default=5, help="worker CPU measured idle, pollers on"
    )
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="counter-bench-"))
    run_dir.chmod(0o755)  # the database runs as the postgres user when we are root
    infra = start_infra(run_dir)
    try:
        asyncio.run(run(args, infra, run_dir))
    finally:
        infra.close()


if __name__ == "__main__":
    main()
