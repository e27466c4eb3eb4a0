"""UUIDs made in C: asyncpg's own UUID type, a subclass of `uuid.UUID`.

`uuid.UUID`'s constructor, `str()` and `.bytes` are Python code (0.65, 0.4 and 0.3 us),
and asyncpg encodes a plain `uuid.UUID` through `.bytes`. Its own type (what it hands
back for every uuid column, so every id read from the database is one already) does
all three in C, and asyncpg writes it without a Python call. Signing makes three ids a
signature (the signature's, two event ids) and turns each into text and bytes several
times on the way to the outbox: `uuid.uuid5` 2.1 us, this one 0.9 (docs/performance.md).

It is a library's internal module: if a release moves or changes it, the check below
falls back to `uuid.UUID` (slower, the same values), and `tests/unit/runtime/test_ids.py`
says so.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable

try:
    from asyncpg.pgproto.pgproto import UUID as _PgUUID
except ImportError:  # pragma: no cover - asyncpg moved it
    _PgUUID = None


def _plain(raw: bytes) -> uuid.UUID:
    return uuid.UUID(bytes=raw)


def _usable() -> bool:
    if _PgUUID is None or not issubclass(_PgUUID, uuid.UUID):
        return False
    probe = bytes(range(16))
    made = _PgUUID(probe)
    plain = uuid.UUID(bytes=probe)
    return made == plain and hash(made) == hash(plain) and str(made) == str(plain)


FAST = _usable()
_UUID: Callable[[bytes], uuid.UUID] = _PgUUID if FAST else _plain


def uuid4_from(raw: bytes) -> uuid.UUID:
    """`uuid.UUID(bytes=raw, version=4)`: random bytes given as a version 4 UUID."""
    return _UUID(_versioned(raw, 4))


def uuid5(namespace: uuid.UUID, name: str) -> uuid.UUID:
    """`uuid.uuid5(namespace, name)`, the same value (RFC 4122: SHA-1 of the namespace's
    bytes and the name, version and variant bits set)."""
    digest = hashlib.sha1(namespace.bytes + name.encode(), usedforsecurity=False).digest()
    return _UUID(_versioned(digest, 5))


def _versioned(raw: bytes, version: int) -> bytes:
    # Octet 6's high nibble is the version; octet 8's two high bits the RFC 4122 variant.
    n = int.from_bytes(raw[:16]) & ~(0xF000 << 64 | 0xC000 << 48)
    return (n | version << 76 | 0x8000 << 48).to_bytes(16)
