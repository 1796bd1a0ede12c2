#!/usr/bin/env bash
# Session-6 quality call: resmlp-compare on prepared data carried in .carry/q6 (one or more comparisons at once).
# Usage: bash .carry/q6.sh TIMEOUT_S "NAME|DATA|COMPARE ARGS..." ["NAME|DATA|..."]
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
R=/tmp/res-$(date +%s); mkdir -p $R; T=$1; shift  # fresh per call: a warm machine keeps /tmp
nvidia-smi --query-gpu=name,memory.total --format=csv > $R/gpu.txt 2>&1
python3 -c "import torch, fairseq, sacremoses, sentencepiece, sacrebleu; print(torch.__version__, fairseq.__version__)" >> $R/gpu.txt 2>&1 || { cat $R/gpu.txt; exit 3; }
# matplotlib only draws compare.png, after compare.md is written (optional since session 10).
python3 -c "import matplotlib; print('matplotlib', matplotlib.__version__)" >> $R/gpu.txt 2>&1
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
if [ -f .carry/post.sh ]; then R=$R bash .carry/post.sh > $R/post.log 2>&1; fi  # optional post-hook (session 10)
kill $PK; pack
tail -n 30 $R/*.log
