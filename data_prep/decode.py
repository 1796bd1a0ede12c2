"""Turn SentencePiece pieces (e.g. fairseq-generate hypotheses) back into plain text.

    fairseq-generate OUT/data-bin --path checkpoint.pt --gen-subset test ... > gen.out
    python -m data_prep.decode --spm OUT/spm.model --generate gen.out > hyp.txt
    sacrebleu OUT/raw/test.de < hyp.txt

fairseq's own ``--post-process sentencepiece`` (and ``--bpe sentencepiece``) only replaces ``▁`` by
spaces; it leaves byte-fallback pieces such as ``<0xE2>`` in the text. Decoding with the model does not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, TextIO

import sentencepiece as spm

from data_prep.cli import cli
from data_prep.errors import DataPrepError
from fairseq_resmlp_tools.fairseq_io import order_hypotheses, parse_generate_output


def hypotheses(lines: Iterable[str], where: str = "fairseq-generate output") -> List[str]:
    """The ``H-<id>`` lines of fairseq-generate output, in id order; every id from 0 exactly once."""
    return order_hypotheses(parse_generate_output(lines), None, where)


def decode_lines(model: Path, pieces: Iterable[str]) -> Iterator[str]:
    """Decode lines of space-separated pieces with the SentencePiece model."""
    sp = spm.SentencePieceProcessor(model_file=str(model))
    for line in pieces:
        yield sp.decode(line.split())


def run(args: argparse.Namespace, argv: Sequence[str]) -> None:
    if not args.spm.is_file():
        raise DataPrepError(f"{args.spm}: no such SentencePiece model")
    source: TextIO = open(args.generate or args.input, encoding="utf-8") if (args.generate or args.input) else sys.stdin
    with source:
        lines = hypotheses(source, str(args.generate)) if args.generate else [line.rstrip("\n") for line in source]
    for text in decode_lines(args.spm, lines):
        sys.stdout.write(text + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_prep.decode", description=__doc__.splitlines()[0])
    parser.add_argument("--spm", type=Path, required=True, help="OUT/spm.model")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--generate", type=Path, help="fairseq-generate output: decode its H- lines in sentence order")
    group.add_argument("--input", type=Path, help="a file of piece lines (default: stdin)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
