"""Every Kafka topic name lives here and nowhere else."""

from __future__ import annotations

from enum import StrEnum


class Topic(StrEnum):
    PETITIONS = "petitions"
    SIGNATURES = "signatures"
    SHARE_CLICKS = "share-clicks"
    REFERRALS = "referrals"
    COUNTS = "counts"
    MILESTONES = "milestones"
    EMAIL_EVENTS = "email-events"
    # Data keys for sealed contact details: the mailer alone reads it (ACLs on Kafka).
    SIGNER_KEYS = "signer-keys"
    # Erasure and access requests awaiting verification by email (contact sealed).
    PRIVACY = "privacy"


# `counts` and `signer-keys` hold "the latest value per key" rather than a history:
# compacted on real Kafka. The local broker keeps everything (harmless for counts; for
# signer-keys it means a shredded key stays in the broker's memory until it restarts,
# see docs/privacy.md).
# A shredded key must leave the log soon, not "some day": segments roll hourly and any
# record superseded for an hour is due for compaction (max.compaction.lag.ms, KIP-354).
_HOUR_MS = str(60 * 60 * 1000)
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    Topic.COUNTS: {"cleanup.policy": "compact"},
    Topic.SIGNER_KEYS: {
        "cleanup.policy": "compact",
        "segment.ms": _HOUR_MS,
        "max.compaction.lag.ms": _HOUR_MS,
        "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": _HOUR_MS,
    },
}


def dead_letter_topic(consumer: str) -> str:
    """Events a consumer could not process go to `<consumer>.dlq`, keyed as the source."""
    return f"{consumer}.dlq"


# Consumer group names double as dead-letter topic prefixes.
class Consumer(StrEnum):
    COUNTER = "counter"
    MAILER = "mailer"
    SHARING = "sharing"


def all_topics() -> list[str]:
    return [t.value for t in Topic] + [dead_letter_topic(c) for c in Consumer]
