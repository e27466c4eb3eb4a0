"""Delivery rules: what may be sent, which failures are final, when to try again."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from groundswell_contracts.events import EmailKind

# A person can be told "you have already signed" at most once per signature per window,
# so nobody can use the petition to flood someone else's mailbox.
ALREADY_SIGNED_WINDOW = timedelta(hours=24)


class EmailStatus(StrEnum):
    HELD = "held"  # a thank-you waiting for its signature to be confirmed
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"  # the recipient unsubscribed before it went out
    CANCELLED = "cancelled"  # the signature was withdrawn or invalidated first


FINISHED = frozenset(
    {EmailStatus.SENT, EmailStatus.FAILED, EmailStatus.SUPPRESSED, EmailStatus.CANCELLED}
)


class SmtpStage(StrEnum):
    CONNECT = "connect"
    HELO = "helo"
    AUTH = "auth"
    SENDER = "sender"
    RECIPIENT = "recipient"
    DATA = "data"
    TRANSPORT = "transport"


# 5xx at these stages is about this message or this mailbox; at the others it is
# about our own connection or credentials, which an operator can fix, so retry.
_MESSAGE_STAGES = frozenset({SmtpStage.SENDER, SmtpStage.RECIPIENT, SmtpStage.DATA})


def unsubscribe_applies(kind: EmailKind) -> bool:
    """A confirmation is the only way a signature can count, so it ignores unsubscribes."""
    return bool(kind != "confirmation")


def should_suppress(kind: EmailKind, unsubscribed: bool) -> bool:
    return unsubscribed and unsubscribe_applies(kind)


def is_permanent(code: int | None, stage: SmtpStage) -> bool:
    return code is not None and 500 <= code < 600 and stage in _MESSAGE_STAGES


@dataclass(frozen=True)
class SmtpFailure:
    code: int | None
    stage: SmtpStage
    detail: str

    @property
    def permanent(self) -> bool:
        return is_permanent(self.code, self.stage)

    def describe(self) -> str:
        prefix = f"{self.code} " if self.code is not None else ""
        return redact_addresses(f"{prefix}{self.stage.value}: {self.detail}")[:300]


@dataclass(frozen=True)
class RetryLater:
    delay_seconds: float


@dataclass(frozen=True)
class GiveUp:
    permanent: bool


def after_failure(
    failure: SmtpFailure,
    attempts: int,
    *,
    max_attempts: int,
    base_seconds: float,
    max_seconds: float,
    jitter: float = 0.0,
) -> RetryLater | GiveUp:
    """What to do once attempt number `attempts` failed.

    `jitter` in [0, 1) spreads retries of a burst (say, a relay's outage) so they do
    not all hit the server again in the same second.
    """
    if failure.permanent:
        return GiveUp(permanent=True)
    if attempts >= max_attempts:
        return GiveUp(permanent=False)
    return RetryLater(retry_delay(attempts, base_seconds, max_seconds, jitter))


def retry_delay(
    attempts: int, base_seconds: float, max_seconds: float, jitter: float = 0.0
) -> float:
    exponential = base_seconds * float(2 ** max(attempts - 1, 0))
    return min(max_seconds, exponential) * (1.0 + 0.25 * jitter)


_ADDRESS = re.compile(r"[^\s<>\"'(),;:@]+@[^\s<>\"'(),;:]+")


def redact_addresses(text: str) -> str:
    """SMTP replies often quote the mailbox; errors leave this service without it."""
    return _ADDRESS.sub("[address]", text)
