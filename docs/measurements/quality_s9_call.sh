#!/usr/bin/env bash
# Session 9: as quality_s6_call.sh, plus (calls 3-5) `python3 -m pytest -q -rA --tb=long -p no:cacheprovider tests/test_static_decoding.py [tests/test_export_units.py] > $OUT/static_tests.txt` before the runs start,
# and (call 3) the decoding check docs/measurements/quality_s9_post.sh after them (R=results folder, NAME/DATA/LP env).
# Session-6 quality call: resmlp-compare on prepared data carried in .carry/q6 (one or more comparisons at once).
# Usage: bash .carry/q6.sh TIMEOUT_S "NAME|DATA|COMPARE ARGS..." ["NAME|DATA|..."]
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
R=/tmp/res-$(date +%s); mkdir -p $R; T=$1; shift  # fresh per call: a warm machine keeps /tmp
nvidia-smi --query-gpu=name,memory.total --format=csv > $R/gpu.txt 2>&1
python3 -c "import torch, fairseq, sacremoses, sentencepiece, matplotlib, sacrebleu; print(torch.__version__, fairseq.__version__)" >> $R/gpu.txt 2>&1 || { cat $R/gpu.txt; exit 3; }
pack() { (cd $R && tar czf $OUT/all.tgz --exclude='*.pt' --exclude='*.bin' --exclude='*.idx' --exclude='*.generate.txt' .); }
( while sleep 20; do pack; done ) & PK=$!
pids=()
for spec in "$@"; do
  IFS='|' read -r name data rest <<< "$spec"
  eval "set -- $rest"
  ( date +%T; timeout $T python3 -m fairseq_resmlp_tools.recipes.compare --data .carry/q6/$data --out $R/$name "$@"; echo "rc=$?"; date +%T ) > $R/$name.log 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"
[ -f .carry/post.sh ] && R=$R timeout ${POST_T:-120} bash .carry/post.sh > $R/post.log 2>&1
kill $PK; pack
tail -n 30 $R/*.log
