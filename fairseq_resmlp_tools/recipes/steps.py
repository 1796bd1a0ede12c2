"""The steps every recipe shares: training (with checkpoint repair) and average / evaluate / plot after it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from fairseq_resmlp_tools._cli import ToolError
from fairseq_resmlp_tools.prepared_data import data_languages
from fairseq_resmlp_tools.recipes.checkpoints import repair_last_checkpoint
from fairseq_resmlp_tools.recipes.runner import Recipe, Step


def cuda_device_count() -> int:
    """GPUs visible to torch (0 without CUDA)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA set-up means CPU
        return 0


def recipe_languages(data: Path, source_lang: Optional[str], target_lang: Optional[str]) -> Tuple[str, str]:
    """(source, target) of a data_prep output directory that a recipe trains on; a ToolError if unknown."""
    if not data.is_dir():
        raise ToolError(f"--data {data} is not a directory (prepare it with resmlp-prepare or resmlp-prepare-wmt14)")
    if not (data / "data-bin").is_dir():
        raise ToolError(f"--data {data} has no data-bin/ directory: is it a data_prep output directory?")
    src, tgt = data_languages(data, source_lang, target_lang)
    if not src or not tgt:
        raise ToolError(f"cannot tell the languages of {data} (no manifest.json): give --source-lang and --target-lang")
    return src, tgt


def train_step(command: List[str], save: Path) -> Step:
    """The training step of a recipe: restores a truncated checkpoint_last.pt before (re)starting fairseq."""

    def repair() -> None:
        message = repair_last_checkpoint(save)
        if message:
            print(f"note: {message}", flush=True)

    return Step("train", command, log=save / "train.log", before=repair)


def tool(module: str) -> List[str]:
    """The command that runs one of the tools with this interpreter (works from a checkout or an install)."""
    return [sys.executable, "-m", f"fairseq_resmlp_tools.{module}"]


def finishing_steps(
    save: Path, average_flag: str, average_last: int, evaluate_args: List[str], label: str
) -> List[Step]:
    """What every recipe does after training: average the last checkpoints, evaluate the average, plot.

    ``average_flag`` is ``--num-epoch-checkpoints`` or ``--num-update-checkpoints``; ``evaluate_args`` are the
    data/split/language/beam options of resmlp-evaluate.
    """
    plot = Step("plot", [*tool("plot"), str(save / "train.log"), "--labels", label, "-o", str(save / "training.png")])
    if average_last == 0:  # no averaging: evaluate the last checkpoint (short runs with few epoch checkpoints)
        return [Step("evaluate", [*tool("evaluate"), str(save / "checkpoint_last.pt"), *evaluate_args]), plot]
    average = save / f"checkpoint_avg{average_last}.pt"
    return [
        Step(
            "average",
            [
                *tool("average"),
                "--inputs",
                str(save),
                average_flag,
                str(average_last),
                "--allow-fewer",
                "--output",
                str(average),
            ],
        ),
        Step("evaluate", [*tool("evaluate"), str(average), *evaluate_args]),
        plot,
    ]


def parse_recipe_args(p: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parse a recipe's command line; ``fairseq_args`` are the options after ``--`` (without it)."""
    args = p.parse_args(argv)
    if args.fairseq_args and args.fairseq_args[0] == "--":  # argparse.REMAINDER keeps the separator
        args.fairseq_args = args.fairseq_args[1:]
    return args


def run_recipe(recipe: Recipe, dry_run: bool, result: Path) -> int:
    """Print the recipe's commands, run them unless ``dry_run``, and name the result file."""
    recipe.run(dry_run=dry_run)
    if not dry_run:
        print(f"result: {result}")
    return 0


def add_recipe_args(p: argparse.ArgumentParser, log_interval: int) -> None:
    """The options every recipe has; call last (the fairseq-train options after ``--`` end the command line)."""
    p.add_argument(
        "--beam", type=int, default=4, help="beam size for the evaluation (default %(default)s, the paper's)"
    )
    p.add_argument(
        "--no-valid-bleu",
        dest="valid_bleu",
        action="store_false",
        help="do not compute validation BLEU during training (faster; the plot then has no BLEU)",
    )
    p.add_argument("--lenpen", type=float, default=1.0, help="length penalty for the evaluation (default %(default)s)")
    p.add_argument(
        "--log-interval",
        type=int,
        default=log_interval,
        help="updates between training log records (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (default %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    p.add_argument(
        "fairseq_args",
        nargs=argparse.REMAINDER,
        help="after --: more fairseq-train options (they win over the recipe's)",
    )
