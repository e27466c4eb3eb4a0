"""The four services as separate processes, against the session's real infrastructure."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from groundswell_stack.broker import LocalBroker
from groundswell_stack.infra import Infra
from groundswell_stack.processes import ManagedProcess, free_port
from groundswell_stack.services import (
    ServiceSpec,
    clean_env,
    service_env,
    service_specs,
    start_service,
    wait_until_ready,
)
from groundswell_stack.smtp_sink import read_messages

from ..conftest import TEST_PARTITIONS

ADMIN_TOKEN = "e2e-admin-token-0123456789abcdefghijk"


@dataclass
class Stack:
    urls: dict[str, str]
    mail_dir: Path
    logs: Path
    bootstrap: str
    database_url: str

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def mail_to(self, address: str) -> list[EmailMessage]:
        wanted = address.lower()  # however the address was typed
        return [m for m in read_messages(self.mail_dir) if wanted in str(m.get("To", "")).lower()]


def eventually(check: Callable[[], Any], timeout: float = 15, every: float = 0.1) -> Any:
    """Poll until `check` returns something truthy; the last failure explains a timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, httpx.HTTPError) as exc:
            last = exc
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s; last result: {last!r}")


@pytest.fixture(scope="session")
def stack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    assert infra.mail_dir is not None, "the e2e tests read the local SMTP sink's files"
    ports = {
        name: str(free_port())
        for name in ("SIGNING_PORT", "COUNTER_PORT", "MAILER_PORT", "SHARING_PORT")
    }
    base = (
        clean_env()
        | infra.env()
        | ports
        | {
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "KAFKA_TOPIC_PARTITIONS": str(TEST_PARTITIONS),
            # Every test signs from 127.0.0.1.
            "SIGNING_RATE_BURST_COUNT": "100000",
            "SIGNING_RATE_SUSTAINED_COUNT": "100000",
            "SIGNING_RATE_GLOBAL_COUNT": "100000",
            "COUNTER_DATA_DIR": str(tmp_path_factory.mktemp("counter-data")),
        }
    )
    logs = tmp_path_factory.mktemp("service-logs")
    # A broker of its own: the integration tests' consumers and these services must not
    # see each other's events on the shared topics.
    broker = LocalBroker(free_port(), logs / "tansu.log").start() if infra.broker else None
    if broker is not None:
        base["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
    specs: list[ServiceSpec] = service_specs(base)
    env = service_env(base, specs)
    processes: list[ManagedProcess] = []
    try:
        for spec in specs:
            processes.append(start_service(spec, env, logs))
        for spec, process in zip(specs, processes, strict=True):
            try:
                wait_until_ready(spec, process, timeout=120)
            except Exception:
                print((logs / f"{spec.name}.log").read_text()[-5000:])
                raise
        yield Stack(
            {s.name: s.url for s in specs},
            infra.mail_dir,
            logs,
            base["KAFKA_BOOTSTRAP_SERVERS"],
            base["DATABASE_URL"],
        )
    finally:
        for process in reversed(processes):
            process.stop()
        if broker is not None:
            broker.stop()
