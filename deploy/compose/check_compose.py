"""Structural checks on docker-compose.yml that a JSON schema cannot express, offline.

validate.sh first checks the file against the Compose Specification's JSON schema with
check-jsonschema (`--builtin-schema vendor.compose-spec`); this script then resolves it as
`docker compose config` would (variables interpolated, YAML merge keys applied) and checks
what the stack promises:

- every service is there; infrastructure and app services have healthchecks, app services
  probe /readyz, wait for a healthy broker and database, restart, listen on 0.0.0.0 at their
  port, and are built from deploy/docker/Dockerfile, whose target stage runs as non-root;
- secrets: POSTGRES_PASSWORD, KAFKA_UI_PASSWORD and GRAFANA_ADMIN_PASSWORD are required
  (`${NAME:?...}`, never defaulted); ADMIN_TOKEN is not required by compose, so `docker compose
  ps/logs/down` work without it, and reaches only the services that use it, which check it;
- the one-shot `seed` service waits for a healthy signing and does not restart;
- one PostgreSQL major version: compose's image and the stack's test container are 15, the
  version `make up` and the tests run; compose's server runs with the settings `make up`
  gives its own (`groundswell_stack.postgres.SERVER_SETTINGS`);
- every published port is on 127.0.0.1 by default; kafka-ui and Grafana ask for a login;
  the monitoring files the stack mounts exist.

Interpolation follows the Compose Specification (`$$`, `$NAME`, `${NAME}`, `${NAME:-default}`,
`${NAME-default}`, `${NAME:?error}`, `${NAME?error}`, `${NAME:+other}`, `${NAME+other}`); no
maintained Python library implements it, and docker-compose 1.x, which did, is end of life.

    .venv/bin/python deploy/compose/check_compose.py [docker-compose.yml]
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from dockerfile_parse import DockerfileParser
from groundswell_stack.postgres import SERVER_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = "deploy/docker/Dockerfile"
POSTGRES_MAJOR = "15"
REQUIRED_SECRETS = ("POSTGRES_PASSWORD", "KAFKA_UI_PASSWORD", "GRAFANA_ADMIN_PASSWORD")
DUMMIES = {name: f"validate-only-{name.lower()}" for name in REQUIRED_SECRETS} | {
    "ADMIN_TOKEN": "validate-only-admin-token-0123456789abcdef"
}
# Who may see the admin token, and who must (they refuse to start, or have no admin, without).
ADMIN_TOKEN_ALLOWED = {"signing", "signing-relay", "mailer", "sharing", "reconcile", "seed"}
ADMIN_TOKEN_NEEDED = {"signing", "mailer", "sharing", "reconcile", "seed"}
INFRA = {"kafka", "postgres", "mailpit", "kafka-ui"}
MONITORING = {"prometheus", "grafana", "reconcile", "reconcile-exporter"}
APPS = {"signing": 8001, "counter": 8002, "mailer": 8003, "sharing": 8004}
MONITORING_FILES = (
    "deploy/compose/prometheus/prometheus.yml",
    "deploy/compose/prometheus/rules/groundswell.yml",
    "deploy/compose/grafana/provisioning/datasources/prometheus.yml",
    "deploy/compose/grafana/provisioning/dashboards/groundswell.yml",
    "deploy/compose/grafana/dashboards/groundswell.json",
    "deploy/compose/reconcile/run.sh",
)

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<invalid>))"
)


class MissingVariable(Exception):
    """A `${NAME:?error}` (or `?`) whose variable is unset (or empty)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"required variable {name} is missing a value: {message}")
        self.name = name


