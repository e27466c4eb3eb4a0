"""Answers in FastAPI's own error shape, for checks a request model cannot express.

Every service's OpenAPI promises 422 bodies as `{"detail": [{"loc", "msg", "type"}]}`;
a check made in a route (a slug that must exist, one field or another) answers the same
way, so clients parse one shape and the schema tests hold.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import HTTPException


def unprocessable(field: str | Sequence[str] | None, message: str) -> HTTPException:
    """A 422 naming the body field at fault (a dotted path as a sequence); None: the body."""
    path = [] if field is None else [field] if isinstance(field, str) else list(field)
    return HTTPException(
        422,  # the constant changed names across Starlette releases
        [{"loc": ["body", *path], "msg": message, "type": "value_error"}],
    )
