"""Counter settings: `COUNTER_*` environment variables over the shared ones."""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from groundswell_contracts.topics import Consumer, Topic, dead_letter_topic
from groundswell_runtime.settings import ServiceSettings
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from groundswell_counter.domain.milestones import DEFAULT_THRESHOLDS


def _default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class CounterSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="COUNTER_", extra="ignore")

    port: int = Field(8002, ge=0, le=65535)
    # Extra workers can leave HTTP to others; port 0 also turns it off.
    http_enabled: bool = True
    # faust app id: the consumer group and the prefix of the table changelog topic.
    app_id: str = Consumer.COUNTER.value
    worker_name: str = Field(default_factory=_default_worker_name)
    # Prepended to every topic the counter reads or writes: lets several stacks (or
    # test runs) share one broker. Empty in a normal deployment.
    topic_prefix: str = ""
    default_milestones: tuple[int, ...] = DEFAULT_THRESHOLDS
    # Snapshots of changed petitions go out at most this often: the coalescing point
    # between the event rate and the `counts` topic, and most of the freshness budget.
    coalesce_interval_seconds: float = Field(0.1, gt=0)
    # Events are applied in batches of at most this many, or whatever arrived within
    # this wait: each changed petition record is written once per batch.
    batch_max_events: int = Field(500, ge=1)
    batch_max_wait_seconds: float = Field(0.05, gt=0)
    producer_linger_seconds: float = Field(0.005, ge=0)
    # How often the consumed offsets are committed (faust's default 2.8 s). Signing reads
    # them to tell how far behind the counter is (its admission, groundswell_runtime.
    # consumer_lag): every commit interval is read as lag that is not there. Restarts
    # do not depend on it (the table holds each partition's position).
    commit_interval_seconds: float = Field(0.5, gt=0)
    # The public count (snapshots, JSON, live stream) names at most this many signer-
    # chosen `source` codes, the largest, and sums the rest under "other": signers pick
    # the code, so without a cap one petition's document could grow without bound.
    public_source_limit: int = Field(20, ge=1)
    # At most one live-stream event per petition per listener this often.
    stream_min_interval_seconds: float = Field(0.25, ge=0)
    stream_heartbeat_seconds: float = Field(15.0, gt=0)
    # A live stream asked for a petition the counts view has not met yet waits this
    # long for it before answering 404: a petition's first snapshot arrives a fraction
    # of a second after its creation, and a 404 ends a browser's EventSource for good.
    stream_unknown_wait_seconds: float = Field(5.0, ge=0)
    # Live streams one client network (IPv4 address, IPv6 /64) may hold open at once.
    streams_per_client: int = Field(20, ge=1)
    cache_max_age_seconds: int = Field(2, ge=0)
    cache_stale_while_revalidate_seconds: int = Field(30, ge=0)
    # faust's data directory. The in-memory table store writes nothing there, but faust
    # creates it: keep it out of the working directory (the repository, under `make up`).
    data_dir: Path = Path(tempfile.gettempdir()) / "groundswell-counter"
    # faust, mode and aiokafka log at WARNING and above unless this is set.
    verbose_framework_logs: bool = False
    # Standby replicas buy nothing with the in-memory store: a worker taking over a
    # partition re-reads its whole changelog anyway.
    table_standby_replicas: int = Field(0, ge=0)

    @property
    def serves_http(self) -> bool:
        return self.http_enabled and self.port != 0

    @property
    def topics(self) -> CounterTopics:
        return CounterTopics.with_prefix(self.topic_prefix)


@dataclass(frozen=True, slots=True)
class CounterTopics:
    signatures: str
    petitions: str
    counts: str
    milestones: str
    dead_letters: str

    @classmethod
    def with_prefix(cls, prefix: str) -> CounterTopics:
        return cls(
            signatures=prefix + Topic.SIGNATURES,
            petitions=prefix + Topic.PETITIONS,
            counts=prefix + Topic.COUNTS,
            milestones=prefix + Topic.MILESTONES,
            dead_letters=prefix + dead_letter_topic(Consumer.COUNTER),
        )

    def all(self) -> list[str]:
        return [self.signatures, self.petitions, self.counts, self.milestones, self.dead_letters]
