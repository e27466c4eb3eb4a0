"""Mailer settings: `MAILER_*` for its own, unprefixed names for what the stack shares."""

from __future__ import annotations

import ipaddress

from groundswell_contracts.topics import Consumer
from groundswell_runtime.organisation import Organisation
from groundswell_runtime.settings import ServiceSettings
from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from groundswell_mailer.domain.messages import Campaign


class MailerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MAILER_", extra="ignore")

    port: int = 8003
    # Where the unsubscribe links in emails point (this service, as the recipient sees it).
    public_url: str = "http://127.0.0.1:8003"
    public_base_url: str = Field(
        "http://127.0.0.1:8001", validation_alias=AliasChoices("PUBLIC_BASE_URL")
    )
    share_base_url: str = Field(
        "http://127.0.0.1:8004", validation_alias=AliasChoices("SHARE_BASE_URL")
    )
    # The campaign's identity (`ORG_*`, groundswell_runtime.organisation): the From
    # header and every email's footer. MAILER_FROM, when set, overrides the From alone.
    organisation: Organisation = Field(default_factory=Organisation)
    mail_from: str = Field("", validation_alias=AliasChoices("MAILER_FROM"))
    # How long signing keeps a confirmation link valid, for the email to say so. Signing
    # enforces SIGNING_CONFIRMATION_TTL_HOURS; the mailer cannot ask it, so it reads the
    # same variable (the stack gives every service one environment), or its own.
    confirmation_ttl_hours: int = Field(
        72,
        ge=1,
        validation_alias=AliasChoices(
            "MAILER_CONFIRMATION_TTL_HOURS", "SIGNING_CONFIRMATION_TTL_HOURS"
        ),
    )

    smtp_host: str = Field("127.0.0.1", validation_alias=AliasChoices("SMTP_HOST"))
    smtp_port: int = Field(1025, validation_alias=AliasChoices("SMTP_PORT"))
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    # None: required (True) for any server not on this machine, so addresses and tokens
    # never cross a network in clear; opportunistic on loopback (the local sink). Set
    # false only for a trusted sink on a private network (compose's Mailpit).
    smtp_starttls: bool | None = None
    smtp_use_tls: bool = False
    smtp_timeout_seconds: float = Field(15.0, gt=0)

    # Temporary failures (4xx, timeouts, refused connections) are retried with
    # exponential backoff; after `max_attempts` the email is given up as failed.
    max_attempts: int = Field(6, ge=1)
    retry_base_seconds: float = Field(30.0, gt=0)
    retry_max_seconds: float = Field(3600.0, gt=0)
    # Senders, each with one persistent SMTP connection, pulling from a local queue.
    send_concurrency: int = Field(8, ge=1)
    # Emails claimed per statement; at most twice this many are held at once.
    claim_batch: int = Field(100, ge=1)
    # A claim's lease: renewed every `lease_renew_seconds` by the live process, so a
    # claim whose sender died is taken over this long after its last renewal.
    send_lease_seconds: float = Field(10.0, gt=0)
    lease_renew_seconds: float = Field(2.0, gt=0)
    # Open a fresh connection after this many messages (0: never); some relays cap it.
    smtp_messages_per_connection: int = Field(100, ge=0)
    poll_interval_seconds: float = Field(1.0, gt=0)
    # A thank-you held for a signature never confirmed is forgotten (address included).
    unconfirmed_retention_days: int = Field(30, ge=1)
    # `groundswell-mailer retention` (adapters/retention.py): finished emails are deleted
    # this long after they finished. Handled event ids are kept unless this is set (0:
    # keep; they are what stops a replay sending an email twice, see that module).
    email_retention_days: int = Field(90, ge=1)
    processed_events_retention_days: int = Field(0, ge=0)
    retention_batch_size: int = Field(1_000, ge=1)

    # Organisers' API (mailings): `Authorization: Bearer <ADMIN_TOKEN>`, the stack's one
    # admin token; unset, the admin routes answer 401 to everyone.
    admin_token: SecretStr | None = Field(None, validation_alias=AliasChoices("ADMIN_TOKEN"))
    # Mailings leave at most this many emails per second (all mailings together, all
    # mailer processes together): the campaign's relay and its reputation set it.
    mailing_rate_per_second: float = Field(10.0, gt=0)

    # Overridable so a test or a replay can read the topic under a group of its own;
    # dead letters always go to `mailer.dlq`.
    consumer_group: str = Consumer.MAILER.value

    @model_validator(mode="after")
    def _from_the_organisation(self) -> MailerSettings:
        if not self.mail_from.strip():
            self.mail_from = self.organisation.mail_from()
        return self

    def campaign(self) -> Campaign:
        return Campaign(self.organisation, self.confirmation_ttl_hours)

    @model_validator(mode="after")
    def _starttls_off_loopback(self) -> MailerSettings:
        if self.smtp_starttls is None and not self.smtp_use_tls and not _loopback(self.smtp_host):
            self.smtp_starttls = True
        return self

    @model_validator(mode="after")
    def _renewal_within_lease(self) -> MailerSettings:
        # Senders stop starting conversations half a lease after the last renewal
        # (domain.delivery.Lease): renewals must come well before that.
        if self.lease_renew_seconds * 2 >= self.send_lease_seconds:
            raise ValueError("lease_renew_seconds must be under half of send_lease_seconds")
        return self


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it resolves somewhere else
