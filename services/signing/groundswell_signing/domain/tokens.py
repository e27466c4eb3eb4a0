"""Secrets handed to signers: stored only as hashes, compared by hash lookup."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import uuid
from typing import NamedTuple

from groundswell_contracts.sealed import DATA_KEY_BYTES
from groundswell_runtime import ids

# 8 characters of url-safe base64: 48 bits, unguessable for share links, short to type.
SHARE_CODE_BYTES = 6
TOKEN_BYTES = 32


def new_share_code() -> str:
    return secrets.token_urlsafe(SHARE_CODE_BYTES)


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class SignatureSecrets(NamedTuple):
    """What a new signature draws at random."""

    id: uuid.UUID
    confirmation_token: str
    withdraw_token: str
    share_code: str
    data_key: bytes


_DRAW = 16 + 2 * TOKEN_BYTES + SHARE_CODE_BYTES + DATA_KEY_BYTES


def new_signature_secrets() -> SignatureSecrets:
    """All of them from ONE read of the operating system's randomness, cut in pieces (as
    random as five reads: no byte serves twice). Each read is a system call, and five of
    them were about a seventh of a signing request's own work (docs/performance.md).
    The same shapes as `uuid.uuid4`, `new_token`, `new_share_code` and `new_data_key`."""
    raw = os.urandom(_DRAW)
    tokens = 16 + 2 * TOKEN_BYTES
    return SignatureSecrets(
        ids.uuid4_from(raw[:16]),
        _urlsafe(raw[16 : 16 + TOKEN_BYTES]),
        _urlsafe(raw[16 + TOKEN_BYTES : tokens]),
        _urlsafe(raw[tokens : tokens + SHARE_CODE_BYTES]),
        raw[tokens + SHARE_CODE_BYTES :],
    )


def _urlsafe(raw: bytes) -> str:
    # What `secrets.token_urlsafe` makes of its bytes.
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
