#!/usr/bin/env bash
# The quickstart: set up, prepare Multi30k En->De (local copy, no network), train a small ResMLP on the CPU for a
# few minutes, translate the test set, print sacreBLEU and example translations.
#
#   bash scripts/quickstart.sh
#
# Environment: RESMLP_DATA (folder holding multi30k/; default ../shared/data), QUICKSTART_DIR (default
# runs/quickstart), QUICKSTART_MINUTES (training budget, default 5). A second run reuses the prepared data and
# the finished checkpoint (fairseq counts the time budget across restarts) and only re-prints the results.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
venv="${RESMLP_VENV:-$repo/.venv}"
py="$venv/bin/python"
data_root="${RESMLP_DATA:-$repo/../shared/data}"
m30k="$data_root/multi30k"
work="${QUICKSTART_DIR:-$repo/runs/quickstart}"
minutes="${QUICKSTART_MINUTES:-5}"

if [ ! -f "$m30k/train.en" ] || [ ! -f "$m30k/train.de" ]; then
  cat >&2 <<MSG
error: Multi30k not found at $m30k (expected train.en, train.de, val.*, test_2016_flickr.*).
Point RESMLP_DATA at the folder that holds multi30k/, or download the raw files (one sentence per line) from
https://github.com/multi30k/dataset/tree/master/data/task1/raw (gunzip them) into \$RESMLP_DATA/multi30k.
MSG
  exit 1
fi
mkdir -p "$work"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"

echo "== 1/3 prepare Multi30k en-de: clean, joint SentencePiece (8k), fairseq-preprocess"
"$venv/bin/resmlp-prepare" --src en --tgt de --train "$m30k/train" --valid "$m30k/val" \
  --test "$m30k/test_2016_flickr" --vocab-size 8000 --out "$work/data" --no-progress

echo "== 2/3 train resmlp_mini for $minutes minutes on the CPU (fairseq-train; resumes if interrupted)"
# The recipes' flag sets, from the one place that defines them (one flag a line).
mapfile -t optim < <("$py" -m fairseq_resmlp_tools.recipes.fairseq_args adam-inverse-sqrt --lr 0.002 --warmup 100)
mapfile -t criterion < <("$py" -m fairseq_resmlp_tools.recipes.fairseq_args label-smoothing)
{ "$venv/bin/fairseq-train" "$work/data/data-bin" --user-dir "$("$venv/bin/resmlp-user-dir")" \
  --arch resmlp_mini --share-all-embeddings --dropout 0.1 "${optim[@]}" "${criterion[@]}" --max-tokens 4096 \
  --stop-time-hours "$(awk "BEGIN {print $minutes / 60}")" --max-epoch 50 \
  --save-dir "$work/checkpoints" --no-epoch-checkpoints --save-interval-updates 200 --keep-interval-updates 1 \
  --validate-interval-updates 200 --required-batch-size-multiple 1 --num-workers 0 \
  --log-format simple --log-interval 50 --seed 1; echo $? > "$work/train.rc"; } 2>&1 \
  | tee "$work/train.log" | grep --line-buffered -E "train_inner|valid on|done training|Loaded checkpoint" || true
if [ "$(cat "$work/train.rc")" != 0 ]; then
  echo "error: fairseq-train failed; the end of its log ($work/train.log):" >&2
  tail -5 "$work/train.log" >&2
  exit 1
fi
[ -f "$work/checkpoints/checkpoint_last.pt" ] || { echo "error: training wrote no checkpoint in $work/checkpoints" >&2; exit 1; }

echo "== 3/3 translate test_2016_flickr (beam 4) and score"
"$venv/bin/resmlp-evaluate" "$work/checkpoints/checkpoint_last.pt" --data "$work/data" --split test \
  --beam 4 --cpu --batch-size 64 --output "$work/eval/test.json"
"$py" - "$work" <<'PY'
import sys
from pathlib import Path
work = Path(sys.argv[1])
src = (work / "data" / "raw" / "test.en").read_text(encoding="utf-8").splitlines()
ref = (work / "data" / "raw" / "test.de").read_text(encoding="utf-8").splitlines()
hyp = (work / "eval" / "test.hyp").read_text(encoding="utf-8").splitlines()
print("\nexample translations (source / ResMLP / reference):")
for i in (0, 10, 100, 500):
    print(f"  EN  {src[i]}\n  MT  {hyp[i]}\n  REF {ref[i]}\n")
PY
