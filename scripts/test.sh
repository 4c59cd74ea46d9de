#!/usr/bin/env bash
# Set everything up (system adb client, .venv with every extra) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v adb >/dev/null 2>&1; then
  # The ADB tests prove our loopback phone speaks real ADB with Debian's adb client.
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq adb >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq adb >/dev/null
  fi
fi
scripts/setup.sh "test,tflite,adb,ray,farm"
.venv/bin/ruff check .
exec .venv/bin/pytest "$@"
