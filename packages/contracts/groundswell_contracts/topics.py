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


# Topics that hold "the latest value per key" rather than a history. Compacted on
# real Kafka; the local broker keeps everything, which is harmless.
COMPACTED_TOPICS = frozenset({Topic.COUNTS})


def dead_letter_topic(consumer: str) -> str:
    """Events a consumer could not process go to `<consumer>.dlq`, keyed as the source."""
    return f"{consumer}.dlq"


# Consumer group names double as dead-letter topic prefixes.
class Consumer(StrEnum):
    COUNTER = "counter"
    COUNTS_VIEW = "counter-view"
    MAILER = "mailer"
    SHARING = "sharing"


def all_topics() -> list[str]:
    return [t.value for t in Topic] + [dead_letter_topic(c) for c in Consumer]
