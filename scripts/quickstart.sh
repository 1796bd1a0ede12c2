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

if "$py" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
  # With a GPU: the small-data architecture, fp16, same budget (about 2 600 updates in 5 minutes on one H100).
  device="GPU"; vocab=8000
  recipe=(--arch resmlp_small)
else
  # On 2 CPU cores the budget buys about 900 updates: a small model (d=128, 3+3 layers) on a 4k vocabulary,
  # small batches and a high learning rate, LayerNorm and sinusoidal positions, 64 positions (Multi30k's
  # longest test sentence has fewer pieces). Chosen on validation BLEU among 7 variants (docs/benchmarks.md).
  device="CPU (2 cores)"; vocab=4000
  recipe=(--arch resmlp_mini --cpu --lr 0.003 --warmup 200 --dropout 0.1 --max-tokens 2048 --no-valid-bleu
          -- --norm-type layernorm --positional-embeddings sinusoidal
          --max-source-positions 64 --max-target-positions 64 --num-workers 0)
fi

echo "== 1/3 prepare Multi30k en-de: clean, joint SentencePiece ($vocab), fairseq-preprocess"
"$venv/bin/resmlp-prepare" --src en --tgt de --train "$m30k/train" --valid "$m30k/val" \
  --test "$m30k/test_2016_flickr" --vocab-size "$vocab" --out "$work/data-$vocab" --no-progress

echo "== 2/3 the small-data recipe: train ${recipe[1]} for $minutes minutes on the $device, translate the test set"
echo "   (beam 4), score; resumes if interrupted, a re-run only re-prints the results"
"$venv/bin/resmlp-train-small" --data "$work/data-$vocab" --save-dir "$work/run-${recipe[1]}" \
  --time-budget-minutes "$minutes" --average-last 0 --log-interval 100 "${recipe[@]}"

echo "== 3/3 results"
"$py" - "$work/data-$vocab" "$work/run-${recipe[1]}" <<'PY'
import json
import sys
from pathlib import Path

data, run = Path(sys.argv[1]), Path(sys.argv[2])
result = json.loads((run / "eval" / "test_avg.json").read_text(encoding="utf-8"))
src = (data / "raw" / "test.en").read_text(encoding="utf-8").splitlines()
ref = (data / "raw" / "test.de").read_text(encoding="utf-8").splitlines()
hyp = (run / "eval" / "test_avg.hyp").read_text(encoding="utf-8").splitlines()
print("\nexample translations (source / ResMLP / reference):")
for i in (0, 10, 100, 500):
    print(f"  EN  {src[i]}\n  MT  {hyp[i]}\n  REF {ref[i]}\n")
bleu, chrf = result["metrics"]["sacrebleu"], result["metrics"]["chrf"]
print(f"test_2016_flickr: sacreBLEU {bleu['score']:.2f} ({bleu['signature']}), chrF {chrf['score']:.2f}")
print(f"training curves: {run / 'training.png'}")
PY
