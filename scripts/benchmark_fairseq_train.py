"""Training speed through ``fairseq-train`` itself: ResMLP and the Transformer on the same data, same options.

    python scripts/benchmark_fairseq_train.py DATA_BIN --archs resmlp_6,transformer_wmt_en_de \\
        --max-update 300 --max-tokens 16384 --fp16 --out runs/train-speed

Runs each architecture for ``--max-update`` updates (no validation, no checkpoints) with ``--log-format json``
and reports the median words-per-second fairseq logs (target tokens/s; the first intervals are warm-up),
the loss reached, and the ratio to the last architecture listed (the baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
USER_DIR = REPO_ROOT / "fairseq_resmlp"


def fairseq_train() -> str:
    """fairseq-train of the running interpreter's environment, else the one on PATH (pip --target installs)."""
    local = Path(sys.executable).parent / "fairseq-train"
    return str(local) if local.exists() else (shutil.which("fairseq-train") or "fairseq-train")


def train_once(data: str, arch: str, a: argparse.Namespace, log_path: Path) -> Dict[str, float]:
    cmd = [
        fairseq_train(), data, "--user-dir", str(USER_DIR), "--arch", arch,
        "--share-all-embeddings", "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "5e-4",
        "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100", "--dropout", "0.1",
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
        "--max-tokens", str(a.max_tokens), "--max-update", str(a.max_update), "--seed", "1",
        "--disable-validation", "--no-save", "--log-format", "json", "--log-interval", str(a.log_interval),
        "--num-workers", "2", "--skip-invalid-size-inputs-valid-test",
    ]
    if a.fp16:
        cmd.append("--fp16")
    if a.cpu:
        cmd.append("--cpu")
    print("[train-speed] " + " ".join(cmd), file=sys.stderr, flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise SystemExit(f"error: fairseq-train --arch {arch} failed (log {log_path}):\n{tail}")
    inner: List[dict] = []
    for line in log_path.read_text().splitlines():
        if "| train_inner |" in line:
            inner.append(json.loads(line.split("| train_inner |", 1)[1]))
    if len(inner) < 3:
        raise SystemExit(f"error: too few train_inner log lines in {log_path}; raise --max-update")
    steady = inner[2:]  # the first intervals include CUDA warm-up and data loading start-up
    result = {
        "wps": statistics.median(float(x["wps"]) for x in steady),
        "ups": statistics.median(float(x["ups"]) for x in steady),
        "loss_last": float(inner[-1]["loss"]),
        "updates": int(inner[-1]["num_updates"]),
    }
    if "gb_free" in inner[-1]:
        result["gb_free"] = float(inner[-1]["gb_free"])
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="fairseq data-bin (joined dictionary)")
    p.add_argument("--archs", default="resmlp_6,transformer_wmt_en_de", help="comma-separated; last = baseline")
    p.add_argument("--max-update", type=int, default=300)
    p.add_argument("--max-tokens", type=int, default=16384)
    p.add_argument("--log-interval", type=int, default=20)
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--out", default="runs/train-speed")
    a = p.parse_args(argv)
    if not Path(a.data).is_dir():
        p.error(f"data directory {a.data} does not exist")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    archs = a.archs.split(",")
    results = {arch: train_once(a.data, arch, a, out / f"{arch}.log") for arch in archs}
    base = results[archs[-1]]
    lines = [f"fairseq-train, {a.max_update} updates, --max-tokens {a.max_tokens}, fp16={a.fp16}",
             f"{'arch':<26}{'target tok/s':>14}{'updates/s':>11}{'last loss':>11}{'vs baseline':>13}"]
    for arch, r in results.items():
        lines.append(f"{arch:<26}{r['wps']:>14,.0f}{r['ups']:>11.2f}{r['loss_last']:>11.3f}{r['wps'] / base['wps']:>12.2f}x")
    table = "\n".join(lines)
    print(table)
    (out / "train_speed.json").write_text(json.dumps(results, indent=2))
    (out / "train_speed.txt").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
