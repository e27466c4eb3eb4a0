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
    # Keys the daily visitor hash that collapses repeated clicks. Unset: a random one per
    # process, so repeat clicks are collapsed only within one instance's lifetime.
    visitor_salt: SecretStr | None = None
    # A referral whose signing page does not say which channel it came through is
    # credited to the channel of the latest click on the same link within this window.
    referral_click_window_hours: float = Field(24.0, gt=0)
    stats_max_age_seconds: int = Field(10, ge=0)
    # Overridable so a test or a replay can read under a group of its own; dead
    # letters always go to `sharing.dlq`.
    consumer_group: str = Consumer.SHARING.value
