#!/usr/bin/env bash
# Validate docker-compose.yml offline (no Docker engine needed).
#
#   deploy/compose/validate.sh            # from anywhere inside the repo
#
# 1. `docker-compose config -q` (docker-compose 1.29.2 from a throwaway venv) parses,
#    interpolates and schema-checks the file, with a dummy ADMIN_TOKEN.
# 2. The same command WITHOUT ADMIN_TOKEN must fail (the token is required, not defaulted).
# 3. Structural checks on the resolved config (PyYAML from the same venv): the eight services,
#    healthchecks, depends_on conditions, restart policies, and non-root Dockerfiles.
#
# Env: COMPOSE_VENV (default <repo>/.run/compose-venv, reused), PYTHON (default python3).
# Exits non-zero on any failure; prints one OK line on success.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

COMPOSE_FILE="docker-compose.yml"
VENV="${COMPOSE_VENV:-$ROOT/.run/compose-venv}"
PYTHON="${PYTHON:-python3}"
DUMMY_TOKEN="validate-only-dummy-admin-token"

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
ADMIN_TOKEN="$DUMMY_TOKEN" "$DC" -f "$COMPOSE_FILE" config -q \
    || fail "docker-compose config rejected $COMPOSE_FILE"

# --- 2. ADMIN_TOKEN must be required --------------------------------------------------
# An empty --env-file so a developer's .env cannot supply the token.
empty_env="$(mktemp "${TMPDIR:-/tmp}/compose-validate-env.XXXXXX")"
trap 'rm -f "$empty_env"' EXIT
if env -u ADMIN_TOKEN "$DC" --env-file "$empty_env" -f "$COMPOSE_FILE" config -q >/dev/null 2>&1; then
    fail "compose config succeeded without ADMIN_TOKEN; it must use \${ADMIN_TOKEN:?...}"
fi

# --- 3. structural checks on the resolved config --------------------------------------
ADMIN_TOKEN="$DUMMY_TOKEN" "$DC" -f "$COMPOSE_FILE" config \
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

if errors:
    for e in errors:
        print("compose validate: FAIL: " + e, file=sys.stderr)
    sys.exit(1)
' || fail "structural checks failed"

echo "compose validate: OK ($COMPOSE_FILE: 8 services, healthchecks, depends_on, non-root Dockerfiles)"
