"""One Kafka record as an operator reads it: pure, no I/O.

Personal data never reaches the terminal: the fields that carry it (`email`, `name`,
the confirmation and withdraw tokens, and every key the services' logs redact) are
masked wherever they appear in a document, however deep. An email keeps its domain,
which is what abuse handling works with (the admin API invalidates by email domain);
everything else becomes `***`. Values that are not JSON are never printed, only their size.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from groundswell_contracts.headers import CORRELATION_ID, DLQ_ERROR, DLQ_SOURCE, EVENT_TYPE
from groundswell_runtime.dead_letters import Record
from groundswell_runtime.logging import PERSONAL_KEYS

MASK = "***"
PERSONAL = PERSONAL_KEYS | {"first_name", "last_name", "phone", "user_agent", "data_key"}
# Sealed contact details (groundswell_contracts.sealed): shown as what they are.
SEALED = "(sealed)"
# Fields every event has: shown in their own columns, not in the summary.
COMMON_FIELDS = {"event_id", "event_type", "schema_version", "occurred_at", "petition_id"}
SUMMARY_WIDTH = 160
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_EMAIL = re.compile(r"[^\s@<>\"',;:]+@([A-Za-z0-9.-]+)")


class RecordLike(Record, Protocol):
    """What aiokafka's ConsumerRecord offers (and tests can build by hand)."""

    @property
    def timestamp(self) -> int: ...  # milliseconds, as Kafka keeps it
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


def is_personal(key: str) -> bool:
    lowered = key.lower()
    return lowered in PERSONAL or lowered.endswith(("_token", "_email", "_name", "_ip"))


def mask_email(value: str) -> str:
    _, at, domain = value.rpartition("@")
    return f"{MASK}@{domain}" if at and domain else MASK


def mask_value(key: str, value: Any) -> Any:
    if value is None:
        return None
    if "email" in key.lower() and isinstance(value, str):
        return mask_email(value)
    return MASK


def scrub(text: str) -> str:
    """Free text (an error message, a log line) with any email address masked."""
    return _EMAIL.sub(lambda m: f"{MASK}@{m.group(1)}", text)


def masked(document: Any) -> Any:
    """A copy of a JSON document with every personal field masked, at any depth."""
    if isinstance(document, dict):
        return {
            k: SEALED
            if k == "contact" and isinstance(v, dict) and "ciphertext" in v
            else mask_value(k, v)
            if is_personal(k)
            else masked(v)
            for k, v in document.items()
        }
    if isinstance(document, list):
        return [masked(v) for v in document]
    if isinstance(document, str):
        return scrub(document)
    return document


def header(record: RecordLike, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return value.decode(errors="replace")
    return None


def _scalar(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), default=str)
    text = str(value)
    # Ids in a one-line summary: their first 8 characters (`--json` has them whole).
    return text[:8] if _UUID.match(text) else text


def summarize(document: dict[str, Any], width: int = SUMMARY_WIDTH) -> str:
    """`key=value` for the event's own fields (masked ones left out), cut to one short line."""
    parts = [
        f"{k}={_scalar(v)}"
        for k, v in masked(document).items()
        # A field masked whole says nothing on one line; a masked email keeps its domain.
        if k not in COMMON_FIELDS and v not in (None, [], {}, MASK)
    ]
    text = " ".join(parts)
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass(frozen=True)
class RecordView:
    topic: str
    partition: int
    offset: int
    time: str
    event_type: str
    key: str
    correlation_id: str | None
    event_id: str | None
    summary: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def line(self) -> str:
        cid = self.correlation_id or "-"
        text = f"{self.time}  {self.where}  {self.event_type}  key={self.key}  cid={cid}"
        for name, value in self.extra.items():
            text += f"  {name}={value}"
        return f"{text}  {self.summary}".rstrip()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def view(record: RecordLike) -> RecordView:
    document: Any = None
    with contextlib.suppress(ValueError):
        document = json.loads(record.value or b"")
    if isinstance(document, dict):
        event_type = str(document.get("event_type") or header(record, EVENT_TYPE) or "?")
        summary = summarize(document)
        event_id = str(document["event_id"]) if document.get("event_id") else None
    else:
        event_type = header(record, EVENT_TYPE) or "(not JSON)"
        summary = f"({len(record.value or b'')} bytes, not a JSON object)"
        event_id = None
    extra = {}
    for name in (DLQ_ERROR, DLQ_SOURCE):
        value = header(record, name)
        if value is not None:
            extra[name] = scrub(value)
    when = datetime.fromtimestamp(record.timestamp / 1000, UTC) if record.timestamp >= 0 else None
    return RecordView(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        time=when.isoformat(timespec="milliseconds").replace("+00:00", "Z") if when else "-",
        event_type=event_type,
        # Keys are petition ids here; a foreign producer's key is shown only by size.
        key=_safe_key(record.key),
        correlation_id=header(record, CORRELATION_ID),
        event_id=event_id,
        summary=summary,
        extra=extra,
    )


def _safe_key(key: bytes | None) -> str:
    if key is None:
        return "-"
    text = key.decode(errors="replace")
    if len(text) <= 64 and all(c.isalnum() or c in "-_." for c in text):
        return text
    return f"({len(key)} bytes)"
