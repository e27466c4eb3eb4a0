"""Secrets handed to signers: stored only as hashes, compared by hash lookup."""

from __future__ import annotations

import hashlib
import secrets

# 8 characters of url-safe base64: 48 bits, unguessable for share links, short to type.
SHARE_CODE_BYTES = 6
TOKEN_BYTES = 32


def new_share_code() -> str:
    return secrets.token_urlsafe(SHARE_CODE_BYTES)


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
