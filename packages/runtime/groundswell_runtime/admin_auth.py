"""The admin check (Bearer ADMIN_TOKEN) for services whose admin routes need no more.

Constant time, the same answer whether the token is missing or wrong, and nobody is an
admin while no token is configured. Signing adds failure throttling on top of the same
comparison (its entrypoints/http/admin_auth.py): it is the service exposed to the most
guessing.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

_bearer = HTTPBearer(auto_error=False, description="The ADMIN_TOKEN")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def admin_check(token: SecretStr | None) -> Callable[[HTTPAuthorizationCredentials | None], None]:
    """A FastAPI dependency refusing (401) any request without the admin token."""
    expected = token.get_secret_value().encode() if token and token.get_secret_value() else None

    def require_admin(credentials: Credentials) -> None:
        given = credentials.credentials.encode() if credentials else b""
        if expected is None or not credentials or not secrets.compare_digest(given, expected):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "A valid admin token is required (Authorization: Bearer <ADMIN_TOKEN>)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_admin
