"""Personal data on shared topics travels sealed, under a key that can be destroyed.

A signer's contact details (address, name, one-time tokens) are needed by one consumer
only: the mailer. Events on shared topics therefore carry them as a `SealedContact`:
AES-256-GCM under a data key of that signer's own (`key_id`, the signature's or the
privacy request's id). The key is kept in signing's database and handed to the mailer on
the `signer-keys` topic, which no other consumer reads (ACLs on Apache Kafka).

Erasure is crypto-shredding: signing deletes the key and announces `DataKeyShredded`;
the mailer deletes its copy; compaction of `signer-keys` drops the superseded record.
Every other copy of the sealed bytes (the `signatures` topic, dead-letter topics,
backups) is then unreadable, with no need to find or rewrite it.

The associated data binds a sealed blob to the event that carries it, so a blob cannot be
moved into another event (say, to get a confirmation email sent for someone else).
"""

from __future__ import annotations

import base64
import os
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict

_NONCE_BYTES = 12  # the GCM standard nonce; random per seal, never reused with a key


class Contact(BaseModel):
    """What the mailer needs to write to someone; never on a topic in clear."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    email: str
    name: str = ""
    confirmation_token: str | None = None
    withdraw_token: str | None = None
    # A privacy request's one-time verification secret (erasure and access).
    verification_token: str | None = None


class SealedContact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    key_id: UUID
    nonce: str
    ciphertext: str


class Unreadable(Exception):
    """Wrong key, tampered bytes, or a blob moved into another event."""


# A signer's own key: AES-256-GCM.
DATA_KEY_BYTES = 32


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=DATA_KEY_BYTES * 8)


def encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


def decode_key(text: str) -> bytes:
    return base64.urlsafe_b64decode(text)


def associated_data(event_type: str, event_id: UUID) -> bytes:
    return f"{event_type}:{event_id}".encode()


def seal(contact: Contact, key: bytes, key_id: UUID, associated: bytes) -> SealedContact:
    nonce = os.urandom(_NONCE_BYTES)
    ciphertext = AESGCM(key).encrypt(nonce, contact.model_dump_json().encode(), associated)
    return SealedContact(
        key_id=key_id,
        nonce=base64.urlsafe_b64encode(nonce).decode(),
        ciphertext=base64.urlsafe_b64encode(ciphertext).decode(),
    )


def unseal(sealed: SealedContact, key: bytes, associated: bytes) -> Contact:
    try:
        plain = AESGCM(key).decrypt(
            base64.urlsafe_b64decode(sealed.nonce),
            base64.urlsafe_b64decode(sealed.ciphertext),
            associated,
        )
    except (InvalidTag, ValueError) as exc:
        raise Unreadable(str(sealed.key_id)) from exc
    return Contact.model_validate_json(plain)
