"""The one adapter between Groundswell and a Kafka broker.

Everything here works on Apache Kafka and on the local Tansu broker. Tansu's
gaps (see docs/operations.md) are handled in this module only:
- no idempotent/transactional producer: producers never ask for one; every
  consumer is idempotent instead;
- auto-created topics get the wrong partition count: topics are created
  explicitly, and each CreateTopics error code is checked (aiokafka does not raise);
- JoinGroup is held for half the session timeout: a short session timeout;
- ListOffsets(latest) undercounts and whole-group OffsetFetch is malformed:
  nothing here relies on either;
- Fetch is held for about half the max wait even when records are waiting: a short wait.
- a client naming a missing topic makes the broker create it with the broker's default
  partition count (on a restarted, empty local broker: 4, not ours): auto-creation is
  switched off in every client (`_refuse_topic_auto_creation`), and start-up checks each
  topic's partition count.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.metadata import MetadataRequest
from groundswell_contracts.topics import TOPIC_CONFIGS, all_topics

log = structlog.get_logger()

TOPIC_ALREADY_EXISTS = 36
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000
# The local broker holds every Fetch for about half its max wait even when records are
# waiting (measured: 1500 ms -> ~700 ms, 500 -> ~200, 100 -> ~30): keep it short.
FETCH_MAX_WAIT_MS = 100
# For consumers that are not live (mail, share attribution): every Fetch costs the broker
# CPU whether or not records are waiting, and at 100 ms the mailer's and sharing's idle
# polling took ~6% of a core in the local broker (measured by stopping them), CPU that a
# surge wants for signing. On Apache Kafka a Fetch returns as soon as records arrive, so
# this only spaces out idle polls. The local broker answers a Fetch that found records
# after half this wait, and lists every batch the partition ever stored for it (see
# outbox.PASS_INTERVAL): a longer wait means fewer such listings, ~0.5 s before an email.
BULK_FETCH_MAX_WAIT_MS = 1000


class TopicCreationError(RuntimeError):
    pass


def _refuse_topic_auto_creation() -> None:
    """A fence on aiokafka internals, applied once when this module is imported.

    aiokafka builds every Metadata request (producers, consumers, faust's, the admin
    client's) with `allow_auto_topic_creation` defaulting to True, and offers no setting
    for it. A client that names a topic the broker lost would then re-create it with the
    broker's default layout. Topics here are made only by `ensure_topics`, so the default
    becomes False. Harmless on Apache Kafka, where we create every topic up front anyway.
    Checked against aiokafka 0.14 (`aiokafka/protocol/metadata.py`); re-check on upgrade.
    """
    original = MetadataRequest.__init__
    if getattr(original, "groundswell_fenced", False):
        return

    def init(
        self: MetadataRequest,
        topics: list[str] | None = None,
        allow_auto_topic_creation: bool | None = None,
    ) -> None:
        original(self, topics, bool(allow_auto_topic_creation))

    init.groundswell_fenced = True  # type: ignore[attr-defined]
    MetadataRequest.__init__ = init


_refuse_topic_auto_creation()


async def ensure_topics(
    bootstrap: str,
    partitions: int,
    replication_factor: int,
    topics: Iterable[str] | None = None,
) -> None:
    """Create every topic up front with a fixed partition count; existing topics are fine."""
    names = list(topics) if topics is not None else all_topics()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        new_topics = [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=replication_factor,
                topic_configs=TOPIC_CONFIGS.get(name, {}),
            )
            for name in names
        ]
        response = await admin.create_topics(new_topics)
        failures = []
        for entry in response.topic_errors:
            topic, code = entry[0], entry[1]
            if code not in (0, TOPIC_ALREADY_EXISTS):
                failures.append(f"{topic}: {for_code(code).__name__}")
        if failures:
            raise TopicCreationError("could not create topics: " + ", ".join(failures))
        # "Already exists" is only fine with our layout: a topic some client made on its
        # own has the broker's default partition count, and keyed order would break.
        wrong = [
            f"{t['topic']} has {len(t['partitions'])}"
            for t in await admin.describe_topics(names)
            if len(t["partitions"]) != partitions
        ]
        if wrong:
            log.error("topic_layout_wrong", expected=partitions, topics=wrong)
            raise TopicCreationError(
                f"topics with the wrong partition count (expected {partitions}): "
                + ", ".join(wrong)
            )
        log.info("topics_ready", count=len(names), partitions=partitions)
    finally:
        await admin.close()


def make_producer(bootstrap: str, *, linger_ms: int = 5) -> AIOKafkaProducer:
    # acks=all without idempotence: Tansu rejects InitProducerId from aiokafka, and
    # every consumer here deduplicates by event id, so a retried send is harmless.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=linger_ms,
        request_timeout_ms=10_000,
        enable_idempotence=False,
    )


def make_consumer(
    bootstrap: str,
    group_id: str | None,
    *topics: str,
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        max_poll_records=500,
        fetch_max_wait_ms=fetch_max_wait_ms,
    )


async def broker_reachable(bootstrap: str) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        await admin.start()
        return True
    except KafkaError:
        return False
    finally:
        await admin.close()
