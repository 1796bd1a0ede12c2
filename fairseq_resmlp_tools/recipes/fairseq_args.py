"""fairseq-train flag sets shared by the recipes, the training benchmark and the shell scripts.

    python -m fairseq_resmlp_tools.recipes.fairseq_args adam-inverse-sqrt --lr 5e-4 --warmup 100

prints one of them (one flag a line), for the shell scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from fairseq_resmlp_tools.fairseq_io import fairseq_command, user_dir


def train_command(data_bin: Path, arch: str, src: Optional[str] = None, tgt: Optional[str] = None) -> List[str]:
    """fairseq-train on ``data_bin`` with the plugin, a translation task and shared embeddings (joint dictionary)."""
    cmd = [fairseq_command("fairseq-train"), str(data_bin), "--user-dir", str(user_dir()), "--task", "translation"]
    if src and tgt:
        cmd += ["--source-lang", src, "--target-lang", tgt]
    return cmd + ["--arch", arch, "--share-all-embeddings"]


# fairseq-train with PyTorch's cuDNN attention backend off (fairseq_resmlp_tools/bench/train_no_cudnn_attention.py).
NO_CUDNN_ATTENTION_MODULE = "fairseq_resmlp_tools.bench.train_no_cudnn_attention"


def without_cudnn_attention(cmd: List[str]) -> List[str]:
    """``cmd`` (a fairseq-train command) run with cuDNN attention off. On H100/H200 PyTorch prefers cuDNN attention
    for fairseq's MultiheadAttention and plans every new batch shape on the host: fairseq's Transformer then trains
    several times slower than with the other attention kernels. The plugin's own cross-attention avoids cuDNN
    anyway, so this changes only the speed of models built from fairseq's attention, never their results."""
    return [sys.executable, "-m", NO_CUDNN_ATTENTION_MODULE, *cmd[1:]]


# The small-data recipe's optimizer: fairseq's Adam update as multi-tensor kernels (fairseq_resmlp/optim/fused_adam.py).
# It needs --memory-efficient-fp16 with --fp16 (device_args(memory_efficient=True)) to be faster.
RECIPE_OPTIMIZER = "fused_adam"


def adam_inverse_sqrt(
    lr: float, warmup: int, warmup_init_lr: Optional[float] = None, optimizer: str = "adam"
) -> List[str]:
    """Adam (0.9, 0.98) with linear warm-up then inverse square-root decay (Vaswani et al.; fairseq's examples).
    ``optimizer``: fairseq's ``adam`` or the plugin's ``fused_adam`` (the same update, see fairseq_resmlp/optim)."""
    args = [
        "--optimizer",
        optimizer,
        "--adam-betas",
        "(0.9, 0.98)",
        "--lr",
        str(lr),
        "--lr-scheduler",
        "inverse_sqrt",
        "--warmup-updates",
        str(warmup),
    ]
    if warmup_init_lr is not None:
        args += ["--warmup-init-lr", str(warmup_init_lr)]
    return args


def label_smoothing(epsilon: float = 0.1) -> List[str]:
    """fairseq's label-smoothed cross-entropy."""
    return ["--criterion", "label_smoothed_cross_entropy", "--label-smoothing", str(epsilon)]


def valid_bleu_args() -> List[str]:
    """fairseq-train options that add validation BLEU to the logs (greedy, capped length: cheap enough to run at
    every validation). Detokenized like the evaluation; the best checkpoint is still chosen by validation loss,
    because fairseq crashes (KeyError 'bleu') when a validation produces no n-gram matches at all."""
    return [
        "--eval-bleu",
        "--eval-bleu-args",
        json.dumps({"beam": 1, "max_len_a": 1.2, "max_len_b": 10}),
        "--eval-bleu-detok",
        "space",
        "--eval-bleu-remove-bpe",
        "sentencepiece",
    ]


def logging_args(log_interval: int) -> List[str]:
    """JSON logs (what resmlp-plot reads); the recipe saves the console output as SAVE_DIR/train.log.
    fairseq's own --log-file is not used: it drops the record tags and repeats lines once per epoch."""
    return ["--log-format", "json", "--log-interval", str(log_interval)]


def device_args(gpus: int, memory_efficient: bool = False) -> List[str]:
    """fp16 on ``gpus`` GPUs (fairseq's own distributed training), or the CPU when there are none.

    ``memory_efficient`` adds ``--memory-efficient-fp16``, for ``--optimizer fused_adam`` (RECIPE_OPTIMIZER) only:
    that optimizer keeps fp32 master weights itself, and fairseq then hands it the fp16 parameters and skips
    FP16Optimizer's per-parameter copies. (fairseq's adam would lose the fp32 masters; adagrad refuses the flag.)"""
    if gpus <= 0:
        return ["--cpu"]
    return ["--fp16", *(["--memory-efficient-fp16"] if memory_efficient else []), "--distributed-world-size", str(gpus)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print a flag set, one flag a line (for ``mapfile -t`` in the shell scripts)."""
    p = argparse.ArgumentParser(prog="python -m fairseq_resmlp_tools.recipes.fairseq_args", description=__doc__)
    p.add_argument("what", choices=("adam-inverse-sqrt", "label-smoothing", "logging", "user-dir"))
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup", type=int, default=4000)
    p.add_argument("--epsilon", type=float, default=0.1)
    p.add_argument("--log-interval", type=int, default=100)
    a = p.parse_args(argv)
    flags = {
        "adam-inverse-sqrt": lambda: adam_inverse_sqrt(a.lr, a.warmup),
        "label-smoothing": lambda: label_smoothing(a.epsilon),
        "logging": lambda: logging_args(a.log_interval),
        "user-dir": lambda: [str(user_dir())],
    }[a.what]()
    print("\n".join(flags))
    return 0


if __name__ == "__main__":
    sys.exit(main())
