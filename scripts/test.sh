#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite on the CPU:  bash scripts/test.sh [pytest args]
# RESMLP_DATA points at the shared real data (default ../shared/data); tests that need it skip without it.
# Without pytest args (the whole suite, as CI runs it), the mutation subset follows: scripts/mutation_ci.sh, a few
# minutes (docs/testing.md, "Mutation subset in CI"); RESMLP_MUTATION_CI=0 leaves it out.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
venv="${RESMLP_VENV:-$repo/.venv}"
export RESMLP_DATA="${RESMLP_DATA:-$repo/../shared/data}"
cd "$repo"
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
if [ "$#" -gt 0 ] || [ "${RESMLP_MUTATION_CI:-1}" = 0 ]; then
    exec "$venv/bin/python" -m pytest -q -ra "$@" tests
fi
"$venv/bin/python" -m pytest -q -ra tests
exec bash "$repo/scripts/mutation_ci.sh"
