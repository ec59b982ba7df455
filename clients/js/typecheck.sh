#!/usr/bin/env bash
# Checks the TypeScript declarations (tickmesh.d.ts) against the code's own JSDoc types and
# against a usage file (test/types.ts), with the TypeScript pinned in package-lock.json: a
# dev tool only, installed into node_modules (git-ignored) when it is missing or was
# installed from another lock file. The package itself has no dependencies.
#
#   bash clients/js/typecheck.sh
set -euo pipefail
cd "$(dirname "$0")"

lock="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ "$(cat node_modules/.tickmesh-lock.sha256 2>/dev/null)" != "$lock" ]; then
    echo "typecheck.sh: npm ci in clients/js"
    npm ci --no-audit --no-fund --loglevel=error
    echo "$lock" >node_modules/.tickmesh-lock.sha256
fi
exec node_modules/.bin/tsc -p tsconfig.json
