#!/usr/bin/env bash
# Validate docker-compose.yml offline (no Docker engine needed).
#
#   deploy/compose/validate.sh            # from anywhere inside the repo
#
# 1. `docker-compose config -q` (docker-compose 1.29.2 from a throwaway venv) parses,
#    interpolates and schema-checks the file, with dummy secrets.
# 2. The same command without each required secret (ADMIN_TOKEN, POSTGRES_PASSWORD,
#    KAFKA_UI_PASSWORD) must fail: secrets are required, never defaulted.
# 3. Structural checks on the resolved config (PyYAML from the same venv): the eight services,
#    healthchecks, depends_on conditions, restart policies, non-root Dockerfiles, every
#    published port bound to 127.0.0.1 by default, and a login on kafka-ui.
#
# Env: COMPOSE_VENV (default <repo>/.run/compose-venv, reused), PYTHON (default python3).
# Exits non-zero on any failure; prints one OK line on success.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

COMPOSE_FILE="docker-compose.yml"
VENV="${COMPOSE_VENV:-$ROOT/.run/compose-venv}"
PYTHON="${PYTHON:-python3}"
DUMMY_TOKEN="validate-only-dummy-admin-token-0123456789"
REQUIRED=(ADMIN_TOKEN POSTGRES_PASSWORD KAFKA_UI_PASSWORD)
# Dummy values for every required secret, as `env` arguments.
DUMMIES=(ADMIN_TOKEN="$DUMMY_TOKEN" POSTGRES_PASSWORD=validate-only-pg KAFKA_UI_PASSWORD=validate-only-ui)

# docker-compose 1.29.2's own pins clash with Python 3.11-era packages, so it is installed
# without dependencies and the working set is listed explicitly.
REQS=("PyYAML>=6" "docker>=5,<7" "dockerpty" "docopt" "jsonschema<4" "texttable"
      "websocket-client<1" "python-dotenv" "requests" "distro")
STAMP_WANT="docker-compose==1.29.2 ${REQS[*]}"

fail() { echo "compose validate: FAIL: $*" >&2; exit 1; }

[[ -f "$COMPOSE_FILE" ]] || fail "$ROOT/$COMPOSE_FILE not found"

