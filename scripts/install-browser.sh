#!/usr/bin/env bash
# Installs the headless browser the page test drives: Debian's chromium and its chromedriver.
# Idempotent: does nothing when both are already on PATH. Installs only as root with apt-get;
# anywhere else it says how, and exits 0 (the browser test then skips, unless
# MOODBOT_REQUIRE_BROWSER=1 makes it fail).
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if have chromium && have chromedriver; then
    exit 0
fi

if [ "$(id -u)" = "0" ] && have apt-get; then
    echo "install-browser: installing chromium and chromium-driver with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
    have chromium && have chromedriver && exit 0
    echo "install-browser: apt-get finished but chromium/chromedriver are not on PATH" >&2
    exit 1
fi

cat >&2 <<'HOW'
install-browser: chromium and chromedriver are not on PATH, and this is not a root shell with
apt-get, so nothing was installed. The web page's browser test will be skipped. To run it:
  Debian/Ubuntu: sudo apt-get install --no-install-recommends chromium chromium-driver
  Fedora:        sudo dnf install chromium chromedriver
  macOS:         brew install --cask chromium && brew install chromedriver
HOW
exit 0
