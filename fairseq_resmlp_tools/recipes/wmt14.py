"""The ResMLP paper's WMT14 recipe (Touvron et al. 2021, machine translation): train resmlp_6 or resmlp_12 on
En-De or En-Fr, average the last checkpoints, and score newstest2014.

    resmlp-prepare-wmt14 --pair en-de --out prepared/wmt14-en-de          # see docs/data_prep.md
    resmlp-train-wmt14 --pair en-de --arch resmlp_6 --data prepared/wmt14-en-de --dry-run
    resmlp-train-wmt14 --pair en-de --arch resmlp_6 --data prepared/wmt14-en-de      # all visible GPUs
    resmlp-train-wmt14 ... --gpus 4 -- --max-update 50000                            # extra fairseq options

The paper's settings: Adagrad, learning rate 0.2 after 32k updates of linear warm-up, label smoothing 0.1,
dropout 0.15 (En-De) or 0.1 (En-Fr), LayerScale initialised at 0.2, beam 4 at test time, and otherwise "the
setup of Ott et al. (2018)": shared embeddings over a joint vocabulary, fp16, large batches, checkpoint
averaging. Choices this script makes where the paper is silent (all overridable):

* Schedule: fairseq's ``--lr-scheduler fixed --warmup-updates 32000``, which raises the rate linearly from 0
  to ``--lr`` over 32k updates and then holds it constant (fairseq's only built-in "linear warm-up, then
  constant"; ``inverse_sqrt`` would decay after the warm-up, which the paper does not mention).
* Batch: Ott et al.'s large batch, 3584 tokens x 128 GPUs = 458,752 tokens per update (``--batch-tokens``).
  On fewer GPUs ``--update-freq`` accumulates gradients to reach it:
  update_freq = ceil(batch_tokens / (max_tokens x GPUs)), e.g. 8192 tokens x 8 GPUs x 7 = 458,752.
* Length: ``--max-update 100000`` (the paper does not say; 3x the warm-up).
* Checkpoints every 1000 updates (``--save-interval-updates``); the last 10 are averaged for the evaluation.

Multi-GPU training is fairseq's own (``--distributed-world-size N``, one process per GPU, NCCL). Steps
(printed before they run): 1. fairseq-train (console output also in SAVE_DIR/train.log); 2. average the last
``--average-last`` update checkpoints; 3. resmlp-evaluate on newstest2014 (``test``): sacreBLEU,
chrF and the paper's tokenized compound-split BLEU; 4. plot the curves. Killed at any point (even kill -9),
the same command resumes: finished steps are skipped and training continues from checkpoint_last.pt.
More in docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from fairseq_resmlp_tools._cli import ToolError, console_script
from fairseq_resmlp_tools.recipes import fairseq_args, steps
from fairseq_resmlp_tools.recipes.runner import Recipe

PAIRS = ("en-de", "de-en", "en-fr", "fr-en")
OTT_BATCH_TOKENS = 3584 * 128  # fairseq's scaling_nmt recipe: --max-tokens 3584 on 128 GPUs (or 8 x --update-freq 16)


def paper_dropout(pair: str) -> float:
    return 0.15 if "de" in pair.split("-") else 0.1


def update_freq(batch_tokens: int, max_tokens: int, gpus: int) -> int:
    """Gradient accumulation steps so that ``max_tokens`` x ``gpus`` x update_freq >= ``batch_tokens``."""
    return max(1, math.ceil(batch_tokens / (max_tokens * max(1, gpus))))


def train_command(args: argparse.Namespace, src: str, tgt: str, gpus: int) -> List[str]:
    cmd = [
        *fairseq_args.train_command(args.data / "data-bin", args.arch, src, tgt),
        "--layerscale-init",
        "0.2",
        "--dropout",
        str(args.dropout if args.dropout is not None else paper_dropout(args.pair)),
        "--optimizer",
        "adagrad",
        "--lr",
        str(args.lr),
        "--lr-scheduler",
        "fixed",
        "--warmup-updates",
        str(args.warmup),
        *fairseq_args.label_smoothing(0.1),
        "--max-tokens",
        str(args.max_tokens),
        "--update-freq",
        str(update_freq(args.batch_tokens, args.max_tokens, gpus)),
        "--max-update",
        str(args.max_update),
        "--save-dir",
        str(args.save_dir),
        "--save-interval-updates",
        str(args.save_interval_updates),
        "--keep-interval-updates",
        str(max(args.average_last, 1)),
        "--keep-last-epochs",
        "1",
        # Validation (newstest2013) only monitors training: an over-long sentence is skipped there rather than
        # stopping the run. The final evaluation never skips: resmlp-evaluate checks every line is translated.
        "--skip-invalid-size-inputs-valid-test",
        "--required-batch-size-multiple",
        "1",
        "--seed",
        str(args.seed),
        *fairseq_args.logging_args(args.log_interval),
    ]
    if args.valid_bleu:
        cmd += fairseq_args.valid_bleu_args()
    cmd += fairseq_args.device_args(gpus)
    return cmd + list(args.fairseq_args)


def build_recipe(args: argparse.Namespace) -> Recipe:
    src, tgt = args.pair.split("-")
    data_src, data_tgt = steps.recipe_languages(args.data, src, tgt)
    gpus = 0 if args.cpu else (args.gpus if args.gpus is not None else steps.cuda_device_count())
    if args.save_dir is None:
        args.save_dir = Path("runs") / f"wmt14_{args.pair}_{args.arch}"
    save = args.save_dir
    commands = [
        steps.train_step(train_command(args, data_src, data_tgt, gpus), save),
        *steps.finishing_steps(
            save,
            "--num-update-checkpoints",
            args.average_last,
            [
                "--data",
                str(args.data),
                "--split",
                "test",
                "--source-lang",
                data_src,
                "--target-lang",
                data_tgt,
                "--beam",
                str(args.beam),
                "--lenpen",
                str(args.lenpen),
                "--output",
                str(save / "eval" / "test_avg.json"),
                *(["--fp16"] if gpus > 0 else ["--cpu"]),
            ],
            label=f"{args.arch} {args.pair}",
        ),
    ]
    per_update = args.max_tokens * max(gpus, 1) * update_freq(args.batch_tokens, args.max_tokens, gpus)
    device = f"{gpus} GPU(s), fp16" if gpus else "CPU"
    title = (
        f"{args.arch} WMT14 {src}->{tgt} on {device}: up to {per_update:,} tokens per update "
        f"(target {args.batch_tokens:,}), {args.max_update:,} updates"
    )
    return Recipe(save, commands, title)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="resmlp-train-wmt14", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--pair", choices=PAIRS, required=True, help="translation direction, source first")
    p.add_argument("--arch", choices=("resmlp_6", "resmlp_12"), default="resmlp_6", help="model (default %(default)s)")
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="data_prep.wmt14 output directory (manifest.json, spm.model, raw/, data-bin/)",
    )
    p.add_argument("--save-dir", type=Path, help="run directory (default runs/wmt14_PAIR_ARCH)")
    p.add_argument("--gpus", type=int, help="GPUs to train on (default: all visible)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU (only to try the recipe out)")
    p.add_argument("--max-tokens", type=int, default=8192, help="tokens per GPU per forward pass (default %(default)s)")
    p.add_argument(
        "--batch-tokens",
        type=int,
        default=OTT_BATCH_TOKENS,
        help="tokens per update to reach with --update-freq (default %(default)s = 3584 x 128, Ott et al. 2018)",
    )
    p.add_argument("--max-update", type=int, default=100_000, help="training updates (default %(default)s)")
    p.add_argument("--lr", type=float, default=0.2, help="Adagrad learning rate after warm-up (default %(default)s)")
    p.add_argument("--warmup", type=int, default=32_000, help="linear warm-up updates (default %(default)s)")
    p.add_argument("--dropout", type=float, help="dropout (default 0.15 for En-De, 0.1 for En-Fr)")
    p.add_argument(
        "--save-interval-updates", type=int, default=1000, help="checkpoint every N updates (default %(default)s)"
    )
    p.add_argument(
        "--average-last", type=int, default=10, help="average the last N update checkpoints (default %(default)s)"
    )
    steps.add_recipe_args(p, log_interval=100)
    return p


@console_script
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = steps.parse_recipe_args(build_parser(), argv)
    if args.gpus is not None and args.gpus < 1:
        raise ToolError("--gpus must be at least 1 (use --cpu for the CPU)")
    if args.max_tokens < 1 or args.batch_tokens < 1:
        raise ToolError("--max-tokens and --batch-tokens must be positive")
    return steps.run_recipe(build_recipe(args), args.dry_run, args.save_dir / "eval" / "test_avg.json")


if __name__ == "__main__":
    sys.exit(main())
