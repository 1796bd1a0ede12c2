"""Training speed through ``fairseq-train`` itself: ResMLP and the Transformer on the same data, same options.

    resmlp-benchmark-train DATA_BIN --archs resmlp_6,transformer_wmt_en_de \\
        --max-update 300 --max-tokens 16384 --fp16 --out runs/train-speed

Runs each architecture for ``--max-update`` updates (no validation, no checkpoints) with ``--log-format json``
and reports the median words-per-second fairseq logs (target tokens/s; the first intervals are warm-up),
the loss reached, and the ratio to the last architecture listed (the baseline). This is the one measure of
training speed: it times exactly what users run.

``--optimizer fused_adam`` times the plugin's optimizer (with ``--fp16`` it adds ``--memory-efficient-fp16``, the
path that skips FP16Optimizer); ``--no-cudnn-attention`` runs fairseq-train with PyTorch's cuDNN attention backend
off for the whole process, so that fairseq's Transformer gets the backend choice the plugin's cross-attention
makes itself (docs/training_speed.md: on H100 cuDNN attention re-plans every new batch shape on the host).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

from fairseq_resmlp_tools._cli import ToolError, console_script
from fairseq_resmlp_tools.fairseq_io import format_command, read_json_log
from fairseq_resmlp_tools.recipes import fairseq_args


def train_command(data: Path, arch: str, a: argparse.Namespace) -> list:
    """The fairseq-train command timed for ``arch``: the recipes' optimizer and criterion, nothing saved."""
    cmd = fairseq_args.train_command(data, arch)
    if a.no_cudnn_attention:
        cmd = fairseq_args.without_cudnn_attention(cmd)
    cmd = [
        *cmd,
        *fairseq_args.adam_inverse_sqrt(5e-4, 100, optimizer=a.optimizer),
        "--dropout",
        "0.1",
        *fairseq_args.label_smoothing(0.1),
        "--max-tokens",
        str(a.max_tokens),
        "--max-update",
        str(a.max_update),
        "--seed",
        "1",
        "--disable-validation",
        "--no-save",
        *fairseq_args.logging_args(a.log_interval),
        "--num-workers",
        "2",
        "--skip-invalid-size-inputs-valid-test",
        "--update-freq",
        str(a.update_freq),
    ]
    if a.fp16:
        cmd += ["--fp16", "--memory-efficient-fp16"] if a.optimizer == "fused_adam" else ["--fp16"]
    if a.cpu:
        cmd.append("--cpu")
    return cmd


def train_once(data: Path, arch: str, a: argparse.Namespace, log_path: Path) -> Dict[str, float]:
    """Run fairseq-train once; the steady-state speed and the last loss from its log."""
    cmd = train_command(data, arch, a)
    print("[train-speed] " + format_command(cmd), file=sys.stderr, flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise ToolError(f"fairseq-train --arch {arch} failed (log {log_path}):\n{tail}")
    inner = [record for tag, record in read_json_log(log_path) if tag == "train_inner"]
    if len(inner) < 3:
        raise ToolError(f"too few train_inner log lines in {log_path}; raise --max-update")
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


def build_parser() -> argparse.ArgumentParser:
    """The command line of resmlp-benchmark-train."""
    p = argparse.ArgumentParser(prog="resmlp-benchmark-train", description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path, help="fairseq data-bin (joined dictionary)")
    p.add_argument("--archs", default="resmlp_6,transformer_wmt_en_de", help="comma-separated; last = baseline")
    p.add_argument("--max-update", type=int, default=300)
    p.add_argument("--max-tokens", type=int, default=16384)
    p.add_argument("--log-interval", type=int, default=20)
    p.add_argument("--update-freq", type=int, default=1, help="batches per update (default %(default)s)")
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--cpu", action="store_true")
    p.add_argument(
        "--optimizer",
        choices=("adam", "fused_adam"),
        default="adam",
        help="fairseq's adam (default) or the plugin's fused_adam (with --fp16: --memory-efficient-fp16)",
    )
    p.add_argument(
        "--no-cudnn-attention",
        action="store_true",
        help="fairseq-train with PyTorch's cuDNN attention backend off (for fairseq's Transformer on H100/H200)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/train-speed"))
    return p


@console_script
def main(argv: Optional[Sequence[str]] = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    if a.update_freq < 1:
        p.error(f"--update-freq must be >= 1, got {a.update_freq}")
    if not a.data.is_dir():
        raise ToolError(f"data directory {a.data} does not exist")
    a.out.mkdir(parents=True, exist_ok=True)
    archs = a.archs.split(",")
    results = {arch: train_once(a.data, arch, a, a.out / f"{arch}.log") for arch in archs}
    base = results[archs[-1]]
    lines = [
        f"fairseq-train, {a.max_update} updates, --max-tokens {a.max_tokens}, --update-freq {a.update_freq}, "
        f"fp16={a.fp16}, --optimizer {a.optimizer}, cuDNN attention {'off' if a.no_cudnn_attention else 'default'}",
        f"{'arch':<26}{'target tok/s':>14}{'updates/s':>11}{'last loss':>11}{'vs baseline':>13}",
    ]
    for arch, r in results.items():
        lines.append(
            f"{arch:<26}{r['wps']:>14,.0f}{r['ups']:>11.2f}{r['loss_last']:>11.3f}{r['wps'] / base['wps']:>12.2f}x"
        )
    table = "\n".join(lines)
    print(table)
    (a.out / "train_speed.json").write_text(json.dumps(results, indent=2))
    (a.out / "train_speed.txt").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
