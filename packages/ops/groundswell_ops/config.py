"""Where the servers are: the same variables `make up` and the services read.

Defaults match `make up` on this machine (broker :9092, PostgreSQL :55432, services
:8001-8004), so `groundswell-ops monitor` needs no setup beside a running stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from groundswell_contracts.topics import Consumer, Topic

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:55432/groundswell"
# Schemas that own a transactional outbox (`<schema>.outbox`, published_at NULL = pending).
OUTBOX_SCHEMAS = ("signing", "mailer", "sharing")
SERVICES = (("signing", 8001), ("counter", 8002), ("mailer", 8003), ("sharing", 8004))
# The consumer group whose committed offsets on each `<consumer>.dlq` mark what was redriven.
REDRIVE_GROUP = "groundswell-ops-redrive"


@dataclass(frozen=True)
class OpsConfig:
    bootstrap: str = DEFAULT_BOOTSTRAP
    database_url: str = DEFAULT_DATABASE_URL
    services: dict[str, str] = field(default_factory=dict)
    # Consumer group -> the topics it is expected to read (its lag is shown even before
    # it commits anything). Groups found on the broker are added to these.
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    partitions: int = 6
    replication_factor: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OpsConfig:
        services = {}
        for name, port in SERVICES:
            upper = name.upper()
            url = env.get(f"{upper}_URL") or f"http://127.0.0.1:{env.get(f'{upper}_PORT', port)}"
            services[name] = url.rstrip("/")
        # Group ids as the services configure them (see each service's config.py).
        prefix = env.get("COUNTER_TOPIC_PREFIX", "")
        groups = {
            env.get("COUNTER_APP_ID", Consumer.COUNTER.value): (
                prefix + Topic.SIGNATURES,
                prefix + Topic.PETITIONS,
            ),
            env.get("MAILER_CONSUMER_GROUP", Consumer.MAILER.value): (Topic.SIGNATURES.value,),
            env.get("SHARING_CONSUMER_GROUP", Consumer.SHARING.value): (
                Topic.PETITIONS.value,
                Topic.SIGNATURES.value,
            ),
        }
        return cls(
            bootstrap=env.get("KAFKA_BOOTSTRAP_SERVERS") or DEFAULT_BOOTSTRAP,
            database_url=env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            services=services,
            groups=groups,
            partitions=int(env.get("KAFKA_TOPIC_PARTITIONS", "6")),
            replication_factor=int(env.get("KAFKA_REPLICATION_FACTOR", "1")),
        )
