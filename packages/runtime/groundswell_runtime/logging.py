"""structlog JSON to stdout, with request/correlation ids bound from context.

Personal data never reaches a log line: keys that could carry it are dropped by a
processor, so a careless `log.info(..., email=...)` is caught centrally.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

PERSONAL_KEYS = frozenset(
    {"email", "name", "ip", "client_ip", "postcode", "address", "token", "password"}
)


def _drop_personal_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in PERSONAL_KEYS.intersection(event_dict):
        event_dict[key] = "[redacted]"
    return event_dict


# The process's service name, set by `configure_logging`. Read when each line is written,
# not captured: loggers are cached on first use (`cache_logger_on_first_use`) with the
# processors of that moment, so a captured name would outlive a later configuration.
_service = ["?"]


def _naming_service(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Every line names its service. Not a context variable: the request-id middleware
    clears the context at the start of each request, which would drop it from every line
    a request writes (request and audit lines included)."""
    event_dict.setdefault("service", _service[0])
    return event_dict


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route structlog and stdlib logging (uvicorn, aiokafka, faust) through one JSON renderer."""
    _service[0] = service
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _naming_service,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_personal_data,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's access log prints client addresses: personal data.
    logging.getLogger("uvicorn.access").disabled = True
    structlog.contextvars.clear_contextvars()