# --- throwaway venv (reused while its stamp matches) -----------------------------------
if [[ ! -x "$VENV/bin/docker-compose" || "$(cat "$VENV/.validate-stamp" 2>/dev/null)" != "$STAMP_WANT" ]]; then
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    log="$(mktemp "${TMPDIR:-/tmp}/compose-validate-pip.XXXXXX")"
    if ! { "$PYTHON" -m venv "$VENV" \
           && "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps docker-compose==1.29.2 \
           && "$VENV/bin/pip" install -q --disable-pip-version-check "${REQS[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -rf "$VENV"
        fail "could not set up the docker-compose venv at $VENV"
    fi
    rm -f "$log"
    printf '%s' "$STAMP_WANT" >"$VENV/.validate-stamp"
fi
DC="$VENV/bin/docker-compose"

# --- 1. docker-compose schema / interpolation check -----------------------------------
# An empty --env-file so a developer's .env cannot supply (or hide) anything.
empty_env="$(mktemp "${TMPDIR:-/tmp}/compose-validate-env.XXXXXX")"
trap 'rm -f "$empty_env"' EXIT
env -u PUBLISH_ADDRESS "${DUMMIES[@]}" "$DC" --env-file "$empty_env" -f "$COMPOSE_FILE" config -q \
    || fail "docker-compose config rejected $COMPOSE_FILE"

# --- 2. every secret must be required ---------------------------------------------------
for name in "${REQUIRED[@]}"; do
    if env "${DUMMIES[@]}" env -u "$name" "$DC" --env-file "$empty_env" -f "$COMPOSE_FILE" \
        config -q >/dev/null 2>&1; then
        fail "compose config succeeded without $name; it must use \${$name:?...}"
    fi
done

# --- 3. structural checks on the resolved config --------------------------------------
env -u PUBLISH_ADDRESS "${DUMMIES[@]}" "$DC" --env-file "$empty_env" -f "$COMPOSE_FILE" config \
    | "$VENV/bin/python" -c '
import os, sys
import yaml

cfg = yaml.safe_load(sys.stdin)
services = cfg.get("services") or {}
errors = []

infra = {"kafka", "postgres", "mailpit", "kafka-ui"}
apps = {"signing": 8001, "counter": 8002, "mailer": 8003, "sharing": 8004}
missing = sorted((infra | set(apps)) - set(services))
if missing:
    errors.append("missing services: " + ", ".join(missing))

for name in ("kafka", "postgres", "mailpit"):
    if name in services and not (services[name].get("healthcheck") or {}).get("test"):
        errors.append(f"{name}: no healthcheck")

def final_stage_user(path):
    """The last USER of the last stage, or None."""
    user = None
    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            parts = raw.strip().split(None, 1)
            if not parts or parts[0].startswith("#"):
                continue
            word = parts[0].upper()
            if word == "FROM":
                user = None
            elif word == "USER" and len(parts) == 2:
                user = parts[1].strip()
    return user

for name, port in apps.items():
    svc = services.get(name)
    if svc is None:
        continue
    hc = svc.get("healthcheck") or {}
    if not hc.get("test") or hc.get("disable"):
        errors.append(f"{name}: no healthcheck")
    elif "/readyz" not in " ".join(map(str, hc["test"])):
        errors.append(f"{name}: healthcheck does not probe /readyz")
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):
        deps = {d: {"condition": "service_started"} for d in deps}
    want = ["kafka", "postgres"] + (["mailpit"] if name == "mailer" else [])
    for dep in want:
        cond = (deps.get(dep) or {}).get("condition")
        if cond != "service_healthy":
            errors.append(f"{name}: depends_on {dep} condition is {cond!r}, want service_healthy")
    if not svc.get("restart"):
        errors.append(f"{name}: no restart policy")
    env = svc.get("environment") or {}
    if env.get(f"{name.upper()}_HOST") != "0.0.0.0":
        errors.append(f"{name}: {name.upper()}_HOST is not 0.0.0.0")
    if str(env.get(f"{name.upper()}_PORT")) != str(port):
        errors.append(f"{name}: {name.upper()}_PORT is not {port}")
    build = svc.get("build")
    if not build:
        errors.append(f"{name}: no build section")
        continue
    if isinstance(build, str):
        build = {"context": build}
    context = build.get("context", ".")
    dockerfile = os.path.join(context, build.get("dockerfile", "Dockerfile"))
    if not os.path.isfile(dockerfile):
        errors.append(f"{name}: Dockerfile {dockerfile} does not exist")
        continue
    user = final_stage_user(dockerfile)
    if user is None:
        errors.append(f"{name}: {dockerfile} has no USER in its final stage")
    elif user.split(":")[0] in ("root", "0"):
        errors.append(f"{name}: {dockerfile} runs as root (USER {user})")

# Published ports: on 127.0.0.1 unless the operator says otherwise (PUBLISH_ADDRESS).
for name, svc in services.items():
    for port in svc.get("ports") or []:
        host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
        if host_ip != "127.0.0.1":
            where = host_ip or "all interfaces"
            errors.append(f"{name}: port {port} is published on {where}")

ui_env = (services.get("kafka-ui") or {}).get("environment") or {}
if ui_env.get("AUTH_TYPE") != "LOGIN_FORM" or not ui_env.get("SPRING_SECURITY_USER_PASSWORD"):
    errors.append("kafka-ui: no login (AUTH_TYPE LOGIN_FORM with a password)")

if errors:
    for e in errors:
        print("compose validate: FAIL: " + e, file=sys.stderr)
    sys.exit(1)
' || fail "structural checks failed"

echo "compose validate: OK ($COMPOSE_FILE: 8 services, healthchecks, depends_on, non-root Dockerfiles, secrets required, ports on 127.0.0.1, kafka-ui login)"
