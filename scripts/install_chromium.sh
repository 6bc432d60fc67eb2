#!/bin/sh
# Installs Debian's chromium for the report's browser test (tests/test_report.py), once.
# Idempotent: does nothing when chromium is already on PATH; without root or apt-get it only says why and exits 0,
# and the browser test then skips with that reason.
set -eu

if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "install_chromium: not root, skipping (install the 'chromium' package to run the browser test)" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium: no apt-get here, skipping (install chromium to run the browser test)" >&2
    exit 0
fi
echo "install_chromium: apt-get install chromium" >&2
export DEBIAN_FRONTEND=noninteractive
if apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
    command -v chromium
else
    echo "install_chromium: apt-get could not install chromium; the browser test will skip" >&2
fi
