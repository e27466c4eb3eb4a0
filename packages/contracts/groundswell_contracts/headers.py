"""Kafka header names carried beside every event."""

CORRELATION_ID = "correlation_id"
EVENT_TYPE = "event_type"
# Set on dead-lettered records: why the consumer gave up.
DLQ_ERROR = "dlq_error"
DLQ_SOURCE = "dlq_source"
