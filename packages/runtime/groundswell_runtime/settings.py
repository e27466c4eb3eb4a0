"""Settings every service shares. Each service subclasses with its own env prefix.

The shared connection settings keep their unprefixed names (`DATABASE_URL`,
`KAFKA_BOOTSTRAP_SERVERS`) because one stack points every service at the same servers.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from groundswell_runtime.client_address import IPNetwork, parse_networks


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    host: str = "127.0.0.1"
    log_level: str = Field("INFO", validation_alias=AliasChoices("LOG_LEVEL"))
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/groundswell",
        validation_alias=AliasChoices("DATABASE_URL"),
    )
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS")
    )
    kafka_topic_partitions: int = Field(
        6, ge=1, validation_alias=AliasChoices("KAFKA_TOPIC_PARTITIONS")
    )
    kafka_replication_factor: int = Field(
        1, ge=1, validation_alias=AliasChoices("KAFKA_REPLICATION_FACTOR")
    )
    # The longest a service that yields to surges (the mailer, sharing) holds back new
    # work in one go (groundswell_runtime.surge_yield); 0: never yields. Below aiokafka's
    # max_poll_interval_ms (300 s), or the consumer would be thrown out of its group.
    surge_yield_max_seconds: float = Field(60.0, ge=0, le=240)
    # Proxies whose X-Forwarded-For hops are believed (`127.0.0.1,10.0.0.0/8`); empty means
    # the socket peer is the client. See groundswell_runtime.client_address.
    trusted_proxies: Annotated[tuple[IPNetwork, ...], NoDecode] = Field(
        (), validation_alias=AliasChoices("TRUSTED_PROXIES")
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_networks(v for v in value.split(",") if v.strip())
        return value
