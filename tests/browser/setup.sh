#!/usr/bin/env bash
# Installs what the browser tests need: Debian's Chromium (never a browser that Playwright
# downloads) and the pinned playwright-core from package-lock.json. Safe to run every time:
# it does nothing when both are already in place.
#
#   bash tests/browser/setup.sh && node --test tests/browser/
set -euo pipefail
cd "$(dirname "$0")"

export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
CHROMIUM="${TICKMESH_CHROMIUM:-/usr/bin/chromium}"

if [ ! -x "$CHROMIUM" ]; then
    if [ "$CHROMIUM" != /usr/bin/chromium ]; then
        echo "setup.sh: TICKMESH_CHROMIUM=$CHROMIUM is not an executable" >&2
        exit 1
    fi
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null; then
            echo "setup.sh: /usr/bin/chromium is missing; install Debian's chromium package as root" >&2
            exit 1
        fi
        sudo=(sudo)
    fi
    echo "setup.sh: installing Debian's chromium"
    "${sudo[@]}" apt-get update
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y chromium
fi

# npm ci when node_modules is missing or was installed from another package-lock.json.
stamp=node_modules/.tickmesh-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -d node_modules ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup.sh: npm ci in tests/browser"
    npm ci --no-audit --no-fund --loglevel=error
    echo "$want" >"$stamp"
fi
