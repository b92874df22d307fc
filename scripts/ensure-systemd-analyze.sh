#!/usr/bin/env bash
# Make `systemd-analyze` available for tests/unit/test_deploy.py (it verifies deploy/*.service).
# Debian/Ubuntu ship it in the "systemd" package; installing that package does not need systemd
# to be running (containers included). Exit 0 when it is there, 1 with a reason otherwise.
set -u
command -v systemd-analyze >/dev/null 2>&1 && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "systemd-analyze missing and apt-get not available: install systemd's tools by hand" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
$SUDO apt-get install -y -q --no-install-recommends systemd >&2 \
  || { $SUDO apt-get update -q >&2 && $SUDO apt-get install -y -q --no-install-recommends systemd >&2; } \
  || { echo "could not install the systemd package (need root or passwordless sudo)" >&2; exit 1; }
command -v systemd-analyze >/dev/null 2>&1
