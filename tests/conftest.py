"""Session-wide real infrastructure: PostgreSQL, a Kafka broker and an SMTP sink.

Started once per run (testcontainers when a Docker engine answers, else local
processes), or taken from DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS / SMTP_HOST.
Unit tests never touch it: the fixtures start lazily.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from groundswell_runtime.kafka import ensure_topics
from groundswell_runtime.surge_yield import SurgeYield
from groundswell_stack.infra import Infra, start_infra

# The partition count of the session's topics, which every service and consumer a test
# starts must agree with (a service refuses to start on topics of another count). Written
# once: other test files import it as they import scratch_database, relatively
# (`from ...conftest import TEST_PARTITIONS`), which --import-mode=importlib allows.
TEST_PARTITIONS = 4


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    os.environ.setdefault("GROUNDSWELL_EPHEMERAL_DB", "1")
    run_dir = Path(tempfile.mkdtemp(prefix="groundswell-test-"))
    run_dir.chmod(0o755)  # the cluster runs as the postgres user when we are root
    started = start_infra(run_dir, prefer_containers=True)
    try:
        yield started
    finally:
        started.close()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
async def topics(infra: Infra) -> None:
    await ensure_topics(infra.kafka_bootstrap, TEST_PARTITIONS, 1)


@contextlib.asynccontextmanager
async def scratch_database(infra: Infra, prefix: str = "t") -> AsyncIterator[str]:
    """An empty database of its own, dropped afterwards: schemas never leak between tests."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(infra.database_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    base, _, _ = infra.database_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(infra.database_url)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()


@pytest.fixture
async def fresh_database(infra: Infra) -> AsyncIterator[str]:
    async with scratch_database(infra) as url:
        yield url


class PressureDial:
    """The machine's CPU pressure as a `SurgeYield` sees it, set by the test: every sample
    is one simulated second at `share` (the kernel's PSI file is the input, not a part)."""

    def __init__(self, share: float) -> None:
        self.share = share
        self._clock = 0.0
        self._total = 0.0

    def _pressure_total(self) -> float:
        self._total += self.share
        return self._total

    def _tick(self) -> float:
        self._clock += 1.0
        return self._clock

    def surge_yield(self, interval: float = 0.005) -> SurgeYield:
        """One whose service is always behind, so the pressure alone decides; its bound
        (an hour of simulated seconds) is never reached in a test."""
        return SurgeYield(
            3600,
            lambda: True,
            pressure_total=self._pressure_total,
            clock=self._tick,
            interval=interval,
        )


@pytest.fixture
def pressure() -> PressureDial:
    """Starts pressed (1.0): a `surge_yield()` made from it yields within a few samples."""
    return PressureDial(1.0)
