#!/usr/bin/env bash
# Headless Chromium + chromedriver for the browser test (Debian packages), installed once.
# Idempotent: does nothing when both are already there.
set -eu
have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }
if have; then
  echo "browser: $(chromium --version 2>/dev/null | head -1), $(chromedriver --version | head -1)" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "browser: need root (or sudo) to apt-get install chromium chromium-driver" >&2; exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "browser: no apt-get; install Chromium and a matching chromedriver on PATH" >&2; exit 1
fi
echo "browser: installing chromium chromium-driver (apt-get)" >&2
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-liberation
have
