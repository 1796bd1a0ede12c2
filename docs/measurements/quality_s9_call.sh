#!/usr/bin/env bash
# Session 9 quality calls 2-6: quality_s6_call.sh, with the GPU tests of the fixed-shape decoding step run first
# (calls 2-5; CI has no GPU) and, in call 3, the decoding check quality_s9_post.sh run after the comparison on its
# results folder (R=/tmp/res-..., printed in the call's log; NAME, DATA, LP name the comparison, data and lenpen).
# Usage: bash docs/measurements/quality_s9_call.sh TIMEOUT_S "NAME|DATA|COMPARE ARGS..." ["NAME|DATA|..."]
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl >/dev/null 2>&1
PYTHONPATH=/tmp/site:$PWD python3 -m pytest -q -rA --tb=long -p no:cacheprovider tests/test_static_decoding.py \
    > "$OUT/static_tests.txt" 2>&1
tail -n 3 "$OUT/static_tests.txt"
bash docs/measurements/quality_s6_call.sh "$@"
