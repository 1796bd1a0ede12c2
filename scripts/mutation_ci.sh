#!/usr/bin/env bash
# The mutation subset that CI runs (docs/testing.md, "Mutation subset in CI"), a few minutes on 2 cores:
# MUTATION_TARGET=ci of scripts/mutation.sh (fairseq_resmlp_tools/average.py, fairseq_resmlp/modules/affine.py and
# channel_mlp.py with their fast tests) in a scratch copy under a temporary directory, then a check that the surviving
# mutants are exactly those listed, with their reasons, in tests/mutation_ci_survivors.txt.
#
#   bash scripts/mutation_ci.sh                     # scripts/test.sh runs it after pytest
#   MUTATION_CI_KEEP=1 bash scripts/mutation_ci.sh  # keep the scratch copy (to look at mutants with mutmut show)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${RESMLP_VENV:-$repo/.venv}"
python="$venv/bin/python"
[ -x "$python" ] || python="$(command -v python3)"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/resmlp-mutation-ci.XXXXXX")"
if [ "${MUTATION_CI_KEEP:-0}" = 1 ]; then echo "mutation subset: scratch copy in $scratch/copy"; else
    trap 'rm -rf "$scratch"' EXIT; fi
start=$SECONDS
echo "mutation subset: mutmut on average.py, affine.py, channel_mlp.py"
# mutmut's output (a progress spinner) goes to a log; its end is shown when mutmut failed.
if ! MUTATION_TARGET=ci MUTATION_DIR="$scratch/copy" MUTATION_FRESH=0 MUTATION_SURVIVORS=0 \
    bash "$repo/scripts/mutation.sh" >"$scratch/mutmut.log" 2>&1; then
    tr '\r' '\n' <"$scratch/mutmut.log" | tail -n 40
    echo "mutation subset: scripts/mutation.sh failed" >&2
    exit 1
fi
sed -n '/^module /,/^$/p' "$scratch/mutmut.log"
status=0
"$python" "$repo/scripts/mutation_ci_check.py" "$scratch/copy/mutants" "$repo/tests/mutation_ci_survivors.txt" ||
    status=$?
# Incomplete (2): mutmut stopped early, e.g. a selected test fails on the unmutated code; its log says why.
if [ "$status" = 2 ]; then tr '\r' '\n' <"$scratch/mutmut.log" | tail -n 40; fi
echo "mutation subset: $((SECONDS - start)) s"
exit "$status"
