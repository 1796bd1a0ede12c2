#!/usr/bin/env bash
# Data-parallel training check on a machine with 2 GPUs (fairseq's own distributed training, NCCL):
#   1 GPU with --update-freq 2 vs 2 GPUs with --update-freq 1 (the same effective batch), fp16, resmlp_6;
#   the 2-GPU run is killed (SIGKILL) mid-way and started again with the same command, which must resume.
# Usage: bash scripts/multi_gpu_check.sh DATA_BIN OUT_DIR [UPDATES]
# Prints tokens/s of both runs, the scaling efficiency and how far the two loss curves are apart.
# Runs with the python of RESMLP_VENV (default .venv), where fairseq and fairseq-resmlp are installed.
set -uo pipefail
data="$1"; out="$2"; updates="${3:-300}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${RESMLP_VENV:-$repo/.venv}/bin/python"
export NCCL_NVLS_ENABLE=0 PYTHONWARNINGS=ignore  # NVLink multicast off, as the device machines require
# The recipes' flag sets, from the one place that defines them (one flag a line).
mapfile -t optim < <("$py" -m fairseq_resmlp_tools.recipes.fairseq_args adam-inverse-sqrt --lr 5e-4 --warmup 100)
mapfile -t criterion < <("$py" -m fairseq_resmlp_tools.recipes.fairseq_args label-smoothing)
mapfile -t logging < <("$py" -m fairseq_resmlp_tools.recipes.fairseq_args logging --log-interval 10)
user_dir="$("$py" -m fairseq_resmlp_tools.user_dir)"
train_cmd() {  # train_cmd SAVE_DIR UPDATE_FREQ: sets the array cmd
  cmd=("$(dirname "$py")/fairseq-train" "$data" --user-dir "$user_dir" --arch resmlp_6 --share-all-embeddings --fp16
    "${optim[@]}" "${criterion[@]}" --dropout 0.1 --max-tokens 8192
    --update-freq "$2" --max-update "$updates" --save-dir "$1" --save-interval-updates 50 --no-epoch-checkpoints
    --disable-validation "${logging[@]}" --seed 1 --num-workers 2)
}
last_update() { "$py" -m fairseq_resmlp_tools.fairseq_io last-update "$1"; }
mkdir -p "$out"
echo "== 1 GPU, --update-freq 2"
train_cmd "$out/ckpt1" 2
CUDA_VISIBLE_DEVICES=0 "${cmd[@]}" > "$out/gpu1.log" 2>&1 || { tail -30 "$out/gpu1.log"; exit 1; }
echo "== 2 GPUs, --update-freq 1, killed after update 150"
train_cmd "$out/ckpt2" 1
# setsid: a session and process group of its own (its id is the pid), so that kill -- -PGID ends the launcher and
# the workers it spawned, and nothing else.
setsid "${cmd[@]}" > "$out/gpu2_part1.log" 2>&1 & pgid=$!
until [ "$(last_update "$out/gpu2_part1.log")" -ge 150 ] || ! kill -0 "$pgid" 2>/dev/null; do sleep 2; done
kill -9 -- -"$pgid" 2>/dev/null; wait "$pgid" 2>/dev/null
echo "killed after update $(last_update "$out/gpu2_part1.log")"
echo "== 2 GPUs, same command again (resume)"
"${cmd[@]}" > "$out/gpu2_part2.log" 2>&1 || { tail -30 "$out/gpu2_part2.log"; exit 1; }
grep -h "Loaded checkpoint" "$out/gpu2_part2.log" | sed 's/.*| //'
"$py" - "$out" "$updates" <<'PY'
import statistics, sys
from pathlib import Path

from fairseq_resmlp_tools.fairseq_io import read_json_log

out = Path(sys.argv[1])
def inner(*paths):
    rows = {}
    for path in paths:
        rows.update({int(r["num_updates"]): r for tag, r in read_json_log(path) if tag == "train_inner"})
    return rows
one = inner(out / "gpu1.log")
two = inner(out / "gpu2_part1.log", out / "gpu2_part2.log")
wps1 = statistics.median(float(r["wps"]) for u, r in one.items() if u > 30)
wps2 = statistics.median(float(r["wps"]) for u, r in two.items() if u > 30)
common = sorted(set(one) & set(two))
diffs = [abs(float(one[u]["loss"]) - float(two[u]["loss"])) for u in common]
print(f"tokens/s: 1 GPU {wps1:,.0f} | 2 GPUs {wps2:,.0f} | speed-up {wps2 / wps1:.2f}x | scaling efficiency {wps2 / (2 * wps1):.0%}")
print("loss (1 GPU / 2 GPUs) at updates:", ", ".join(f"{u}: {float(one[u]['loss']):.3f}/{float(two[u]['loss']):.3f}" for u in common[::5]))
print(f"max |loss difference| over {len(common)} logged intervals: {max(diffs):.3f}; final update reached by the resumed run: {max(two)}")
PY
