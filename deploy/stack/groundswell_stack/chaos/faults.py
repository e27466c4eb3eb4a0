"""The faults: how each is made, how long it lasts, and what it excuses.

A fault's `inject` returns when the fault itself is over (the process killed, the
counter resumed, the sink back); recovery is measured from then. While a fault and the
recovery after it last, its `excuses` say which failed requests are expected: a
connection refused by a service that is down, or a 503 with Retry-After while
PostgreSQL is away. Nothing else is excused, ever.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaProducer
from groundswell_contracts.topics import Topic

from groundswell_stack.services import executable

if TYPE_CHECKING:
    from groundswell_stack.chaos.driver import Run

SIGNING_SIDE = frozenset({"sign", "duplicate", "confirm", "withdraw", "probe", "bounce"})
ALL_KINDS = SIGNING_SIDE | {"click"}
# Which consumer dead-letters what it cannot read, by topic (counter-view skips and logs).
CONSUMERS_OF = {
    Topic.SIGNATURES.value: ("counter", "mailer", "sharing"),
    Topic.PETITIONS.value: ("counter", "sharing"),
    Topic.SIGNER_KEYS.value: ("mailer",),
    Topic.PRIVACY.value: ("mailer",),
    Topic.MILESTONES.value: ("mailer",),
}
STOP_SECONDS = 20.0
SINK_DOWN_SECONDS = 30.0
BOUNCE_CODES = ["451", "451", "550"]


@dataclass(frozen=True)
class Excuses:
    refused: frozenset[str] = frozenset()  # request kinds whose connection may fail
    unavailable: frozenset[str] = frozenset()  # request kinds that may get 503 + Retry-After


@dataclass
class Fault:
    name: str
    inject: Callable[[Run], Awaitable[str]]  # returns a note for the table
    excuses: Excuses = field(default_factory=Excuses)


def kill(service: str, kinds: frozenset[str] = frozenset()) -> Fault:
    async def inject(run: Run) -> str:
        pid = run.stack.pid_of(service)
        os.killpg(pid, signal.SIGKILL)
        run.marks.setdefault(f"kill {service}", []).append(time.time())
        return f"pid {pid}"

    return Fault(f"kill -9 {service}", inject, Excuses(refused=kinds))


def kill_counter_twice() -> Fault:
    async def inject(run: Run) -> str:
        first = run.stack.pid_of("counter")
        os.killpg(first, signal.SIGKILL)
        # The second blow lands while the first restart is still recovering its tables.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                second = run.stack.pid_of("counter")
                if second != first:
                    break
            except LookupError:
                pass
            await asyncio.sleep(0.2)
        else:
            return f"pid {first}; not restarted within 60 s"
        await asyncio.sleep(3)
        os.killpg(second, signal.SIGKILL)
        return f"pids {first}, then {second} 3 s after its restart"

    return Fault("kill -9 counter twice", inject)


def stop_counter() -> Fault:
    async def inject(run: Run) -> str:
        pid = run.stack.pid_of("counter")
        os.killpg(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(STOP_SECONDS)
        finally:
            os.killpg(pid, signal.SIGCONT)
        return f"SIGSTOP {STOP_SECONDS:.0f} s, then SIGCONT"

    return Fault(f"SIGSTOP counter {STOP_SECONDS:.0f} s", inject)


def restart_postgres(mode: str) -> Fault:
    async def inject(run: Run) -> str:
        began = time.monotonic()
        await asyncio.to_thread(run.stack.postgres().shutdown, mode)
        stopped = time.monotonic()
        # `up` notices the server gone and starts it again on the same data.
        await run.observe.wait_for_database(limit=120)
        return f"down {stopped - began:.1f} s, back after {time.monotonic() - began:.1f} s"

    return Fault(f"PostgreSQL restart ({mode})", inject, Excuses(unavailable=frozenset(ALL_KINDS)))


def sink_down() -> Fault:
    async def inject(run: Run) -> str:
        run.stack.sink.kill()
        run.marks.setdefault("kill sink", []).append(time.time())
        await asyncio.sleep(SINK_DOWN_SECONDS)
        run.stack.sink.start()
        return f"down {SINK_DOWN_SECONDS:.0f} s"

    return Fault(f"SMTP sink down {SINK_DOWN_SECONDS:.0f} s", inject)


def sink_refuses() -> Fault:
    async def inject(run: Run) -> str:
        address = f"bounce-{run.run_id}-{len(run.bounces) + 1}@example.org"
        rules = {"rules": {a: BOUNCE_CODES for a in [*run.bounces, address]}}
        run.stack.sink.control.write_text(json.dumps(rules))
        run.bounces.append(address)
        outcome = await run.load.sign(address, run.slugs[0], kind="bounce")
        return f"{'/'.join(BOUNCE_CODES)} for one signer; signing answered {outcome.status}"

    return Fault("SMTP 451 then 550 for one address", inject)


def lose_broker() -> Fault:
    async def inject(run: Run) -> str:
        pid = run.stack.pid_of("broker")
        os.killpg(pid, signal.SIGKILL)
        run.broker_lost_at = time.time()
        return f"tansu pid {pid}; up restarts it empty, restarts the services, replays"

    return Fault("broker lost (kill -9 Tansu)", inject, Excuses(refused=frozenset(ALL_KINDS)))


def poison() -> Fault:
    async def inject(run: Run) -> str:
        producer = AIOKafkaProducer(bootstrap_servers=run.stack.bootstrap, acks="all")
        await producer.start()
        try:
            for topic in Topic:
                marker = f"chaos-poison-{uuid.uuid4()}"
                # Cut off mid-document: no consumer can read it as an event.
                value = f'{{"event_type": "SignatureCreated", "chaos": "{marker}", "petition_'
                await producer.send_and_wait(
                    topic.value, value=value.encode(), key=str(run.petition_ids[0]).encode()
                )
                run.poisons.append((topic.value, marker, time.time()))
        finally:
            await producer.stop()
        return f"one malformed record on each of {len(Topic)} topics"

    return Fault("poison event on every topic", inject)


def replay_twice() -> Fault:
    async def inject(run: Run) -> str:
        took = []
        for _ in range(2):
            began = time.monotonic()
            await asyncio.to_thread(
                subprocess.run,
                [executable("groundswell-signing"), "replay"],
                env=run.stack.service_env(),
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            took.append(f"{time.monotonic() - began:.1f} s")
        return "replays took " + ", ".join(took)

    return Fault("groundswell-signing replay, twice", inject)


def full_plan() -> list[Fault]:
    return [
        kill("signing", SIGNING_SIDE),
        kill("counter"),
        restart_postgres("fast"),
        kill("mailer"),
        sink_down(),
        kill("sharing", frozenset({"click"})),
        stop_counter(),
        restart_postgres("immediate"),
        sink_refuses(),
        lose_broker(),
        kill_counter_twice(),
        poison(),
        replay_twice(),
    ]


def short_plan() -> list[Fault]:
    return [kill("mailer"), restart_postgres("fast"), poison()]
