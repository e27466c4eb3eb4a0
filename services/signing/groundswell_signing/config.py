from __future__ import annotations

import ipaddress

from groundswell_contracts.topics import Consumer
from groundswell_runtime.organisation import Organisation
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

    # Abuse controls, per client network (an IPv4 address or an IPv6 /64), counting every
    # attempt. e-petitions allows 1 per 60 s, which stops the second person of a home or
    # office a few seconds later; a burst of 3 lets a household sign, and the sustained
    # window (e-petitions' 5 per 300 s) does the work. Set 1/60 for e-petitions' policy.
    rate_burst_count: int = 3
    rate_burst_seconds: int = 60
    rate_sustained_count: int = 5
    rate_sustained_seconds: int = 300
    rate_global_count: int = 20
    rate_global_seconds: int = 300
    # A wider budget per IPv6 /48 (one site), across petitions.
    rate_site_count: int = 200
    rate_site_seconds: int = 300
    # "reject" answers 429; "flag" keeps the signature as fraudulent and uncounted.
    rate_limit_action: str = Field("reject", pattern="^(reject|flag)$")
    blocked_ip_ranges: list[str] = Field(default_factory=list)
    blocked_email_domains: list[str] = Field(default_factory=list)
    # Group commit and load shedding (see service_layer/group_commit.py).
    writer_tasks: int = Field(2, ge=1)
    max_batch: int = Field(500, ge=1)
    max_queue: int = Field(2_000, ge=1)
    max_queue_age_ms: int = Field(250, ge=1)
    # Signing requests one process holds at once (entrypoints/http/shedding.py). By
    # Little's law, at the ~1,000/s one process serves here 128 is ~130 ms each: it rides
    # out more of the short stalls of a full box, which made 64 refuse 3-7% of a
    # 1,000/s surge. More held used to slow refusals at overload (a big batch answered
    # in one turn of the loop held the door's reads back); answered a chunk per turn
    # (group_commit.TURN_EVERY), the 503s' p99 stayed within 20 ms of 64's. Measured in
    # docs/performance.md (2026-12-03, 22:10-23:45): 64, 128 and 256. The bench's closed
    # loop (64 connections) is never refused by it.
    max_in_flight: int = Field(128, ge=1)
    # Refuse new signatures while the event loop keeps running later than this: requests
    # wait for the process before any rule sees them (groundswell_runtime/loop_lag.py).
    # 250: at 100 the chaos check saw a signature refused on a busy machine, no surge.
    max_loop_lag_ms: int = Field(250, ge=1)
    # Let in a shrinking share of new signatures while the outbox's oldest unpublished
    # row is older than this (service_layer/backlog.py); 0 turns it off.
    max_outbox_age_ms: int = Field(2_000, ge=0)
    # ... counting, in that age, how long the signatures published wait for these
    # consumer groups after the relay (their lag, read by the relay): a signature is
    # fresh once counted, not once published. The mailer is not among them: a thank-you
    # may come minutes later, a count may not. Empty: the outbox alone.
    admission_consumers: list[str] = Field(default_factory=lambda: [Consumer.COUNTER.value])
    # How long the oldest waiting signature lets its batch gather before it is written.
    # Measured (docs/performance.md): 5 against none, alone at 1,000/s, PostgreSQL's CPU
    # a signature 0.67x and signing's 0.84x for ~4 ms more at the median; 12 against 5,
    # alone at 1,000/s 0.76x and 0.87x for ~5 ms more at the median and the same p99,
    # end to end at 500/s the stack's CPU 0.88x and p99 lower; 20 and 30 saved no
    # more. 0 turns it off.
    gather_ms: int = Field(12, ge=0)
    # ... unless this many have joined it: then it goes at once. Measured
    # (docs/performance.md, 2026-12-04): signing alone, closed loop of 64 connections,
    # ~2,300/s without it (every batch waited the whole 12 ms), 3,100-5,200/s with 8-24;
    # 8 did no better there than 16 beyond the noise, and cost signing and PostgreSQL
    # 0.03-0.05 ms a signature more end to end at 2,000/s (three pairs); at 1,000/s
    # (batches of ~12) nothing changes.
    gather_enough: int = Field(16, ge=1)
    # uvicorn worker processes; each has its own writer and batches.
    workers: int = Field(1, ge=1)

    # Failed admin logins per client network (within the window) before it must wait
    # the base delay, doubled by each further failure (see entrypoints/http/admin_auth.py).
    admin_auth_free_failures: int = Field(5, ge=1)
    admin_auth_window_seconds: int = Field(900, ge=1)
    admin_auth_base_delay_seconds: float = Field(2.0, gt=0)

    confirmation_ttl_hours: int = 72
    # Retention (`groundswell-signing retention`, service_layer/retention.py): signatures
    # are anonymised this long after their petition closes, unconfirmed ones deleted
    # after `unconfirmed_retention_days`, finished privacy requests deleted after theirs.
    retention_after_close_days: int = Field(183, ge=1)
    # The campaign's policy for an erased signature: it keeps counting, anonymised (True),
    # or it is withdrawn from the count (False). Either way no personal data is left.
    erasure_keeps_count: bool = True
    unconfirmed_retention_days: int = Field(30, ge=1)
    privacy_request_retention_days: int = Field(30, ge=1)
    retention_batch_size: int = Field(1_000, ge=1)
    # The campaign's identity on every page (`ORG_*`, groundswell_runtime.organisation).
    organisation: Organisation = Field(default_factory=Organisation)
    consent_wording_version: str = "2026-11-contact-v1"
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = 16_384

    @field_validator("blocked_ip_ranges")
    @classmethod
    def _valid_networks(cls, ranges: list[str]) -> list[str]:
        for cidr in ranges:
            ipaddress.ip_network(cidr, strict=False)
        return ranges
