#!/bin/sh
# Make sure Debian's Chromium is installed for the browser tests (tests/test_browser.py).
# Installs the `chromium` package with apt-get when /usr/bin/chromium is missing.
set -eu
CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        echo "ensure_chromium: $CHROMIUM is missing and we are not root: apt-get install chromium" >&2
        exit 1
    fi
else
    SUDO=""
fi
echo "ensure_chromium: installing Debian's chromium (for the browser tests)" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null || true
$SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null
test -x "$CHROMIUM"
