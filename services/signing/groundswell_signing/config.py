from __future__ import annotations

import ipaddress

from groundswell_runtime.settings import ServiceSettings
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict


class SigningSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SIGNING_", extra="ignore")

    port: int = 8001
    admin_token: SecretStr = Field(validation_alias=AliasChoices("ADMIN_TOKEN"))
    public_base_url: str = Field(
        "http://127.0.0.1:8001", validation_alias=AliasChoices("PUBLIC_BASE_URL")
    )
    share_base_url: str = Field(
        "http://127.0.0.1:8004", validation_alias=AliasChoices("SHARE_BASE_URL")
    )
    # Where browsers fetch live counts from (the counter service).
    counter_public_url: str = Field(
        "http://127.0.0.1:8002", validation_alias=AliasChoices("COUNTER_PUBLIC_URL")
    )

    # Abuse controls. Defaults follow e-petitions: 1 per 60 s burst, 5 per 300 s sustained.
    rate_burst_count: int = 1
    rate_burst_seconds: int = 60
    rate_sustained_count: int = 5
    rate_sustained_seconds: int = 300
    rate_global_count: int = 20
    rate_global_seconds: int = 300
    # "reject" answers 429; "flag" keeps the signature as fraudulent and uncounted.
    rate_limit_action: str = Field("reject", pattern="^(reject|flag)$")
    blocked_ip_ranges: list[str] = Field(default_factory=list)
    blocked_email_domains: list[str] = Field(default_factory=list)
    # Only behind a trusted proxy: otherwise anyone could choose their own IP.
    trust_forwarded_for: bool = False

    confirmation_ttl_hours: int = 72
    consent_wording_version: str = "2026-11-contact-v1"
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = 16_384

    @field_validator("blocked_ip_ranges")
    @classmethod
    def _valid_networks(cls, ranges: list[str]) -> list[str]:
        for cidr in ranges:
            ipaddress.ip_network(cidr, strict=False)
        return ranges
