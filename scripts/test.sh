#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite on the CPU:  bash scripts/test.sh [pytest args]
# RESMLP_DATA points at the shared real data (default ../shared/data); tests that need it skip without it.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
venv="${RESMLP_VENV:-$repo/.venv}"
export RESMLP_DATA="${RESMLP_DATA:-$repo/../shared/data}"
cd "$repo"
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
exec "$venv/bin/python" -m pytest -q -ra "$@" tests
