"""Item 15: nothing in compose listens beyond this machine, and no secret has a default."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path(__file__).resolve().parents[3] / "docker-compose.yml"
LOOPBACK_BINDING = re.compile(r"^(127\.0\.0\.1|\$\{PUBLISH_ADDRESS:-127\.0\.0\.1\}):")


def services() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    found: dict[str, Any] = document["services"]
    return found


def test_item15_every_published_port_is_on_loopback() -> None:
    published = {
        (name, port) for name, service in services().items() for port in service.get("ports", [])
    }
    assert published  # the stack publishes ports at all
    wide = [(name, port) for name, port in published if not LOOPBACK_BINDING.match(str(port))]
    assert wide == []


def test_item15_passwords_come_from_the_environment_with_no_default() -> None:
    text = COMPOSE.read_text()
    for variable in ("POSTGRES_PASSWORD", "KAFKA_UI_PASSWORD", "ADMIN_TOKEN"):
        uses = re.findall(r"\$\{" + variable + r"([^}]*)\}", text)
        assert uses, variable
        assert all(use.startswith(":?") for use in uses), (variable, uses)


def test_item15_kafka_ui_asks_for_a_login() -> None:
    environment = services()["kafka-ui"]["environment"]
    assert environment["AUTH_TYPE"] == "LOGIN_FORM"
    assert environment["SPRING_SECURITY_USER_PASSWORD"].startswith("${KAFKA_UI_PASSWORD:?")
