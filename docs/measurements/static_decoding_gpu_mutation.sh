#!/usr/bin/env bash
# Session 10: mutation testing of fairseq_resmlp/models/static_decoding.py on a GPU machine, where the CUDA-graph
# capture and replay (StaticDecoding._run) runs; on the CPU it returns at its first line. Each mutant is judged by
# tests/test_static_decoding.py in a process of its own (MUTANT_UNDER_TEST, mutmut 3's switch), 14 at a time.
#
# Prepared here, on the CPU machine, and carried (ignored paths .whl and .carry/gmut):
#   MUTATION_DIR=/tmp/mut-sd MUTATION_FRESH=1 bash scripts/mutation.sh "fairseq_resmlp.models.static_decoding.*"
#   (cd /tmp/mut-sd && tar czf $REPO/.carry/gmut/mutants.tgz --exclude='*.meta' --exclude='*.spans' mutants)
#   .carry/gmut/list.txt: the mutant names to judge (here: those that survived on the CPU, _run's first)
#   .carry/gmut/whl/: cp312 wheels of mutmut 3.8.1 and its dependencies not already in .whl (pip download
#   --only-binary=:all: --python-version 3.12 mutmut==3.8.1)
# Usage (device): bash docs/measurements/static_decoding_gpu_mutation.sh TOTAL_TIMEOUT_S PARALLEL
# Writes $OUT/results.txt: "MUTANT EXIT_CODE SECONDS" (0 = survived, 1 = killed), and $OUT/baseline.txt.
set -u
REPO=$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site2 .whl/*.whl .carry/gmut/whl/*.whl > $OUT/pip.txt 2>&1; PYTHONPATH=/tmp/site2 python3 -c "import fairseq, mutmut, pytest" >> $OUT/pip.txt 2>&1 || { cat $OUT/pip.txt; exit 3; }
mkdir -p /tmp/gm && tar xzf .carry/gmut/mutants.tgz -C /tmp/gm
cd /tmp/gm/mutants
export PYTHONPATH=/tmp/gm/mutants:/tmp/site2:$REPO PYTHONWARNINGS=ignore
mkdir -p $OUT/logs
nvidia-smi --query-gpu=name --format=csv > $OUT/gpu.txt
s=$(date +%s); MUTANT_UNDER_TEST= timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_static_decoding.py > $OUT/baseline.txt 2>&1
echo "baseline rc=$? $(( $(date +%s) - s ))s" | tee -a $OUT/results.txt
run_one() {
  local s=$(date +%s)
  MUTANT_UNDER_TEST=$1 timeout 150 python3 -m pytest -q -x -p no:cacheprovider tests/test_static_decoding.py > "$OUT/logs/$(echo $1 | sed s/ǁ/__/g).txt" 2>&1
  echo "$1 $? $(( $(date +%s) - s ))" >> $OUT/results.txt
}
export -f run_one
timeout $1 xargs -P $2 -I{} bash -c 'run_one "$@"' _ {} < $REPO/.carry/gmut/list.txt
echo "done: $(grep -c mutmut $OUT/results.txt) of $(wc -l < $REPO/.carry/gmut/list.txt)"
awk '$1 ~ /mutmut/ {print $2}' $OUT/results.txt | sort | uniq -c
