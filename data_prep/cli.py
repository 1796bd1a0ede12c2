"""Command-line pieces shared by the front ends: common options and error reporting."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from data_prep.errors import DataPrepError
from data_prep.layout import Options
from fairseq_resmlp_tools._cli import run_cli


def add_common_args(parser: argparse.ArgumentParser, vocab_size: int, spm_sample: int) -> None:
    """The pipeline options every front end has (defaults that differ are passed in)."""
    g = parser.add_argument_group("pipeline")
    g.add_argument("--out", type=Path, required=True, help="output directory (created; re-runs resume)")
    g.add_argument(
        "--vocab-size", type=int, default=vocab_size, help="joint SentencePiece vocabulary (default %(default)s)"
    )
    g.add_argument(
        "--model-type", choices=("unigram", "bpe"), default="unigram", help="SentencePiece model (default %(default)s)"
    )
    g.add_argument(
        "--character-coverage",
        type=float,
        default=0.9995,
        help="SentencePiece character coverage; rarer characters become byte pieces (default %(default)s)",
    )
    g.add_argument(
        "--max-len",
        type=int,
        default=250,
        help="drop training pairs with a side longer than this many SentencePiece tokens; 0 = no limit (default %(default)s)",
    )
    g.add_argument(
        "--len-ratio",
        type=float,
        default=1.5,
        help="drop training pairs whose token-length ratio exceeds this; 0 = no limit (default %(default)s)",
    )
    g.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="processes for encoding and binarizing (default %(default)s)",
    )
    g.add_argument(
        "--spm-sample",
        type=int,
        default=spm_sample,
        help="train SentencePiece on this many random training pairs (both sides); 0 = all (default %(default)s)",
    )
    g.add_argument(
        "--spm-threads",
        type=int,
        default=8,
        help="SentencePiece training threads; the model depends on this number (not on the cores), "
        "so it is fixed rather than following --workers (default %(default)s)",
    )
    g.add_argument("--dedup", action="store_true", help="drop exact duplicate training pairs")
    g.add_argument(
        "--drop-invalid-utf8",
        action="store_true",
        help="drop training pairs that are not valid UTF-8 instead of stopping with an error",
    )
    g.add_argument("--seed", type=int, default=1, help="seed for sampling (default %(default)s)")
    g.add_argument("--force", action="store_true", help="redo every stage even if it is up to date")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def options_from_args(args: argparse.Namespace, src: str, tgt: str) -> Options:
    """Check the common options and bundle them."""
    if args.vocab_size < 300:
        raise DataPrepError("--vocab-size must be at least 300 (256 byte pieces + specials + characters)")
    if args.workers < 1 or args.spm_threads < 1:
        raise DataPrepError("--workers and --spm-threads must be at least 1")
    return Options.from_args(args, src, tgt)


def cli(
    run: Callable[[argparse.Namespace, List[str]], None],
    parser: argparse.ArgumentParser,
    argv: Optional[Sequence[str]] = None,
) -> int:
    """Parse and run; a DataPrepError (a ToolError) becomes ``error: ...`` and exit status 1."""

    def main(args_list: Optional[Sequence[str]]) -> int:
        run(parser.parse_args(args_list), list(args_list or []))
        return 0

    return run_cli(main, list(sys.argv[1:] if argv is None else argv))
