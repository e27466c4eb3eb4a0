"""Item 15: nothing in compose listens beyond this machine, and no secret has a default.
Issue 13: the offline compose check (deploy/compose/check_compose.py, run by validate.sh in
CI) passes on the file and catches each regression it is there for; the compose-spec schema
check runs with check-jsonschema's own copy of the schema."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
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
    for variable in ("POSTGRES_PASSWORD", "KAFKA_UI_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        uses = re.findall(r"\$\{" + variable + r"([^}]*)\}", text)
        assert uses, variable
        assert all(use.startswith(":?") for use in uses), (variable, uses)
    # Issue 13: the admin token is checked by the services that use it (signing refuses one
    # under 32 characters), not by compose, so `docker compose down` works without it; it
    # still has no default beyond "unset".
    uses = re.findall(r"\$\{ADMIN_TOKEN([^}]*)\}", text)
    assert uses and set(uses) == {":-"}, uses


def test_item15_kafka_ui_asks_for_a_login() -> None:
    environment = services()["kafka-ui"]["environment"]
    assert environment["AUTH_TYPE"] == "LOGIN_FORM"
    assert environment["SPRING_SECURITY_USER_PASSWORD"].startswith("${KAFKA_UI_PASSWORD:?")


def compose_check() -> ModuleType:
    path = COMPOSE.parent / "deploy/compose/check_compose.py"
    spec = importlib.util.spec_from_file_location("check_compose", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_compose_file_passes_the_schema_and_the_structural_checks() -> None:
    schema = subprocess.run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert schema.returncode == 0, schema.stdout + schema.stderr
    assert compose_check().check(COMPOSE) == []


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        # compose itself requiring the token again: `docker compose down` would need it
        (
            (
                "  LOG_LEVEL: ${LOG_LEVEL:-INFO}\n",
                "  LOG_LEVEL: ${LOG_LEVEL:-INFO}\n  ADMIN_TOKEN: ${ADMIN_TOKEN:?set it}\n",
            ),
            "compose requires ADMIN_TOKEN",
        ),
        (("image: postgres:15-alpine", "image: postgres:16-alpine"), "is not PostgreSQL 15"),
        # compose's server without one of the surge's WAL settings `make up`'s has
        (("- wal_init_zero=off\n", "- wal_init_zero=on\n"), "lacks -c wal_init_zero=off"),
        (("KAFKA_UI_PASSWORD:?set", "KAFKA_UI_PASSWORD:-set"), "without KAFKA_UI_PASSWORD"),
        (("      target: counter\n", "      target: counter-old\n"), "counter: build target"),
        (('    restart: "no"\n', "    restart: unless-stopped\n"), "seed: a one-shot"),
        (
            ("KAFKA_UI_HOST_PORT:-8080}", 'KAFKA_UI_HOST_PORT:-8080}:8080"\n      - "8081'),
            "published on all interfaces",
        ),
    ],
)
def test_the_structural_checks_catch_each_regression(
    tmp_path: Path, change: tuple[str, str], complaint: str
) -> None:
    old, new = change
    text = COMPOSE.read_text()
    assert old in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1))
    errors = compose_check().check(broken, root=COMPOSE.parent)
    assert any(complaint in error for error in errors), errors


def test_interpolation_follows_the_compose_rules() -> None:
    check = compose_check()
    env = {"SET": "value", "EMPTY": ""}
    assert check.interpolate_text("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d}", env) == (
        "value d  d"
    )
    assert check.interpolate_text("$$SET $SET ${SET:+other} ${EMPTY:+other}", env) == (
        "$SET value other "
    )
    with pytest.raises(check.MissingVariable):
        check.interpolate_text("${EMPTY:?needed}", env)
    assert check.interpolate_text("${EMPTY?needed}", env) == ""
