"""The faust app of the counter: its table, agent, timer and rebalance hooks, wired to
the counting (`service_layer.counting`) and the snapshots (`service_layer.publishing`).

- The `count` agent applies `signatures` and `petitions` events, in batches, to one
  table holding `p:<petition id>`, `s:<signature id>` and `o:<source>:<partition>`
  records, exactly once by construction (see `domain.processing`).
- A timer publishes a snapshot of each petition that changed to `counts`, at most
  once per `coalesce_interval_seconds`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import faust
import structlog
from aiokafka.errors import KafkaError
from groundswell_runtime.kafka import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS
from prometheus_client import Histogram

from groundswell_counter.adapters.dead_letters import KafkaDeadLetters
from groundswell_counter.adapters.faust_producer import FaustPublisher
from groundswell_counter.adapters.faust_table import (
    FaustTable,
    batches,
    consumer_highwater,
    owned_partitions,
)
from groundswell_counter.adapters.faust_transport import CounterFaustApp
from groundswell_counter.adapters.kafka_reads import KafkaGapReads
from groundswell_counter.config import CounterSettings
from groundswell_counter.domain.milestones import MilestonePolicy
from groundswell_counter.domain.processing import Source
from groundswell_counter.service_layer.counting import Counting
from groundswell_counter.service_layer.ports import RestartRequired
from groundswell_counter.service_layer.publishing import SnapshotPublisher

log = structlog.get_logger()

BATCH_SECONDS = Histogram(
    "groundswell_counter_batch_seconds",
    "Time to apply one batch of source events",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

TABLE_NAME = "counter-state"
# How often partitions are checked for records faust fetched but never delivered
# (`Counting.fill_stalled_tails`): a record so skipped is counted within two of these.
TAIL_CHECK_SECONDS = 5.0
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL: restart me; the restart replays from the last commit


class CounterWorker:
    """The faust app with its table, agent, timer and rebalance hooks."""

    def __init__(self, settings: CounterSettings) -> None:
        self.settings = settings
        topics = settings.topics
        servers = [host.strip() for host in settings.kafka_bootstrap_servers.split(",")]
        self.app = CounterFaustApp(
            settings.app_id,
            broker=[f"kafka://{host}" for host in servers],
            store="memory://",
            autodiscover=False,
            datadir=str(settings.data_dir),
            # The table's partitions must equal the source topics' (created up front).
            topic_partitions=settings.kafka_topic_partitions,
            topic_replication_factor=settings.kafka_replication_factor,
            table_standby_replicas=settings.table_standby_replicas,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=SESSION_TIMEOUT_MS / 1000,
            broker_heartbeat_interval=HEARTBEAT_INTERVAL_MS / 1000,
            producer_acks=-1,
            # Batching stays on (recovery learns end offsets from Fetch: see
            # faust_transport), and a few ms of linger turns thousands of one-record
            # produce requests into a few: send() was a fifth of the worker's time.
            producer_linger=settings.producer_linger_seconds,
            broker_commit_interval=settings.commit_interval_seconds,
            # Our own HTTP server runs in this loop; faust's would fight for a port.
            web_enabled=False,
        )
        self.table = self.app.Table(
            TABLE_NAME,
            # str keys and dict values both travel as JSON in the changelog.
            key_type=str,
            partitions=settings.kafka_topic_partitions,
        )
        self.source = self.app.topic(
            topics.signatures, topics.petitions, key_serializer="raw", value_serializer="raw"
        )
        self._sources = {topics.signatures: Source.SIGNATURES, topics.petitions: Source.PETITIONS}
        self.records = FaustTable(self.app, self.table)
        self.publisher = FaustPublisher(self.app)
        self.counting = Counting(
            sources=self._sources,
            policy=MilestonePolicy(default_thresholds=tuple(settings.default_milestones)),
            table=self.records,
            publisher=self.publisher,
            milestones_topic=topics.milestones,
            gaps=KafkaGapReads(servers),
            highwater=consumer_highwater(self.app),
            dead_letters=KafkaDeadLetters(self.publisher, topics.dead_letters),
        )
        self.snapshots = SnapshotPublisher(
            self.counting,
            self.publisher,
            topics.counts,
            source_limit=settings.public_source_limit,
        )
        self.recovered = False

        self.app.agent(self.source, name="count")(self._count)
        self.app.timer(settings.coalesce_interval_seconds, name="publish-counts")(
            self.snapshots.publish_dirty
        )
        self.app.timer(TAIL_CHECK_SECONDS, name="fill-stalled-tails")(self._fill_stalled_tails)
        self.app.on_partitions_revoked.connect(self._on_partitions_revoked)
        self.table.on_recover(self._on_recovered)

    async def _count(self, stream: faust.StreamT[bytes]) -> None:
        # In batches: a changed petition record is written once per batch, not once per
        # event. faust acknowledges a batch's events only when this loop asks for the
        # next batch, so no offset is committed before the batch's writes are durable.
        async for batch in batches(
            stream, self.settings.batch_max_events, self.settings.batch_max_wait_seconds
        ):
            started = time.perf_counter()
            try:
                await self.apply_batch(batch)
            except RestartRequired:
                # Logged where raised. Exit without committing anything more.
                os._exit(EXIT_TEMPFAIL)
            except Exception:
                # faust would restart the agent and carry on after this batch, whose
                # events would then count as handled. Stop instead: the restarted
                # worker replays them, idempotently.
                log.critical("batch_failed", exc_info=True)
                os._exit(EXIT_TEMPFAIL)
            BATCH_SECONDS.observe(time.perf_counter() - started)

    async def apply_batch(self, events: Sequence[Any]) -> None:
        """Apply a batch of faust events (the source records are their messages)."""
        await self.counting.apply_batch([event.message for event in events])

    async def _on_partitions_revoked(
        self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any
    ) -> None:
        # Publish what this worker knows before the new owner publishes anything:
        # a snapshot sent after the handover could overwrite a newer one. No batch
        # is applied meanwhile (a tail check runs outside faust's agent).
        async with self.counting.exclusive():
            await self.snapshots.publish_dirty()
            await self.publisher.flush()
            self.counting.forget()

    async def _fill_stalled_tails(self) -> None:
        if not self.recovered or self.app.rebalancing:
            return
        owned = owned_partitions(self.app, self._sources)
        try:
            await self.counting.fill_stalled_tails(
                (topic, partition) for topic in self._sources for partition in owned
            )
        except RestartRequired:
            os._exit(EXIT_TEMPFAIL)  # logged where raised; as in `_count`
        except (KafkaError, OSError, TimeoutError) as exc:
            # Reading the tail back failed (the broker away): the next check retries.
            log.warning("tail_check_failed", error=type(exc).__name__)
        except Exception:
            log.critical("batch_failed", exc_info=True)
            os._exit(EXIT_TEMPFAIL)

    async def _on_recovered(self) -> None:
        # A worker killed between applying events and publishing their snapshot
        # leaves `counts` behind the table: republish every petition we now own.
        self.counting.forget()
        owned = owned_partitions(self.app, self._sources)
        self.counting.dirty |= self.records.petitions_on(owned)
        log.info(
            "counter_recovered",
            worker=self.settings.worker_name,
            partitions=sorted(owned),
            petitions=len(self.counting.dirty),
        )
        self.recovered = True
