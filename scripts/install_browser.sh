#!/usr/bin/env bash
# Installs Debian's Chromium for the ops page's browser test (Playwright drives it through
# executable_path; Playwright's own browser download is never used). Quiet when present.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install_browser.sh: chromium is missing and this is not root (no sudo either)" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
echo "== installing Debian chromium"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]
