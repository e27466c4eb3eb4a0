"""Use cases for signers: sign, confirm, withdraw."""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg
from groundswell_contracts.events import SignatureDuplicateAttempted
from groundswell_runtime.outbox import enqueue

from groundswell_signing.adapters import repository
from groundswell_signing.adapters.repository import SCHEMA
from groundswell_signing.config import SigningSettings
from groundswell_signing.domain.events import (
    signature_confirmed,
    signature_created,
    signature_withdrawn,
)
from groundswell_signing.domain.petitions import PetitionClosedError, PetitionNotFound
from groundswell_signing.domain.signatures import SignatureError, ValidSignature, first_name
from groundswell_signing.domain.tokens import hash_token, new_share_code, new_token


class RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after}s")
        self.retry_after = retry_after


class Blocked(Exception):
    """The request comes from a blocked network."""


class TokenNotValid(LookupError):
    """Unknown, used or expired token."""


@dataclass(frozen=True)
class SignOutcome:
    status: Literal["pending_confirmation", "signed"]
    share_code: str


@dataclass(frozen=True)
class Confirmation:
    slug: str
    title: str
    share_code: str


@dataclass(frozen=True)
class AbusePolicy:
    settings: SigningSettings
    disposable_domains: frozenset[str]

    def check_ip(self, ip: str | None) -> None:
        if ip is None:
            return
        address = ipaddress.ip_address(ip)
        for cidr in self.settings.blocked_ip_ranges:
            if address in ipaddress.ip_network(cidr, strict=False):
                raise Blocked()

    def check_email_domain(self, domain: str) -> None:
        blocked = self.disposable_domains | {d.lower() for d in self.settings.blocked_email_domains}
        if domain in blocked or any(domain.endswith("." + b) for b in blocked):
            raise SignatureError({"email": "Use a permanent email address, not a disposable one"})

    async def over_limit(
        self, conn: asyncpg.Connection, ip: str | None, petition_id: uuid.UUID, now: datetime
    ) -> int | None:
        """Seconds until this IP may sign again, or None when it is within its limits."""
        if ip is None:
            return None
        s = self.settings
        windows = [
            (s.rate_burst_count, s.rate_burst_seconds, petition_id),
            (s.rate_sustained_count, s.rate_sustained_seconds, petition_id),
            (s.rate_global_count, s.rate_global_seconds, None),
        ]
        waits = []
        for limit, seconds, scope in windows:
            count, oldest = await repository.recent_signatures_from_ip(
                conn, ip, now - timedelta(seconds=seconds), scope
            )
            if count >= limit and oldest is not None:
                waits.append(
                    max(1, int((oldest + timedelta(seconds=seconds) - now).total_seconds()) + 1)
                )
        return max(waits) if waits else None


async def sign_petition(
    pool: asyncpg.Pool,
    policy: AbusePolicy,
    slug: str,
    signature: ValidSignature,
    ip: str | None,
    now: datetime,
) -> SignOutcome:
    policy.check_ip(ip)
    policy.check_email_domain(signature.email_domain)
    async with pool.acquire() as conn, conn.transaction():
        petition = await repository.get_petition(conn, slug)
        if petition is None:
            raise PetitionNotFound(slug)
        if not petition.accepting_signatures(now):
            raise PetitionClosedError(slug)
        status: Literal["pending", "signed", "fraudulent"] = (
            "pending" if petition.requires_confirmation else "signed"
        )
        public_status: Literal["pending_confirmation", "signed"] = (
            "pending_confirmation" if petition.requires_confirmation else "signed"
        )
        retry_after = await policy.over_limit(conn, ip, petition.id, now)
        if retry_after is not None:
            if policy.settings.rate_limit_action == "reject":
                raise RateLimited(retry_after)
            status = "fraudulent"

        confirmation_token = new_token() if status == "pending" else None
        withdraw_token = new_token()
        share_code = new_share_code()
        row: dict[str, Any] = {
            "id": uuid.uuid4(),
            "petition_id": petition.id,
            "name": signature.name,
            "email": signature.email,
            "email_canonical": signature.email_canonical,
            "email_domain": signature.email_domain,
            "postcode": signature.postcode,
            "postcode_area": signature.postcode_area,
            "country": signature.country,
            "contact_consent": signature.contact_consent,
            "consent_wording_version": policy.settings.consent_wording_version,
            "consent_at": now,
            "source": signature.source,
            "ref": signature.ref,
            "ref_channel": signature.ref_channel,
            "share_code": share_code,
            "initial_status": status,
            "confirmation_token_hash": hash_token(confirmation_token)
            if confirmation_token
            else None,
            "confirmation_expires_at": (
                now + timedelta(hours=policy.settings.confirmation_ttl_hours)
                if confirmation_token
                else None
            ),
            "withdraw_token_hash": hash_token(withdraw_token),
            "ip": ip,
            "created_at": now,
        }
        if await repository.insert_signature(conn, row):
            await enqueue(
                conn,
                SCHEMA,
                signature_created(
                    row,
                    petition_slug=petition.slug,
                    petition_title=petition.title,
                    confirmation_token=confirmation_token,
                    withdraw_token=withdraw_token,
                ),
            )
            return SignOutcome(public_status, share_code)

        # Already signed: answer exactly as for a first signature (no leak to a third
        # party) and let the mailer tell the address owner instead.
        existing = await repository.signature_by_person(
            conn, petition.id, signature.email_canonical
        )
        assert existing is not None
        await enqueue(
            conn,
            SCHEMA,
            SignatureDuplicateAttempted(
                petition_id=petition.id,
                signature_id=existing["id"],
                petition_slug=petition.slug,
                petition_title=petition.title,
                email=signature.email,
                name=first_name(signature.name),
                share_code=existing["share_code"],
            ),
        )
        return SignOutcome(public_status, existing["share_code"])


async def confirmation_pending(pool: asyncpg.Pool, token: str, now: datetime) -> bool:
    async with pool.acquire() as conn:
        return await repository.pending_by_token(conn, hash_token(token), now)


async def confirm_signature(pool: asyncpg.Pool, token: str, now: datetime) -> Confirmation:
    async with pool.acquire() as conn, conn.transaction():
        row = await repository.confirm_by_token(conn, hash_token(token), now)
        if row is None:
            raise TokenNotValid()
        await enqueue(conn, SCHEMA, signature_confirmed(row["id"], row["petition_id"], now))
    return Confirmation(row["slug"], row["title"], row["share_code"])


async def withdrawable(pool: asyncpg.Pool, token: str) -> tuple[str, str]:
    async with pool.acquire() as conn:
        row = await repository.withdrawable_by_token(conn, hash_token(token))
    if row is None:
        raise TokenNotValid()
    return row["slug"], row["title"]


async def withdraw_signature(pool: asyncpg.Pool, token: str, now: datetime) -> tuple[str, str]:
    async with pool.acquire() as conn, conn.transaction():
        row = await repository.withdraw_by_token(conn, hash_token(token), now)
        if row is None:
            raise TokenNotValid()
        await enqueue(conn, SCHEMA, signature_withdrawn(row["id"], row["petition_id"], now))
    return row["slug"], row["title"]
