#!/usr/bin/env bash
# Validate docker-compose.yml offline (no Docker engine needed).
#
#   deploy/compose/validate.sh            # from anywhere inside the repo
#
# 1. check-jsonschema (pinned in requirements/constraints.txt, installed by `make install`)
#    checks the file against the Compose Specification's JSON schema, which it ships
#    (--builtin-schema vendor.compose-spec), so nothing is fetched.
# 2. deploy/compose/check_compose.py resolves the file as `docker compose config` does and
#    checks its structure: the services, healthchecks, depends_on conditions, restart
#    policies, every image built from deploy/docker/Dockerfile with a non-root target, the
#    secrets compose requires (and ADMIN_TOKEN only where it is used), the one-shot seed,
#    PostgreSQL 15 with the local stack's server settings, every published port on
#    127.0.0.1 by default, logins on kafka-ui and Grafana, and the monitoring files the
#    stack mounts. The content of those files is checked by
#    tests/integration/ops/test_monitoring_config.py (promtool and the dashboard's metric
#    names).
#
# Env: VENV (default <repo>/.venv). Exits non-zero on any failure; prints OK lines on success.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

COMPOSE_FILE="docker-compose.yml"
VENV="${VENV:-$ROOT/.venv}"

fail() { echo "compose validate: FAIL: $*" >&2; exit 1; }

[[ -f "$COMPOSE_FILE" ]] || fail "$ROOT/$COMPOSE_FILE not found"
[[ -x "$VENV/bin/check-jsonschema" ]] \
    || fail "$VENV/bin/check-jsonschema not found: run \`make install\` (requirements/dev.txt)"

# --- 1. the Compose Specification's schema ----------------------------------------------
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$COMPOSE_FILE" \
    || fail "$COMPOSE_FILE does not match the compose-spec schema"

# --- 2. structure, secrets, versions ----------------------------------------------------
"$VENV/bin/python" deploy/compose/check_compose.py "$COMPOSE_FILE" \
    || fail "structural checks failed"

echo "compose validate: OK ($COMPOSE_FILE: compose-spec schema and structural checks)"
