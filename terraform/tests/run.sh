#!/usr/bin/env bash
# Offline checks of terraform/: every file parses, plan-like assertions over the evaluated
# example environment, checkov, and tests that break a copy of the tree to prove each check
# fails when it should. Needs no terraform binary, provider or cloud access.
#
# Installs the pinned tools of requirements.txt into <repo>/.tools/tf-venv the first time
# and whenever requirements.txt changes, then runs pytest from the repo root and exits with
# its code. Extra arguments go to pytest (e.g. -k tls).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv="$repo/.tools/tf-venv"
requirements="$repo/terraform/tests/requirements.txt"
stamp="$venv/.requirements.sha256"

pick_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3.11 python3; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "run.sh: needs Python 3.11 (set PYTHON to its path)" >&2
  return 1
}

want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  python=$(pick_python)
  echo "run.sh: installing the pinned check tools into ${venv#"$repo"/}" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements"
  echo "$want" > "$stamp"
fi

cd "$repo"
set +e
"$venv/bin/python" -m pytest terraform/tests -q -p no:cacheprovider "$@"
status=$?
set -e
exit "$status"
