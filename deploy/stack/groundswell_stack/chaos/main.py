"""`groundswell-stack chaos`: run the plan, print the table, write the report; exit 1 on
any failed check."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from groundswell_stack.chaos import report
from groundswell_stack.chaos.driver import Plan, Row, Run, save_json
from groundswell_stack.chaos.faults import full_plan, short_plan
from groundswell_stack.chaos.stack import new_stack


def plan_for(short: bool, rate: float | None, seed: int) -> Plan:
    if short:
        return Plan(short_plan(), rate or 10.0, (3.0, 8.0), 2.0, seed, budget=240)
    return Plan(full_plan(), rate or 50.0, (3.0, 10.0), 3.0, seed, budget=16 * 60)


def chaos(
    *,
    short: bool,
    rate: float | None,
    seed: int | None,
    doc: Path | None,
    json_path: Path | None,
    run_dir: Path | None,
    command: str,
) -> int:
    seed = seed if seed is not None else int.from_bytes(os.urandom(4), "big")
    plan = plan_for(short, rate, seed)
    started_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_at_start = report.load_average()
    began = time.monotonic()
    stack = new_stack(run_dir)
    print(
        f"chaos: stack in {stack.run_dir}; {len(plan.faults)} faults "
        f"at {plan.rate:g}/s, seed {seed}",
        flush=True,
    )
    rows: list[Row] = []
    # Ctrl-C or SIGTERM stops the run wherever it is (asyncio's own Ctrl-C handling
    # only cancels a task, which a waiting loop may not notice), and `finally` then stops
    # everything the run started.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        stack.start()
        run = Run(stack, plan)
        rows = asyncio.run(run.run(progress=lambda line: print(line, flush=True)))
    finally:
        stack.close()
    took = time.monotonic() - began
    print()
    print(report.table(rows))
    print()
    print(report.details(rows))
    ok = bool(rows) and all(r.ok for r in rows)
    if ok and run_dir is None:
        shutil.rmtree(stack.run_dir, ignore_errors=True)  # kept when anything failed
    else:
        print(f"chaos: logs, mail and every answer kept in {stack.run_dir}", flush=True)
    print(
        f"\nchaos: {'PASSED' if ok else 'FAILED'} in {took / 60:.1f} min (seed {seed})", flush=True
    )
    if json_path is not None:
        save_json(rows, json_path, {"seed": seed, "rate": plan.rate, "took_s": round(took, 1)})
    if doc is not None:
        text = report.section(rows, command, started_at, took, report.machine(), load_at_start)
        report.write_section(doc, text)
        print(f"chaos: wrote the chaos section of {doc}", flush=True)
    return 0 if ok else 1


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def cli_command() -> str:
    return " ".join(["groundswell-stack", *sys.argv[1:]])
