"""Carve validation and test sets out of one parallel corpus, disjoint by source sentence.

    resmlp-carve --src-file ../shared/data/tatoeba/deu-eng.2018-05-13.en.gz \
        --tgt-file ../shared/data/tatoeba/deu-eng.2018-05-13.de.gz --src en --tgt de \
        --valid 2000 --test 2000 --out prepared/tatoeba-raw
    resmlp-prepare --src en --tgt de --train prepared/tatoeba-raw/train --valid prepared/tatoeba-raw/valid \
        --test prepared/tatoeba-raw/test --out prepared/tatoeba-en-de

Corpora such as Tatoeba list one source sentence with several translations. Split pair by pair, the same
source sentence lands in training and in test, and test BLEU measures memory. Here every pair of one source
sentence (compared after stripping surrounding whitespace) goes to the same split: whole groups are drawn at
random (``--seed``) for validation, then for test, until each has at least the asked number of pairs; the
rest is training. The output is ``OUT/{train,valid,test}.{src,tgt}``, in the corpus's order within each split,
written atomically, with ``OUT/carve.json`` recording the counts, the seed and the inputs' SHA-256.

Input files may be gzip-compressed (``.gz``). Files of different line counts, an empty corpus, or sizes that
leave no training data stop with one line naming the file or the option.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_resmlp_tools._cli import console_script
from fairseq_resmlp_tools._fs import sha256_file, write_json_atomic, write_text_atomic

from .errors import DataPrepError
from .textio import InputFile, ParallelSource, iter_text_pairs

SPLITS = ("train", "valid", "test")


def read_pairs(src_file: Path, tgt_file: Path) -> Tuple[List[str], List[str]]:
    """The line-aligned pairs of a corpus (plain or .gz), read as data_prep reads corpora: strict UTF-8, and errors
    that name the file and line (invalid UTF-8, different lengths, a truncated or missing file)."""
    source = ParallelSource("corpus", InputFile(src_file), InputFile(tgt_file))
    src: List[str] = []
    tgt: List[str] = []
    for _, a, b in iter_text_pairs(source):
        src.append(a.rstrip("\r"))  # type: ignore[union-attr]  (never None without drop_invalid_utf8)
        tgt.append(b.rstrip("\r"))  # type: ignore[union-attr]
    return src, tgt


def carve(
    src: Sequence[str], tgt: Sequence[str], n_valid: int, n_test: int, seed: int
) -> Dict[str, List[Tuple[str, str]]]:
    """Split the pairs into train/valid/test so that no source sentence is in two splits."""
    groups: Dict[str, List[int]] = {}
    for i, line in enumerate(src):
        groups.setdefault(line.strip(), []).append(i)
    keys = list(groups)
    random.Random(seed).shuffle(keys)
    assigned: Dict[int, str] = {}
    pos = 0
    for split, wanted in (("valid", n_valid), ("test", n_test)):
        count = 0
        while count < wanted and pos < len(keys):
            for i in groups[keys[pos]]:
                assigned[i] = split
            count += len(groups[keys[pos]])
            pos += 1
    out: Dict[str, List[Tuple[str, str]]] = {split: [] for split in SPLITS}
    for i, pair in enumerate(zip(src, tgt)):
        out[assigned.get(i, "train")].append(pair)
    return out


def run(args: argparse.Namespace) -> Dict[str, int]:
    if args.valid < 1 or args.test < 1:
        raise DataPrepError("--valid and --test must be at least 1")
    if args.src == args.tgt:
        raise DataPrepError(f"--src and --tgt are both {args.src!r}")
    src, tgt = read_pairs(args.src_file, args.tgt_file)
    if not src:
        raise DataPrepError(f"{args.src_file} is empty")
    splits = carve(src, tgt, args.valid, args.test, args.seed)
    if not splits["train"] or len(splits["test"]) < args.test:
        raise DataPrepError(
            f"{args.src_file}: {len(src)} pairs are too few for --valid {args.valid} and --test {args.test}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    for split, pairs in splits.items():
        write_text_atomic(args.out / f"{split}.{args.src}", "".join(s + "\n" for s, _ in pairs))
        write_text_atomic(args.out / f"{split}.{args.tgt}", "".join(t + "\n" for _, t in pairs))
    counts = {split: len(pairs) for split, pairs in splits.items()}
    record = {
        "counts": counts,
        "seed": args.seed,
        "inputs": {str(p): sha256_file(p) for p in (args.src_file, args.tgt_file)},
        "disjoint_by": f"source sentence ({args.src}), whitespace-stripped",
    }
    write_json_atomic(args.out / "carve.json", record)
    return counts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="resmlp-carve", description=__doc__.split("\n\n")[0])
    p.add_argument("--src-file", type=Path, required=True, help="source side of the corpus (.gz allowed)")
    p.add_argument("--tgt-file", type=Path, required=True, help="target side, line-aligned (.gz allowed)")
    p.add_argument("--src", required=True, help="source language suffix of the output files, e.g. en")
    p.add_argument("--tgt", required=True, help="target language suffix of the output files, e.g. de")
    p.add_argument("--valid", type=int, default=2000, help="at least this many validation pairs (default %(default)s)")
    p.add_argument("--test", type=int, default=2000, help="at least this many test pairs (default %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="seed of the random draw (default %(default)s)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    return p


@console_script
def main(argv: Optional[Sequence[str]] = None) -> int:
    counts = run(build_parser().parse_args(argv))
    print(" ".join(f"{split} {n}" for split, n in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
