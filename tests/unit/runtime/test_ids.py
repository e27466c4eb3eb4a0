import os
import uuid

import pytest
from groundswell_runtime import ids


def test_the_fast_type_is_in_use() -> None:
    # If asyncpg moves or changes its UUID type, ids fall back to uuid.UUID: same values,
    # slower. This says so, so that the fallback is a decision, not an accident.
    assert ids.FAST, "asyncpg's UUID type is not usable: ids.py falls back to uuid.UUID"


@pytest.mark.parametrize("name", ["created", "data-key", "petition-v7", "", "émargement"])
def test_uuid5_is_the_standard_one(name: str) -> None:
    for _ in range(200):
        namespace = ids.uuid4_from(os.urandom(16))
        made = ids.uuid5(namespace, name)
        expected = uuid.uuid5(uuid.UUID(bytes=namespace.bytes), name)
        assert made == expected
        assert str(made) == str(expected) and hash(made) == hash(expected)
        assert made.version == 5 and made.variant == uuid.RFC_4122
        assert isinstance(made, uuid.UUID)


def test_uuid4_from_is_what_uuid_makes_of_the_bytes() -> None:
    for _ in range(500):
        raw = os.urandom(16)
        made = ids.uuid4_from(raw)
        assert made == uuid.UUID(bytes=raw, version=4)
        assert made.version == 4 and made.bytes == uuid.UUID(bytes=raw, version=4).bytes
