#!/usr/bin/env bash
# Make promtool (Debian's prometheus package) available for the monitoring checks
# (tests/integration/ops/test_monitoring_config.py: the Prometheus config, alert rules and
# their unit tests, the dashboard's queries). Installs it when we are root with apt-get;
# otherwise says what to do, and those tests skip with the same reason.
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing promtool for the monitoring checks (apt-get install prometheus)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # The package's post-install only starts the server where systemd runs; nothing here
  # uses the server, only promtool.
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  exit 0
fi
echo "promtool is not installed and cannot be installed here (not root): monitoring config checks will be skipped."
echo "Install it with: sudo apt-get install prometheus"
