#!/usr/bin/env bash
# Make Debian's Chromium available for the browser tests (tests/e2e/test_petition_page.py).
# Installs it when we are root with apt-get; otherwise says what to do. Under CI (CI=true)
# the browser tests then fail rather than skip if it is still missing.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Chromium for the browser tests (apt-get install chromium)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
  exit 0
fi
echo "Chromium is not installed and cannot be installed here (not root): browser tests will be skipped."
echo "Install it with: sudo apt-get install chromium"
