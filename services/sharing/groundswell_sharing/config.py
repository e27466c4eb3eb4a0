"""Sharing settings: `SHARING_*` for its own, unprefixed names for what the stack shares."""

from __future__ import annotations

from groundswell_contracts.topics import Consumer
from groundswell_runtime.settings import ServiceSettings
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict


class SharingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SHARING_", extra="ignore")

    port: int = 8004
    # Where share links send people: the signing service's petition pages.
    public_base_url: str = Field(
        "http://127.0.0.1:8001", validation_alias=AliasChoices("PUBLIC_BASE_URL")
    )
    # The organisers' token (Bearer) for the named share stats; shared with signing.
    # Required to serve (main refuses to start without it); optional so `migrate` runs bare.
    admin_token: SecretStr | None = Field(None, validation_alias=AliasChoices("ADMIN_TOKEN"))
    # Keys the daily visitor hash that collapses repeated clicks: it must be the same in
    # every instance and across restarts. Unset (or empty): derived from ADMIN_TOKEN
    # with HMAC under a fixed label (domain/visitors.py), so `make up` and compose need
    # nothing more; set it to rotate it independently of the admin token.
    visitor_salt: SecretStr | None = None
    # Counted clicks per network (IPv4 address, IPv6 /64) per rolling hour, across every
    # link, and per IPv6 /48 site. Over it the redirect still happens; the click does not
    # count.
    clicks_per_network_hour: int = Field(20, ge=1)
    clicks_per_site_hour: int = Field(200, ge=1)
    # A link sharing has not heard of yet (its SignatureCreated is still on the way) is
    # retried by the browser this many times (1, 1, 2, 2, 3, 3, 4, 4 s: 20 s in all with 8)
    # before it is answered as unknown.
    link_wait_attempts: int = Field(8, ge=0, le=30)
    # A referral whose signing page does not say which channel it came through is
    # credited to the channel of the latest click on the same link within this window.
    referral_click_window_hours: float = Field(24.0, gt=0)
    stats_max_age_seconds: int = Field(10, ge=0)
    # `groundswell-sharing retention` (adapters/retention.py): clicks are deleted after
    # this long, and clicks on a code that never became known after theirs.
    click_retention_days: int = Field(365, ge=1)
    pending_click_retention_days: int = Field(1, ge=1)
    retention_batch_size: int = Field(1_000, ge=1)
    # Overridable so a test or a replay can read under a group of its own; dead
    # letters always go to `sharing.dlq`.
    consumer_group: str = Consumer.SHARING.value
