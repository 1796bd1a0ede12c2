#!/usr/bin/env bash
# Data-parallel training check on a machine with 2 GPUs (fairseq's own distributed training, NCCL):
#   1 GPU with --update-freq 2 vs 2 GPUs with --update-freq 1 (the same effective batch), fp16, resmlp_6;
#   the 2-GPU run is killed (SIGKILL) mid-way and started again with the same command, which must resume.
# Usage: bash scripts/multi_gpu_check.sh DATA_BIN OUT_DIR [UPDATES]
# Prints tokens/s of both runs, the scaling efficiency and how far the two loss curves are apart.
set -uo pipefail
data="$1"; out="$2"; updates="${3:-300}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export NCCL_NVLS_ENABLE=0 PYTHONWARNINGS=ignore  # NVLink multicast off, as the device machines require
train() {  # train SAVE_DIR UPDATE_FREQ
  fairseq-train "$data" --user-dir "$repo/fairseq_resmlp" --arch resmlp_6 --share-all-embeddings --fp16 \
    --optimizer adam --adam-betas "(0.9, 0.98)" --lr 5e-4 --lr-scheduler inverse_sqrt --warmup-updates 100 \
    --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --dropout 0.1 --max-tokens 8192 \
    --update-freq "$2" --max-update "$updates" --save-dir "$1" --save-interval-updates 50 --no-epoch-checkpoints \
    --disable-validation --log-format json --log-interval 10 --seed 1 --num-workers 2
}
mkdir -p "$out"
echo "== 1 GPU, --update-freq 2"
CUDA_VISIBLE_DEVICES=0 train "$out/ckpt1" 2 > "$out/gpu1.log" 2>&1 || { tail -30 "$out/gpu1.log"; exit 1; }
echo "== 2 GPUs, --update-freq 1, killed after update 150"
( train "$out/ckpt2" 1 > "$out/gpu2_part1.log" 2>&1 ) & pid=$!
until grep -Eq '"num_updates": "?1[5-9][0-9]' "$out/gpu2_part1.log" 2>/dev/null || ! kill -0 $pid 2>/dev/null; do sleep 1; done
# SIGKILL the launcher and the worker processes it spawned (their command lines do not name the save dir).
pkill -9 -f "save-dir $out/ckpt2"; pkill -9 -f "multiprocessing.spawn"; wait $pid 2>/dev/null
echo "killed after: $(grep -Eo '"num_updates": "?[0-9]+' "$out/gpu2_part1.log" | tail -1)"
echo "== 2 GPUs, same command again (resume)"
train "$out/ckpt2" 1 > "$out/gpu2_part2.log" 2>&1 || { tail -30 "$out/gpu2_part2.log"; exit 1; }
grep -h "Loaded checkpoint" "$out/gpu2_part2.log" | sed 's/.*| //'
python3 - "$out" "$updates" <<'PY'
import json, statistics, sys
out, updates = sys.argv[1], int(sys.argv[2])
def inner(path):
    rows = {}
    for line in open(path):
        if "| train_inner |" in line:
            r = json.loads(line.split("| train_inner |", 1)[1]); rows[int(r["num_updates"])] = r
    return rows
one = inner(f"{out}/gpu1.log")
two = {**inner(f"{out}/gpu2_part1.log"), **inner(f"{out}/gpu2_part2.log")}
wps1 = statistics.median(float(r["wps"]) for u, r in one.items() if u > 30)
wps2 = statistics.median(float(r["wps"]) for u, r in two.items() if u > 30)
common = sorted(set(one) & set(two))
diffs = [abs(float(one[u]["loss"]) - float(two[u]["loss"])) for u in common]
print(f"tokens/s: 1 GPU {wps1:,.0f} | 2 GPUs {wps2:,.0f} | speed-up {wps2 / wps1:.2f}x | scaling efficiency {wps2 / (2 * wps1):.0%}")
print("loss (1 GPU / 2 GPUs) at updates:", ", ".join(f"{u}: {float(one[u]['loss']):.3f}/{float(two[u]['loss']):.3f}" for u in common[::5]))
print(f"max |loss difference| over {len(common)} logged intervals: {max(diffs):.3f}; final update reached by the resumed run: {max(two)}")
PY
