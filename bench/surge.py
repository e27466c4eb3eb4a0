"""End-to-end surge benchmark: the whole stack under an open-loop signing load.

    .venv/bin/python bench/surge.py --json docs/performance.json --plot docs/performance.png

Starts the stack as `make up` does (its own PostgreSQL, Tansu broker and the four
services on free ports, in a temporary run folder) with Postfix's smtp-sink as the mail
server, creates petitions, and offers signatures at 250, 500, 1,000, 2,000 and
4,000/s for 60 s each (`--steps`, `--seconds`; `--rate R` for one step). After each step
it waits until every accepted signature is counted and every email is in the sink (at
most 3 min), then judges the step against the targets: HTTP p99 < 50 ms, no errors but
deliberate 503 shedding, count freshness p99 < 1 s, every email in the sink within
3 min of the end. It stops after the first step that misses them (`--keep-going` runs
every step). Then it measures the parts alone: the bare FastAPI endpoint, batched asyncpg
inserts, raw aiokafka produce and raw SMTP to the same sink.

`--signing-only`: the signing service alone (PostgreSQL and broker, no consumers);
closed loop with `--connections` N against it and against the bare endpoint, then open
loop at `--rate` (default 1,000/s) for `--seconds`.

Prints a Markdown table and writes the figures as JSON (`--json`) and, optionally, a
PNG of latency, freshness, backlog and lag over time (`--plot`). Not a test.

Just over 400 lines because it is the benchmark's one script of steps: the load itself,
the stack, the analysis and the report live in loadgen.py, stackrun.py, analysis.py and
report.py; what stays here is the order in which a run does them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import analysis
import asyncpg
import httpx
import numpy as np
import psutil
import report
from bodies import Planner
from monitor import Monitor
from stackrun import ALL_SERVICES, Stack, start_bare_endpoint, start_stack

LOADGEN = Path(__file__).with_name("loadgen.py")
DEFAULT_STEPS = "250,500,1000,2000,4000"
PETITION_WEIGHTS = [70, 15, 10, 5, 3, 2, 1, 1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--steps", default=DEFAULT_STEPS, help="offered signatures/s per step")
    parser.add_argument("--rate", type=float, help="one step at this rate (overrides --steps)")
    parser.add_argument("--seconds", type=float, default=60, help="seconds per step")
    parser.add_argument("--signing-only", action="store_true")
    parser.add_argument("--connections", type=int, default=64, help="closed-loop connections")
    parser.add_argument(
        "--closed-seconds", type=float, default=10, help="--signing-only: 0 skips the closed loops"
    )
    parser.add_argument(
        "--closed-rounds",
        type=int,
        default=3,
        help="--signing-only: bare endpoint then signing, this many times; the median ratio",
    )
    parser.add_argument("--petitions", type=int, default=4)
    parser.add_argument("--seed-signatures", type=int, default=40)
    parser.add_argument("--poll-ms", type=int, default=50, help="count API poll interval")
    parser.add_argument("--drain-seconds", type=float, default=180)
    parser.add_argument("--keep-going", action="store_true", help="run every step")
    parser.add_argument("--part-seconds", type=float, default=5, help="0: skip the parts")
    parser.add_argument(
        "--bare-workers", type=int, help="default: as the signing service (SIGNING_WORKERS)"
    )
    parser.add_argument("--max-connections", type=int, default=512)
    parser.add_argument(
        "--generator",
        choices=("auto", "c", "python"),
        default="auto",
        help="the load generator's engine (bench/loadgen.py); auto: compiled when a C compiler is",
    )
    parser.add_argument(
        "--budget-seconds", type=float, default=480, help="limit for the steps and their drains"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--keep-run-folder", action="store_true", help="keep every process's log afterwards"
    )
    parser.add_argument("--plot", type=Path, help="write the PNG timeline here")
    args = parser.parse_args(argv)
    if args.signing_only and args.rate is None:
        args.rate = 1000.0
    args.rates = [args.rate] if args.rate else [float(r) for r in args.steps.split(",")]
    return args


class Run:
    def __init__(self, args: argparse.Namespace, stack: Stack) -> None:
        self.args = args
        self.stack = stack
        self.started = time.monotonic()
        self.slugs = [f"surge-{i}" for i in range(args.petitions)]
        host = f"127.0.0.1:{stack.specs['signing'].port}"
        self.planner = Planner(host, self.slugs, PETITION_WEIGHTS[: args.petitions])
        self.monitor = Monitor(stack, self.slugs, args.poll_ms, partitions=self.partitions)
        self.accepted_emails: set[int] = set()
        self.expected = dict.fromkeys(range(args.petitions), 0)  # counted so far
        self.engines: set[str] = set()  # the load generator's, as it reported them
        self.expected_emails = 0
        self.t0 = 0.0
        keys = ("offered", "due", "lat", "acc", "fresh_at", "fresh")
        self.tl: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        self.sink_final = 0
        self.unanswered_sent = 0

    @property
    def partitions(self) -> int:
        return int(self.stack.env.get("KAFKA_TOPIC_PARTITIONS", "6"))

    def left(self) -> float:
        return self.args.budget_seconds - (time.monotonic() - self.started)

    async def prepare(self) -> None:
        signing = self.stack.url("signing")
        admin = {"Authorization": f"Bearer {self.stack.admin_token}"}
        async with httpx.AsyncClient(base_url=signing, timeout=30) as http:
            for slug in self.slugs:
                response = await http.post(
                    "/api/admin/petitions",
                    headers=admin,
                    json={
                        "slug": slug,
                        "title": f"Keep local public health teams on contact tracing {slug}",
                        "target": "Secretary of State for Health",
                        "body": "Contact tracing works best when local teams who know the "
                        "area run it. Fund them, not an outsourcing contractor.",
                        "requires_confirmation": False,
                    },
                )
                response.raise_for_status()
            # A few signers first, so later bodies can carry their share codes as `ref`.
            for n in range(self.args.seed_signatures):
                petition = n % len(self.slugs)
                person = self.planner.person()
                body = self.planner.body(person, duplicate=False)
                raw = self.planner.request(self.slugs[petition], body)
                address = raw.split(b"X-Forwarded-For: ")[1].split(b"\r\n")[0].decode()
                response = await http.post(
                    f"/api/petitions/{self.slugs[petition]}/signatures",
                    json=body,
                    headers={"X-Forwarded-For": address},
                )
                response.raise_for_status()
                self.expected[petition] += 1
                self.expected_emails += 1
        # From the database: the 202 may not carry the signer's own link.
        conn = await asyncpg.connect(self.stack.infra.database_url)
        try:
            rows = await conn.fetch("SELECT share_code FROM signing.signatures")
        finally:
            await conn.close()
        self.planner.share_codes.extend(r["share_code"] for r in rows)
        await self.monitor.start()
        if "counter" in self.stack.processes:
            await self.wait_for(lambda: self.counted(), 90, "the seed signatures' counts")

    def counted(self) -> bool:
        return all(self.monitor.count(s) >= self.expected[i] for i, s in enumerate(self.slugs))

    async def wait_for(self, check: Any, within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            await asyncio.sleep(0.2)

    async def loadgen(
        self, plan: list[Any], port: int, seconds: float, rate: float = 0, closed: int = 0
    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        folder = self.stack.run_dir / "load"
        folder.mkdir(exist_ok=True)
        plan_path, out_path = folder / "plan.npz", folder / "result.npz"
        blob = b"".join(p.raw for p in plan)
        offsets = np.zeros(len(plan) + 1, dtype=np.int64)
        np.cumsum([len(p.raw) for p in plan], out=offsets[1:])
        np.savez(plan_path, blob=np.frombuffer(blob, dtype=np.uint8), offsets=offsets)
        argv = [sys.executable, str(LOADGEN), "--plan", str(plan_path), "--out", str(out_path)]
        argv += ["--port", str(port), "--seconds", str(seconds)]
        argv += ["--max-connections", str(self.args.max_connections)]
        argv += ["--engine", self.args.generator]
        argv += ["--closed", str(closed)] if closed else ["--rate", str(rate)]
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
        self.monitor.watch("load generator", proc.pid)
        stdout, _ = await proc.communicate()
        self.monitor.forget("load generator")
        if proc.returncode != 0:
            raise RuntimeError(f"the load generator failed ({proc.returncode})")
        summary = json.loads(stdout.decode().strip().splitlines()[-1])
        self.engines.add(summary["engine"])
        with np.load(out_path) as data:
            return summary, {k: data[k] for k in data.files}

    async def step(self, rate: float) -> dict[str, Any]:
        args = self.args
        plan = self.planner.plan(int(rate * args.seconds))
        prior = dict(self.expected)
        cpu0, _ = self.monitor.cpu_rss()
        wait0 = self.monitor.core_waits()
        bench0 = sum(psutil.Process().cpu_times()[:2])
        t_start = time.monotonic()
        if not self.t0:
            self.t0 = t_start
        port = self.stack.specs["signing"].port
        sink0 = self.stack.sink.count()
        shed0 = await self.monitor.shed_by_reason()
        gen, result = await self.loadgen(plan, port, args.seconds, rate=rate)
        cpu_load, _ = self.monitor.cpu_rss()
        wait_load = self.monitor.core_waits()
        shed1 = await self.monitor.shed_by_reason()
        t_load = time.monotonic()
        http = analysis.http_summary(result)
        # Which signatures count: the first accepted one of each person.
        accepted_at: dict[int, list[float]] = {p: [] for p in range(args.petitions)}
        for i in np.flatnonzero(result["status"] == analysis.ACCEPTED):
            meta = plan[i]
            self.expected_emails += 1  # a thank-you, or an "already signed" notice
            if meta.email_id not in self.accepted_emails:
                self.accepted_emails.add(meta.email_id)
                accepted_at[meta.petition].append(float(result["done_at"][i]))
                self.expected[meta.petition] += 1
        # Sent but never answered: the server may still have recorded them.
        self.unanswered_sent += int(((result["status"] == -1) & ~np.isnan(result["sent_at"])).sum())
        drain = await self.drain(gen["end"], t_start, sink0)
        cpu1, _ = self.monitor.cpu_rss()
        t_end = time.monotonic()
        bench1 = sum(psutil.Process().cpu_times()[:2])
        fresh_at, fresh = np.array([]), np.array([])
        if "counter" in self.stack.processes:
            fresh_at, fresh = analysis.freshness(
                {p: np.array(v) for p, v in accepted_at.items()},
                prior,
                {i: self.monitor.counts.get(s, []) for i, s in enumerate(self.slugs)},
            )
        answered = result["status"] > 0
        ok = result["status"] == analysis.ACCEPTED
        accepted_span = float(result["done_at"][ok].max() - gen["start"]) if ok.any() else 0.0
        self.tl["offered"].append(result["due_at"])
        self.tl["due"].append(result["due_at"][answered])
        self.tl["lat"].append((result["done_at"] - result["due_at"])[answered] * 1000)
        self.tl["acc"].append(np.concatenate([np.array(v) for v in accepted_at.values()]))
        if "counter" in self.stack.processes:
            self.tl["fresh_at"].append(fresh_at)
            self.tl["fresh"].append(fresh)
        window = [s for s in self.monitor.samples if t_start <= s.t <= t_end]
        signatures = max(1, sum(len(v) for v in accepted_at.values()))
        cpu_ms = {n: (cpu1[n] - cpu0[n]) * 1000 / signatures for n in cpu1 if n in cpu0}
        cpu_ms["load generator"] = gen["cpu_seconds_total"] * 1000 / signatures
        cpu_ms["bench monitor"] = (bench1 - bench0) * 1000 / signatures
        step = {
            "rate": rate,
            "seconds": args.seconds,
            "t_start": t_start - self.t0,
            "t_end": t_end - self.t0,
            "achieved_send_rate": gen["achieved_send_rate"],
            "generator_cpu_share": gen["cpu_share_sending"],
            "generator": gen,
            **http,
            # Over the time the answers actually took: a server behind its load keeps
            # answering after the last request was due.
            "accepted_per_s": http["accepted"] / max(args.seconds, accepted_span),
            "new_signatures": int(sum(len(v) for v in accepted_at.values())),
            # Which of signing's rules refused (its metric; the 503s counted above).
            "shed_by_reason": {
                reason: int(n - shed0.get(reason, 0)) for reason, n in sorted(shed1.items())
            },
            "freshness_ms": analysis.ms_summary(fresh),
            "outbox_max_rows": max((s.outbox_pending or 0 for s in window), default=None),
            "outbox_max_age_s": max((s.outbox_oldest_s or 0 for s in window), default=None),
            "lag_max": {
                g: max((s.lag.get(g) or 0 for s in window), default=None)
                for g in self.monitor.lag_groups
            },
            "emails": drain["emails"],
            "drain": drain,
            "cpu_ms_per_signature": cpu_ms,
            "cpu_share_during_load": {
                n: (cpu_load[n] - cpu0[n]) / (t_load - t_start) for n in cpu_load if n in cpu0
            },
            # Seconds a second each process waited, runnable, for a core while the load
            # ran: where the box, not the process, was the limit (stackrun.run_queue_wait).
            "core_wait_share_during_load": {
                n: (wait_load[n] - wait0[n]) / (t_load - t_start)
                for n in wait_load
                if n in wait0 and wait_load[n] >= wait0[n]
            },
            "peak_rss_mb": {
                n: max(s.rss.get(n, 0) for s in window) / 2**20
                for n in (window[-1].rss if window else {})
            },
        }
        step["targets"] = report.judge(step, "counter" in self.stack.processes)
        step["holds"] = all(step["targets"].values())
        return step

    async def drain(self, load_end: float, t_start: float, sink0: int) -> dict[str, Any]:
        """Wait for counts, outbox and emails to catch up; when each did, in s after the end."""
        deadline = load_end + min(self.args.drain_seconds, max(5.0, self.left()))
        has_counter = "counter" in self.stack.processes
        has_mailer = "mailer" in self.stack.processes
        done: dict[str, float | None] = {"counts": None, "outbox": None, "emails": None}
        history: list[tuple[float, int]] = []
        note = ""
        while True:
            now = time.monotonic()
            sink = self.stack.sink.count()
            history.append((now, sink))
            pending, _ = await self.monitor.outbox()
            if done["counts"] is None and (not has_counter or self.counted()):
                done["counts"] = now - load_end
            if done["outbox"] is None and pending == 0:
                done["outbox"] = now - load_end
            if done["emails"] is None and (not has_mailer or sink >= self.expected_emails):
                done["emails"] = now - load_end
            if all(v is not None for v in done.values()):
                break
            if now > deadline:
                note = "cut short by the run budget" if self.left() < 5 else "not within 3 min"
                break
            recent = [h for h in history if h[0] >= now - 10]
            # Give up early on the emails only: counts and outbox are always waited for.
            caught_up = done["counts"] is not None and done["outbox"] is not None
            if caught_up and done["emails"] is None and now - load_end > 30 and len(recent) > 1:
                rate = (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])
                eta = (self.expected_emails - sink) / rate if rate > 0 else float("inf")
                if now - load_end + eta > self.args.drain_seconds * 1.5:
                    note = f"not within 3 min (at {rate:.0f}/s, ~{eta:.0f} s more)"
                    break
            await asyncio.sleep(0.25)
        # Emails/s: from the step's start until the last one arrived (or we stopped waiting).
        last = next((h for h in history if h[1] >= self.expected_emails), history[-1])
        span = last[0] - t_start
        return {
            "counts_caught_up_after_s": done["counts"],
            "outbox_empty_after_s": done["outbox"],
            "emails": {
                "expected_total": self.expected_emails,
                "in_sink": history[-1][1],
                "all_in_sink_after_s": done["emails"] if has_mailer else None,
                "per_s": (last[1] - sink0) / span if has_mailer and span > 0 else None,
                "note": note or ("no mailer" if not has_mailer else ""),
            },
        }


async def full_run(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    run = Run(args, stack)
    await run.prepare()
    steps: list[dict[str, Any]] = []
    try:
        for rate in args.rates:
            if run.left() < args.seconds + 20:
                print(f"skipping {rate:,.0f}/s: not enough of the run budget left", flush=True)
                break
            print(f"step {rate:,.0f}/s for {args.seconds:.0f} s ...", flush=True)
            steps.append(await run.step(rate))
            print(report.step_line(steps[-1]), flush=True)
            if not steps[-1]["holds"] and not args.keep_going:
                break
        counts = {s: run.monitor.count(s) for s in run.slugs}
        run.sink_final = stack.sink.count()  # before the SMTP part adds its own
    finally:
        await run.monitor.stop()
    parts = await report.measure_parts(run, args) if args.part_seconds > 0 else {}
    return report.assemble(run, steps, parts, counts)


async def signing_only(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    run = Run(args, stack)
    await run.prepare()
    try:
        n = report.closed_plan_size(args.closed_seconds)
        rounds: list[dict[str, Any]] = []
        closed = []
        if args.closed_seconds > 0:
            _, bare_port = start_bare_endpoint(stack, args.bare_workers)
            closed = [("bare endpoint", bare_port), ("signing", stack.specs["signing"].port)]
        # Alternated, not one of each: this machine's speed drifts by a fifth within
        # minutes (the bare endpoint alone: 5,000-6,300/s in one hour), and a ratio of two
        # loops taken far apart measured the drift as much as signing.
        for number in range(1, args.closed_rounds + 1 if closed else 1):
            results: dict[str, Any] = {}
            for name, target in closed:
                print(
                    f"{name}: closed loop, {args.connections} connections "
                    f"(round {number} of {args.closed_rounds}) ...",
                    flush=True,
                )
                gen, result = await run.loadgen(
                    run.planner.plan(n), target, args.closed_seconds, closed=args.connections
                )
                results[name] = report.closed_summary(gen, result, args.closed_seconds, n)
            rounds.append(results)
        print(f"signing: open loop at {args.rate:,.0f}/s for {args.seconds:.0f} s ...", flush=True)
        steps = [await run.step(args.rate)]
        run.sink_final = stack.sink.count()
    finally:
        await run.monitor.stop()
    out = report.assemble(run, steps, {}, {})
    if rounds:
        out["closed_loop"] = report.closed_rounds(rounds)
    return out


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The stack's processes lead sessions of their own, so they outlive the bench unless
    # `stack.close()` runs: a SIGTERM (`timeout`, a cancelled job) unwinds like Ctrl-C.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    run_dir = Path(tempfile.mkdtemp(prefix="surge-bench-"))
    load_before = os.getloadavg()
    print(f"run folder {run_dir}; starting the stack ...", flush=True)
    # The relay goes with signing wherever the stack runs it apart (else the outbox grows).
    services = ("signing", "signing-relay") if args.signing_only else ALL_SERVICES
    stack = start_stack(run_dir, services)
    try:
        runner = signing_only if args.signing_only else full_run
        body = asyncio.run(runner(args, stack))
    finally:
        stack.close()
    body["machine"] = {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    body["command"] = " ".join(["bench/surge.py", *(argv if argv is not None else sys.argv[1:])])
    body["sink"] = stack.sink.kind
    text = report.render(body)
    print(text, flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.clean(body), indent=1))
    if args.plot and body["steps"]:
        analysis.plot(body["timeline"], body["steps"], args.plot, report.title(body))
    if args.keep_run_folder:
        print(f"run folder kept: {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
