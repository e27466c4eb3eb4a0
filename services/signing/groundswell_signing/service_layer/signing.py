"""Use cases for signers: sign, confirm, withdraw."""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg
from groundswell_runtime.correlation import current_correlation_id
from groundswell_runtime.outbox import enqueue

from groundswell_signing.adapters import repository
from groundswell_signing.adapters.repository import SCHEMA
from groundswell_signing.config import SigningSettings
from groundswell_signing.domain.events import signature_confirmed, signature_withdrawn
from groundswell_signing.domain.petitions import PetitionClosedError
from groundswell_signing.domain.rate_limits import Window, hits_for
from groundswell_signing.domain.signatures import SignatureError, ValidSignature
from groundswell_signing.domain.tokens import hash_token, new_signature_secrets
from groundswell_signing.service_layer.group_commit import Attempt, SignatureWriter
from groundswell_signing.service_layer.petitions import PetitionCache


class RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after}s")
        self.retry_after = retry_after


class Blocked(Exception):
    """The request comes from a blocked network."""


class TokenNotValid(LookupError):
    """Unknown, used or expired token."""


SignStatus = Literal["pending_confirmation", "signed"]


@dataclass(frozen=True)
class SignOutcome:
    """What the signer is told: the same for a first signature and a duplicate."""

    status: SignStatus


@dataclass(frozen=True)
class Confirmation:
    slug: str
    title: str
    share_code: str


class AbusePolicy:
    """Who may sign: blocked networks and email domains, and the rate-limit windows."""

    def __init__(self, settings: SigningSettings, disposable_domains: frozenset[str]) -> None:
        self.settings = settings
        self._blocked_domains = disposable_domains | {
            d.lower() for d in settings.blocked_email_domains
        }
        self._blocked_networks = [
            ipaddress.ip_network(cidr, strict=False) for cidr in settings.blocked_ip_ranges
        ]
        # Per domain, once: a surge's addresses are at a few providers, and the walk up
        # the domain's parents was ~1 us a request. The lists are fixed at start.
        self._blocked_domain = functools.lru_cache(maxsize=4096)(self._is_blocked_domain)
        s = settings
        self.windows = (
            Window("burst", s.rate_burst_count, s.rate_burst_seconds, per_petition=True),
            Window(
                "sustained", s.rate_sustained_count, s.rate_sustained_seconds, per_petition=True
            ),
            Window("global", s.rate_global_count, s.rate_global_seconds, per_petition=False),
            Window(
                "site",
                s.rate_site_count,
                s.rate_site_seconds,
                per_petition=False,
                site_wide=True,
            ),
        )

    def check_ip(self, ip: str | None) -> None:
        if ip is None or not self._blocked_networks:
            return
        address = ipaddress.ip_address(ip)
        if any(address in network for network in self._blocked_networks):
            raise Blocked()

    def check_email_domain(self, domain: str) -> None:
        if self._blocked_domain(domain):
            raise SignatureError({"email": "Use a permanent email address, not a disposable one"})

    def _is_blocked_domain(self, domain: str) -> bool:
        # The domain and each parent (mail.spam.example -> spam.example -> example).
        labels = domain.split(".")
        return any(".".join(labels[i:]) in self._blocked_domains for i in range(len(labels)))


async def sign_petition(
    writer: SignatureWriter,
    petitions: PetitionCache,
    policy: AbusePolicy,
    slug: str,
    signature: ValidSignature,
    ip: str | None,
    now: datetime,
) -> SignOutcome:
    policy.check_ip(ip)
    policy.check_email_domain(signature.email_domain)
    petition = await petitions.get(slug)
    if not petition.accepting_signatures(now):
        raise PetitionClosedError(slug)
    settings = policy.settings
    drawn = new_signature_secrets()
    confirmation_token = drawn.confirmation_token if petition.requires_confirmation else None
    withdraw_token = drawn.withdraw_token
    row: dict[str, Any] = {
        "id": drawn.id,
        "petition_id": petition.id,
        "name": signature.name,
        "email": signature.email,
        "email_canonical": signature.email_canonical,
        "email_domain": signature.email_domain,
        "postcode": signature.postcode,
        "postcode_area": signature.postcode_area,
        "country": signature.country,
        "contact_consent": signature.contact_consent,
        "consent_wording_version": settings.consent_wording_version,
        "consent_at": now,
        "source": signature.source,
        "ref": signature.ref,
        "ref_channel": signature.ref_channel,
        "share_code": drawn.share_code,
        "initial_status": "pending" if confirmation_token else "signed",
        "confirmation_token_hash": hash_token(confirmation_token) if confirmation_token else None,
        "confirmation_expires_at": (
            now + timedelta(hours=settings.confirmation_ttl_hours) if confirmation_token else None
        ),
        "withdraw_token_hash": hash_token(withdraw_token),
        "ip": ip,
        "created_at": now,
        # This signer's own key for their sealed contact details (crypto-shredding).
        "data_key": drawn.data_key,
        "leaderboard_consent": signature.leaderboard_consent,
    }
    result = await writer.submit(
        Attempt(
            row=row,
            petition=petition,
            hits=hits_for(policy.windows, petition.id, ip, now.timestamp()),
            confirmation_token=confirmation_token,
            withdraw_token=withdraw_token,
            correlation_id=current_correlation_id(),
            now=now,
        )
    )
    if result.verdict == "closed":
        raise PetitionClosedError(slug)
    if result.verdict == "rate_limited":
        assert result.retry_after is not None
        raise RateLimited(result.retry_after)
    # A duplicate is answered exactly as a first signature: the mailer tells the owner.
    return SignOutcome("pending_confirmation" if petition.requires_confirmation else "signed")


async def confirmation_pending(pool: asyncpg.Pool, token: str, now: datetime) -> bool:
    async with pool.acquire() as conn:
        return await repository.pending_by_token(conn, hash_token(token), now)


async def confirm_signature(pool: asyncpg.Pool, token: str, now: datetime) -> Confirmation:
    async with pool.acquire() as conn, conn.transaction():
        row = await repository.confirm_by_token(conn, hash_token(token), now)
        if row is None:
            if await repository.pending_by_token(conn, hash_token(token), now):
                raise PetitionClosedError()  # a live token whose petition has closed
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
