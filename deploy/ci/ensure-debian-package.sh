#!/usr/bin/env bash
# Make a Debian package's program available for the tests that need it:
#   ensure-debian-package.sh PROGRAM PACKAGE WHAT
# (chromium for the browser tests, promtool from prometheus for the monitoring checks).
# Installs it when we are root with apt-get; otherwise says what to do, and those tests
# skip with the same reason (under CI=true they fail instead).
set -euo pipefail
program=$1 package=$2 what=$3
if command -v "$program" >/dev/null 2>&1 || [ -x "/usr/bin/$program" ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing $program for $what (apt-get install $package)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # No recommends: prometheus's post-install starts a server only where systemd runs,
  # and nothing here uses it.
  apt-get install -y -qq --no-install-recommends "$package" >/dev/null
  exit 0
fi
echo "$program is not installed and cannot be installed here (not root): $what will be skipped."
echo "Install it with: sudo apt-get install $package"