def interpolate_text(text: str, env: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["plain"]:
            return env.get(match["plain"], "")
        name = match["name"]
        if name is None:
            raise ValueError(f"invalid interpolation in {text!r}")
        op, arg = match["op"], match["arg"] or ""
        value = env.get(name)
        # With a colon, empty counts as unset; without, only unset does.
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op is None:
            return value or ""
        if op.endswith("-"):
            return interpolate_text(arg, env) if unset else str(value)
        if op.endswith("?"):
            if unset:
                raise MissingVariable(name, arg)
            return str(value)
        return "" if unset else interpolate_text(arg, env)  # "+": the other value if set

    return _VARIABLE.sub(one, text)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate_text(node, env)
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    return node


def resolve(compose_file: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """The file as compose sees it: merge keys applied (PyYAML), values interpolated."""
    document = yaml.safe_load(compose_file.read_text())
    resolved: dict[str, Any] = interpolate(document, env)
    return resolved


def stage_users(dockerfile: Path) -> dict[str, str | None]:
    """Each named stage's effective USER (inherited from the stage it is built FROM)."""
    users: dict[str, str | None] = {}
    stage: str | None = None
    for instruction in DockerfileParser(str(dockerfile), cache_content=True).structure:
        word, value = instruction["instruction"], instruction["value"].split()
        if word == "FROM":
            parent = value[0].lower()
            stage = value[2].lower() if len(value) >= 3 and value[1].upper() == "AS" else None
            if stage is not None:
                users[stage] = users.get(parent)
        elif word == "USER" and stage is not None and value:
            users[stage] = value[0]
    return users


def _environment(service: Mapping[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # ["NAME=value", ...]
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return dict(env)


def _depends(service: Mapping[str, Any]) -> dict[str, str | None]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition") for name, spec in deps.items()}


def check_services(services: Mapping[str, Any], root: Path) -> Iterator[str]:
    missing = sorted((INFRA | MONITORING | set(APPS) | {"seed"}) - set(services))
    if missing:
        yield "missing services: " + ", ".join(missing)
    for name in ("kafka", "postgres", "mailpit"):
        if name in services and not (services[name].get("healthcheck") or {}).get("test"):
            yield f"{name}: no healthcheck"
    for name, port in APPS.items():
        if name in services:
            yield from _check_app(name, port, services[name])
    users: dict[str, str | None] = {}
    if (root / DOCKERFILE).is_file():
        users = stage_users(root / DOCKERFILE)
    else:
        yield f"{DOCKERFILE} does not exist"
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        if isinstance(build, str) or build.get("dockerfile") != DOCKERFILE:
            yield f"{name}: not built from {DOCKERFILE} (one file, one shared base stage)"
            continue
        target = build.get("target")
        if target not in users:
            yield f"{name}: build target {target!r} is not a stage of {DOCKERFILE}"
            continue
        user = users[target]
        if user is None or user.split(":")[0] in ("root", "0"):
            yield f"{name}: stage {target} of {DOCKERFILE} runs as root (USER {user})"


def _check_app(name: str, port: int, service: Mapping[str, Any]) -> Iterator[str]:
    health = service.get("healthcheck") or {}
    if not health.get("test") or health.get("disable"):
        yield f"{name}: no healthcheck"
    elif "/readyz" not in " ".join(map(str, health["test"])):
        yield f"{name}: healthcheck does not probe /readyz"
    deps = _depends(service)
    for dep in ["kafka", "postgres"] + (["mailpit"] if name == "mailer" else []):
        if deps.get(dep) != "service_healthy":
            yield f"{name}: depends_on {dep} is {deps.get(dep)!r}, want service_healthy"
    if not service.get("restart"):
        yield f"{name}: no restart policy"
    env = _environment(service)
    if env.get(f"{name.upper()}_HOST") != "0.0.0.0":
        yield f"{name}: {name.upper()}_HOST is not 0.0.0.0"
    if str(env.get(f"{name.upper()}_PORT")) != str(port):
        yield f"{name}: {name.upper()}_PORT is not {port}"
    if not service.get("build"):
        yield f"{name}: no build section"


def check_seed(services: Mapping[str, Any]) -> Iterator[str]:
    seed = services.get("seed")
    if seed is None:
        return
    if _depends(seed).get("signing") != "service_healthy":
        yield "seed: must wait for a healthy signing (depends_on condition service_healthy)"
    if str(seed.get("restart", "no")) != "no":
        yield f"seed: a one-shot must not restart (restart: {seed.get('restart')})"
    if "seed" not in " ".join(map(str, seed.get("command") or [])):
        yield "seed: its command does not run `groundswell-stack seed`"


def check_admin_token(compose_file: Path, env: Mapping[str, str]) -> Iterator[str]:
    token = env["ADMIN_TOKEN"]
    services = resolve(compose_file, env)["services"]
    given = {name for name, svc in services.items() if "ADMIN_TOKEN" in _environment(svc)}
    if given - ADMIN_TOKEN_ALLOWED:
        yield "ADMIN_TOKEN reaches services that do not use it: " + ", ".join(
            sorted(given - ADMIN_TOKEN_ALLOWED)
        )
    for name in sorted(ADMIN_TOKEN_NEEDED & set(services) - given):
        yield f"{name}: needs ADMIN_TOKEN in its environment"
    for name in sorted(given):
        if _environment(services[name])["ADMIN_TOKEN"] != token:
            yield f"{name}: ADMIN_TOKEN is not taken from the environment"
    try:
        resolve(compose_file, {k: v for k, v in env.items() if k != "ADMIN_TOKEN"})
    except MissingVariable as missing:
        yield f"compose requires {missing.name}; `docker compose down` would fail without it"


def check_required_secrets(compose_file: Path, env: Mapping[str, str]) -> Iterator[str]:
    for name in REQUIRED_SECRETS:
        try:
            resolve(compose_file, {k: v for k, v in env.items() if k != name})
        except MissingVariable as missing:
            if missing.name != name:
                yield f"without {name}, compose complains about {missing.name} instead"
        else:
            yield f"compose resolves without {name}; it must use ${{{name}:?...}}"


def check_postgres_major(services: Mapping[str, Any], root: Path) -> Iterator[str]:
    image = str((services.get("postgres") or {}).get("image", ""))
    if not re.fullmatch(rf"postgres:{POSTGRES_MAJOR}(\.\d+)?(-[\w.]+)?", image):
        yield f"postgres: image {image!r} is not PostgreSQL {POSTGRES_MAJOR}"
    infra = root / "deploy/stack/groundswell_stack/infra.py"
    for other in re.findall(r"postgres:(\d+)", infra.read_text()):
        if other != POSTGRES_MAJOR:
            yield f"{infra.relative_to(root)} uses postgres:{other}, compose {POSTGRES_MAJOR}"


def check_postgres_settings(services: Mapping[str, Any]) -> Iterator[str]:
    command = (services.get("postgres") or {}).get("command") or []
    if isinstance(command, str):
        command = command.split()
    given = {
        name: value
        for flag, setting in itertools.pairwise(command)
        if flag == "-c"
        for name, _, value in [setting.partition("=")]
    }
    for name, value in SERVER_SETTINGS.items():
        if given.get(name) != value:
            yield f"postgres: command lacks -c {name}={value} (the stack's SERVER_SETTINGS)"


def check_exposure(services: Mapping[str, Any], root: Path) -> Iterator[str]:
    # Published ports: on 127.0.0.1 unless the operator says otherwise (PUBLISH_ADDRESS).
    for name, service in services.items():
        for port in service.get("ports") or []:
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
            else:  # [[HOST_IP:]HOST_PORT:]CONTAINER_PORT
                parts = str(port).split(":")
                host_ip = parts[0] if len(parts) == 3 else None
            if host_ip != "127.0.0.1":
                yield f"{name}: port {port} is published on {host_ip or 'all interfaces'}"
    ui = _environment(services.get("kafka-ui") or {})
    if ui.get("AUTH_TYPE") != "LOGIN_FORM" or not ui.get("SPRING_SECURITY_USER_PASSWORD"):
        yield "kafka-ui: no login (AUTH_TYPE LOGIN_FORM with a password)"
    grafana = _environment(services.get("grafana") or {})
    anonymous = str(grafana.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower()
    if not grafana.get("GF_SECURITY_ADMIN_PASSWORD") or anonymous != "false":
        yield "grafana: no admin password, or anonymous access on"
    for name in sorted(MONITORING):
        for volume in (services.get(name) or {}).get("volumes") or []:
            source = volume.get("source") if isinstance(volume, dict) else volume.split(":")[0]
            if source and source.startswith(("/", ".")) and not (root / source).exists():
                yield f"{name}: mounts {source}, which does not exist"
    for path in MONITORING_FILES:
        if not (root / path).is_file():
            yield f"monitoring: {path} is missing"


def check(compose_file: Path, root: Path = ROOT) -> list[str]:
    # Only the dummies: a developer's exported variables can neither supply nor hide anything.
    env = dict(DUMMIES)
    try:
        services = resolve(compose_file, env)["services"]
    except (MissingVariable, ValueError) as exc:
        return [str(exc)]
    errors = [
        *check_services(services, root),
        *check_seed(services),
        *check_admin_token(compose_file, env),
        *check_required_secrets(compose_file, env),
        *check_postgres_major(services, root),
        *check_postgres_settings(services),
        *check_exposure(services, root),
    ]
    return errors


def main(argv: list[str]) -> int:
    compose_file = Path(argv[0]) if argv else ROOT / "docker-compose.yml"
    errors = check(compose_file)
    for error in errors:
        print(f"compose check: FAIL: {error}", file=sys.stderr)
    if errors:
        return 1
    print(
        f"compose check: OK ({compose_file.name}: services, healthchecks, depends_on, one "
        f"Dockerfile with non-root targets, secrets, ADMIN_TOKEN only where used, seed, "
        f"PostgreSQL {POSTGRES_MAJOR} and its settings, ports on 127.0.0.1, logins, "
        f"monitoring files)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
