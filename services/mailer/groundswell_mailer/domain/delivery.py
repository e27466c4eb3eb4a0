"""Delivery rules: what may be sent, which failures are final, when to try again, and
when a sender may still start a conversation for an email it claimed.

The dispatcher (entrypoints/dispatcher.py) applies these; the SMTP and database I/O live
in the adapters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from groundswell_contracts.events import EmailKind
from groundswell_runtime.retry import backoff as backoff  # the one retry pause (re-exported)

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
    """A confirmation is the only way a signature can count, and a privacy request's link
    was asked for by the person it goes to: both ignore unsubscribes."""
    return kind not in ("confirmation", "privacy_verification")


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
        return storable(redact_addresses(f"{prefix}{self.stage.value}: {self.detail}"))[:300]

    @property
    def about_connection(self) -> bool:
        """The server could not be reached or kept talking: the next email would fail too."""
        return self.stage in _CONNECTION_STAGES or (
            self.code is None and self.stage == SmtpStage.TRANSPORT
        )


_CONNECTION_STAGES = frozenset({SmtpStage.CONNECT, SmtpStage.HELO, SmtpStage.AUTH})


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


# Outcomes of one claimed email, recorded in batches. Each names only the email: the
# rest (petition, signature, correlation id) comes back from the row when recorded.


@dataclass(frozen=True)
class Sent:
    email_id: int


@dataclass(frozen=True)
class Deferred:
    email_id: int
    delay_seconds: float
    error: str


@dataclass(frozen=True)
class Failed:
    email_id: int
    permanent: bool
    error: str


@dataclass(frozen=True)
class Suppressed:
    email_id: int


@dataclass(frozen=True)
class Released:
    """Claimed but never started (the sender is stopping): back to the queue as it was."""

    email_id: int


Outcome = Sent | Deferred | Failed | Suppressed | Released


def outcome_of_failure(
    email_id: int,
    failure: SmtpFailure,
    attempts: int,
    *,
    max_attempts: int,
    base_seconds: float,
    max_seconds: float,
    jitter: float = 0.0,
) -> Deferred | Failed:
    decision = after_failure(
        failure,
        attempts,
        max_attempts=max_attempts,
        base_seconds=base_seconds,
        max_seconds=max_seconds,
        jitter=jitter,
    )
    if isinstance(decision, GiveUp):
        return Failed(email_id, decision.permanent, failure.describe())
    return Deferred(email_id, decision.delay_seconds, failure.describe())


class Lease:
    """Whether this process may still start an SMTP conversation for the emails it holds.

    Every claimed row carries `claimed_until`, renewed for all of a process's claims by
    one statement every few seconds; a claim whose lease lapsed may be taken over by
    another sender. Correctness: `renewed(t)` is called with the local time taken
    *before* the renewing statement was sent, so the database's `now()` at renewal is
    later and every held row's lease ends after `t + seconds` (rows claimed since then
    end later still). A sender starts a conversation only before `t + seconds * margin`
    (margin < 1), so while renewals keep failing it stops starting new conversations
    well before anyone else may take the claims over; what can overlap a takeover is
    only a conversation already under way at that moment.
    """

    def __init__(self, seconds: float, margin: float = 0.5) -> None:
        if not 0 < margin < 1:
            raise ValueError("margin must be between 0 and 1")
        self.seconds = seconds
        self._margin = margin
        self._renewed_at: float | None = None

    def renewed(self, sent_at: float) -> None:
        if self._renewed_at is None or sent_at > self._renewed_at:
            self._renewed_at = sent_at

    def may_start(self, now: float) -> bool:
        return self._renewed_at is not None and now < self._renewed_at + self.seconds * self._margin


_UNSTORABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def storable(text: str) -> str:
    """Text a PostgreSQL `text` column takes: no NUL or control bytes, no lone surrogates."""
    cleaned = _UNSTORABLE.sub(" ", text)
    return cleaned.encode("utf-8", "replace").decode("utf-8")


_ADDRESS = re.compile(r"[^\s<>\"'(),;:@]+@[^\s<>\"'(),;:]+")


def redact_addresses(text: str) -> str:
    """SMTP replies often quote the mailbox; errors leave this service without it."""
    return _ADDRESS.sub("[address]", text)
