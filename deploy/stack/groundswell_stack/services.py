"""The four Groundswell services (and signing's outbox relay) as child processes, with the
environment they share."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from groundswell_stack.processes import ManagedProcess, free_port


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    command: tuple[str, ...]
    port_env: str
    port: int
    # CPU priority (nice): what can wait yields the cores to what cannot (`PRIORITY`).
    niceness: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# The signing outbox relay runs as a process of its own (groundswell_signing's
# entrypoints/relay.py says why); `serve` is told to leave it out.
RELAY_MODE = {"SIGNING_RELAY_MODE": "separate"}


def relay_port(env: Mapping[str, str]) -> int:
    """SIGNING_RELAY_PORT; else 8005 on the default ports. A stack whose signing port was
    moved (tests, chaos runs, benches on free ports) gets a free port instead, written
    back into `env` when it can be, so later calls with the same `env` agree."""
    if "SIGNING_RELAY_PORT" in env:
        return int(env["SIGNING_RELAY_PORT"])
    if "SIGNING_PORT" not in env:
        return 8005
    port = free_port()
    if isinstance(env, MutableMapping):
        env["SIGNING_RELAY_PORT"] = str(port)
    return port


# Who gets the cores when a surge asks for more than there are. A signer is waiting on
# signing (and PostgreSQL), and the count is watched live (the relay, the broker and the
# counter): these keep niceness 0. Emails and share-link attribution can be a minute late
# without harming anyone (10): they fall behind during the surge and catch up after it.
# Beyond what the rest can do, signing refuses at once (503) rather than accept what
# would only be counted late (its in-flight limit, and the outbox's age plus the
# counter's lag). docker-compose.yml says the same with `cpu_shares`. The priorities only
# took effect once the scheduling group's nice value was set too
# (`processes.set_priority`), and they cover the database work of the lowered services
# since their pools lend it to the backends that serve them
# (`groundswell_runtime.priority`); measured each way, and with the live tier niced as
# well, in docs/performance.md.
#
# Signing itself goes first (-5), where the stack may raise a priority (CAP_SYS_NICE,
# e.g. as root; otherwise it stays at 0). Over capacity its refusals waited for a core:
# on a full box it had its fair share and waited runnable 0.4-0.5 s every second, and
# the 503s' p99 at 4,000/s offered was 86-158 ms; at -5 it is 14-28 ms. It is safe only
# with admission by the counter's lag: at -5 with the outbox's age alone the counter fell
# 15-23 s behind (docs/performance.md, 2026-12-04).
PRIORITY = {"signing": -5, "sharing": 10, "mailer": 10}


def service_specs(env: Mapping[str, str]) -> list[ServiceSpec]:
    def port(name: str, default: int) -> int:
        return int(env.get(name, default))

    return [
        ServiceSpec(
            "signing",
            ("groundswell-signing", "serve"),
            "SIGNING_PORT",
            port("SIGNING_PORT", 8001),
            PRIORITY["signing"],
        ),
        ServiceSpec(
            "signing-relay", ("groundswell-signing", "relay"), "SIGNING_RELAY_PORT", relay_port(env)
        ),
        ServiceSpec(
            "counter", ("groundswell-counter", "serve"), "COUNTER_PORT", port("COUNTER_PORT", 8002)
        ),
        ServiceSpec(
            "mailer",
            ("groundswell-mailer", "serve"),
            "MAILER_PORT",
            port("MAILER_PORT", 8003),
            PRIORITY["mailer"],
        ),
        ServiceSpec(
            "sharing",
            ("groundswell-sharing", "serve"),
            "SHARING_PORT",
            port("SHARING_PORT", 8004),
            PRIORITY["sharing"],
        ),
    ]


def service_env(base: Mapping[str, str], specs: list[ServiceSpec]) -> dict[str, str]:
    """Every service gets every port and public URL, so links between them line up."""
    by_name = {s.name: s for s in specs}
    env = dict(base)
    if "signing-relay" in by_name:
        env |= RELAY_MODE
    for spec in specs:
        env[spec.port_env] = str(spec.port)
    env.setdefault("PUBLIC_BASE_URL", by_name["signing"].url)
    env.setdefault("COUNTER_PUBLIC_URL", by_name["counter"].url)
    env.setdefault("MAILER_PUBLIC_URL", by_name["mailer"].url)
    env.setdefault("SHARE_BASE_URL", by_name["sharing"].url)
    return env


def executable(name: str) -> str:
    """The console script next to this interpreter (the project's venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed; run `make install`")
    return found


def start_service(spec: ServiceSpec, env: Mapping[str, str], log_dir: Path) -> ManagedProcess:
    return ManagedProcess(
        spec.name,
        [executable(spec.command[0]), *spec.command[1:]],
        env=env,
        log_path=log_dir / f"{spec.name}.log",
        # faust can hang on shutdown when the broker is gone; don't wait forever.
        stop_timeout=15,
        niceness=spec.niceness,
    ).start()


def wait_until_ready(spec: ServiceSpec, process: ManagedProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not process.running():
            raise RuntimeError(f"{spec.name} exited; see its log")
        try:
            response = httpx.get(f"{spec.url}/readyz", timeout=2)
            if response.status_code == 200:
                return
            last = response.text
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.25)
    raise TimeoutError(f"{spec.name} not ready after {timeout:.0f}s: {last}")


def clean_env() -> dict[str, str]:
    # Services must see only what we give them plus the ordinary process environment.
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
