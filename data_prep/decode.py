"""Turn SentencePiece pieces (e.g. fairseq-generate hypotheses) back into plain text.

    fairseq-generate OUT/data-bin --path checkpoint.pt --gen-subset test ... > gen.out
    python -m data_prep.decode --spm OUT/spm.model --generate gen.out > hyp.txt
    sacrebleu OUT/raw/test.de < hyp.txt

fairseq's own ``--post-process sentencepiece`` (and ``--bpe sentencepiece``) only replaces ``▁`` by
spaces; it leaves byte-fallback pieces such as ``<0xE2>`` in the text. Decoding with the model does not.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, TextIO

import sentencepiece as spm

from data_prep.errors import DataPrepError
from data_prep.cli import cli

_HYPOTHESIS_RE = re.compile(r"^H-(\d+)\t[^\t]*\t(.*)$")


def hypotheses(lines: Iterable[str]) -> List[str]:
    """The ``H-<id>`` lines of fairseq-generate output, in id order (first hypothesis per id)."""
    found = {}
    for line in lines:
        m = _HYPOTHESIS_RE.match(line.rstrip("\n"))
        if m and int(m.group(1)) not in found:
            found[int(m.group(1))] = m.group(2)
    if not found:
        raise DataPrepError("no H-<id> lines found: is this fairseq-generate output?")
    missing = sorted(set(range(max(found) + 1)) - set(found))
    if missing:
        raise DataPrepError(f"fairseq-generate output lacks {len(missing)} sentence(s), e.g. id {missing[0]}")
    return [found[i] for i in range(len(found))]


def decode_lines(model: Path, pieces: Iterable[str]) -> Iterator[str]:
    """Decode lines of space-separated pieces with the SentencePiece model."""
    sp = spm.SentencePieceProcessor(model_file=str(model))
    for line in pieces:
        yield sp.decode_pieces(line.split())


def run(args: argparse.Namespace, argv: Sequence[str]) -> None:
    if not args.spm.is_file():
        raise DataPrepError(f"{args.spm}: no such SentencePiece model")
    source: TextIO = open(args.generate or args.input, encoding="utf-8") if (args.generate or args.input) else sys.stdin
    with source:
        lines = hypotheses(source) if args.generate else [line.rstrip("\n") for line in source]
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
