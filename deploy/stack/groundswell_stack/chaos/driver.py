"""The chaos run: for each fault, load on, the fault at a random moment, recovery
measured, load off, wait for quiet, check everything.

Recovery is measured end to end: after the fault is over, one probe signature (on a
petition of its own) must be accepted, counted by the counter, mailed its thank-you
and known to sharing, with every service ready. That time is the table's "recovery".
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from groundswell_stack.chaos import checks, facts
from groundswell_stack.chaos.checks import Verdict, Window
from groundswell_stack.chaos.faults import Fault
from groundswell_stack.chaos.load import Load, MailLog
from groundswell_stack.chaos.observe import Observer, settled
from groundswell_stack.chaos.stack import ChaosStack

RECOVERY_LIMIT = 240.0
QUIET_LIMIT = 180.0


@dataclass
class Plan:
    faults: list[Fault]
    rate: float
    lead: tuple[float, float]  # the fault lands this long after the load starts (random)
    settle: float  # load kept on after recovery
    seed: int
    budget: float  # seconds for the whole run; faults past it are not run (and fail)


@dataclass
class Row:
    fault: str
    note: str = ""
    at: float = 0.0  # seconds into the load when injected
    recovery: float | None = None
    drain: float | None = None
    requests: str = ""
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.recovery is not None
            and self.drain is not None
            and bool(self.verdicts)
            and all(v.ok for v in self.verdicts)
        )


class Run:
    def __init__(self, stack: ChaosStack, plan: Plan) -> None:
        self.stack = stack
        self.plan = plan
        self.run_id = secrets.token_hex(3)
        # Random moments, not secrets: a seed makes a run repeatable.
        self.random = random.Random(plan.seed)  # noqa: S311
        self.mail = MailLog(stack.sink.log)
        self.slugs = [f"chaos-open-{self.run_id}", f"chaos-optin-{self.run_id}"]
        self.probe_slug = f"chaos-probe-{self.run_id}"
        self.petition_ids: list[uuid.UUID] = []
        self.load = Load(
            stack.url("signing"),
            stack.url("sharing"),
            self.slugs,
            self.mail,
            self.run_id,
            plan.rate,
            plan.seed,
        )
        self.observe = Observer(stack, self.mail, self.slugs, self.probe_slug)
        self.marks: dict[str, list[float]] = {}
        self.poisons: list[tuple[str, str, float]] = []
        self.bounces: list[str] = []
        self.broker_lost_at = 0.0
        self.windows: list[Window] = []
        self.rows: list[Row] = []

    # --- set-up ---------------------------------------------------------------------

    async def create_petitions(self) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            for slug, confirm in (
                (self.slugs[0], False),
                (self.slugs[1], True),
                (self.probe_slug, False),
            ):
                response = await client.post(
                    f"{self.stack.url('signing')}/api/admin/petitions",
                    json={
                        "slug": slug,
                        "title": f"Chaos petition {slug}",
                        "target": "The chaos suite",
                        "body": "Signed by the chaos suite's load.",
                        "requires_confirmation": confirm,
                    },
                    headers={"Authorization": f"Bearer {self.stack.admin_token}"},
                )
                response.raise_for_status()
                self.petition_ids.append(uuid.UUID(response.json()["id"]))

    # --- one cycle --------------------------------------------------------------------

    async def cycle(self, fault: Fault) -> Row:
        row = Row(fault.name)
        first = len(self.load.outcomes)
        self.load.start()
        began = time.time()
        await asyncio.sleep(self.random.uniform(*self.plan.lead))
        injected = time.time()
        row.at = injected - began
        try:
            row.note = await fault.inject(self)
        except Exception as exc:  # the table says so; the run goes on to the next fault
            row.note = f"injection failed: {type(exc).__name__}: {exc}"
        over = time.time()
        recovered = await self.recover(over)
        row.recovery = None if recovered is None else recovered - over
        await asyncio.sleep(self.plan.settle)
        await self.load.stop()
        self.windows.append(Window(fault.name, injected, recovered or time.time(), fault.excuses))
        stopped = time.monotonic()
        if await self.quiet(QUIET_LIMIT):
            row.drain = time.monotonic() - stopped
        row.requests = checks.status_summary(self.load.outcomes[first:])
        row.verdicts = await self.check()
        return row

    async def recover(self, over: float) -> float | None:
        """When a probe signed after the fault went all the way through, or None."""
        address = None
        while time.time() - over < RECOVERY_LIMIT and not self.stack.up_exited():
            if address is None:
                candidate, outcome = await self.load.probe(self.probe_slug)
                if outcome.status == 202:
                    address = candidate
            if address is not None and await self.observe.through(address):
                return time.time()
            await asyncio.sleep(1)
        return None

    async def quiet(self, limit: float) -> bool:
        """Nothing waiting anywhere, twice in a row: outboxes, emails, counts, links."""
        deadline = time.monotonic() + limit
        calm = 0
        last: Any = None
        while time.monotonic() < deadline and not self.stack.up_exited():
            state = await self.observe.state()
            calm = calm + 1 if state is not None and state == last and settled(state) else 0
            if calm >= 2:
                return True
            last = state
            await asyncio.sleep(1)
        return False

    async def check(self) -> list[Verdict]:
        slugs = [*self.slugs, self.probe_slug]
        try:
            seen = await facts.settle(
                lambda: facts.collect(
                    self.stack.database_url,
                    self.stack.url("counter"),
                    self.stack.url("signing"),
                    self.stack.admin_token,
                    slugs,
                    self.bounces,
                    self.stack.bootstrap,
                )
            )
        except Exception as exc:
            return [Verdict("facts collected", False, f"{type(exc).__name__}: {exc}")]
        self.mail.read()
        kills = [t for name in ("kill mailer", "kill sink") for t in self.marks.get(name, [])]
        outcomes = self.load.outcomes
        verdicts = [
            checks.check_acknowledged(seen, outcomes),
            checks.check_counts(seen),
            checks.check_sharing(seen),
            checks.check_mail(seen, self.mail.delivered, kills, self.bounces),
            checks.check_dead_letters(seen, self.poisons, self.broker_lost_at),
            *checks.check_http(outcomes, self.windows),
        ]
        if self.bounces:
            verdicts.append(
                checks.check_bounces(seen, self.mail.refused, self.mail.delivered, self.bounces)
            )
        return verdicts

    # --- the whole run ----------------------------------------------------------------

    async def run(self, progress: Any = print) -> list[Row]:
        started = time.monotonic()
        await self.create_petitions()
        try:
            for fault in self.plan.faults:
                gone = self.stack.up_exited()
                if gone:
                    self.rows.append(Row(fault.name, note=f"not run: {gone}"))
                    continue
                if time.monotonic() - started > self.plan.budget:
                    self.rows.append(Row(fault.name, note="not run: time budget spent"))
                    continue
                progress(f"chaos: {fault.name} ...")
                row = await self.cycle(fault)
                gone = self.stack.up_exited()
                if gone:
                    row.note += f"; {gone}"
                self.rows.append(row)
                progress(_line(row))
        finally:
            await self.load.close()
            self.save_evidence()
        return self.rows

    def save_evidence(self) -> None:
        """Every answer and every fault's moments, for looking into a failed check."""
        with (self.stack.run_dir / "requests.jsonl").open("w") as f:
            for o in self.load.outcomes:
                f.write(json.dumps(dataclasses.asdict(o)) + "\n")
        (self.stack.run_dir / "faults.json").write_text(
            json.dumps(
                {
                    "windows": [dataclasses.asdict(w) for w in self.windows],
                    "marks": self.marks,
                    "poisons": self.poisons,
                    "broker_lost_at": self.broker_lost_at,
                },
                indent=2,
                default=sorted,
            )
        )


def _line(row: Row) -> str:
    failed = [f"{v.name}: {v.detail}" for v in row.verdicts if not v.ok]
    recovery = "not recovered" if row.recovery is None else f"recovered in {row.recovery:.1f} s"
    drain = "not quiet" if row.drain is None else f"quiet after {row.drain:.1f} s"
    verdict = "ok" if row.ok else "FAILED " + " | ".join(failed)
    return f"chaos:   {row.note}; {recovery}; {drain}; {verdict}"


def save_json(rows: Sequence[Row], path: Path, extra: dict[str, Any]) -> None:
    document = {
        **extra,
        "rows": [
            {
                "fault": r.fault,
                "note": r.note,
                "injected_after_s": round(r.at, 1),
                "recovery_s": None if r.recovery is None else round(r.recovery, 1),
                "drain_s": None if r.drain is None else round(r.drain, 1),
                "requests": r.requests,
                "ok": r.ok,
                "checks": [{"name": v.name, "ok": v.ok, "detail": v.detail} for v in r.verdicts],
            }
            for r in rows
        ],
    }
    path.write_text(json.dumps(document, indent=2))
