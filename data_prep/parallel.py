"""The same pipeline for any raw parallel corpus given as file prefixes.

    python -m data_prep.parallel --src en --tgt de --out DIR \\
        --train PREFIX [--train PREFIX ...] (--valid PREFIX | --valid-size N) [--test PREFIX | --test-size N]

A prefix names two aligned files, ``PREFIX.<src>`` and ``PREFIX.<tgt>``, each optionally gzipped
(``PREFIX.<lang>.gz``). Corpora that come without a split (Tatoeba) can hold out random training
pairs as valid/test with ``--valid-size``/``--test-size``; training pairs that share a source or
target sentence with a held-out pair are then dropped from train, so nothing leaks.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from array import array
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from data_prep.clean import HeldOut, clean_train, normalize_line, write_eval_split
from data_prep.cli import add_common_args, cli, options_from_args
from data_prep.errors import DataPrepError
from data_prep.pipeline import Pipeline, output_lock, reported_os_errors
from data_prep.stages import StageContext
from data_prep.textio import ParallelSource, find_prefix_file, iter_text_pairs


def prefix_source(prefix: str, src: str, tgt: str) -> ParallelSource:
    """The corpus at ``prefix``: ``PREFIX.src`` and ``PREFIX.tgt`` (or their .gz)."""
    return ParallelSource(Path(prefix).name, find_prefix_file(prefix, src), find_prefix_file(prefix, tgt))


def choose_heldout(
    sources: Sequence[ParallelSource], sizes: Dict[str, int], seed: int, drop_invalid_utf8: bool = False
) -> Dict[str, List[int]]:
    """Pick random training lines (non-empty on both sides) for each held-out split.

    Line numbers count from 0 over all sources in order; each split's list is sorted.
    """
    candidates = array("q")
    index = -1
    for source in sources:
        for _, a, b in iter_text_pairs(source, drop_invalid_utf8):
            index += 1
            if a is not None and b is not None and normalize_line(a)[0] and normalize_line(b)[0]:
                candidates.append(index)
    wanted = sum(sizes.values())
    if wanted > len(candidates):
        raise DataPrepError(
            f"cannot hold out {wanted} pairs: the training data has only {len(candidates)} non-empty pairs"
        )
    picked = random.Random(seed).sample(range(len(candidates)), wanted)
    chosen: Dict[str, List[int]] = {}
    start = 0
    for split, n in sizes.items():
        chosen[split] = sorted(candidates[i] for i in picked[start : start + n])
        start += n
    return chosen


def heldout_pairs(
    sources: Sequence[ParallelSource], lines: Sequence[int], drop_invalid_utf8: bool = False
) -> Iterator[Tuple[Optional[str], Optional[str]]]:
    """The (decoded) pairs at the given global line numbers, in line order."""
    wanted = set(lines)
    index = -1
    for source in sources:
        for _, a, b in iter_text_pairs(source, drop_invalid_utf8):
            index += 1
            if index in wanted:
                yield a, b


def heldout_texts(paths: Sequence[Path]) -> set:
    """Held-out sentences as training normalisation would write them, for the overlap check."""
    lines = (line for p in paths for line in p.read_text(encoding="utf-8").split("\n") if line)
    return {normalize_line(line)[0] for line in lines}


def prepare(args: argparse.Namespace, argv: Sequence[str]) -> None:
    if args.src == args.tgt:
        raise DataPrepError("--src and --tgt must differ")
    opts = options_from_args(args, args.src, args.tgt)
    train = [prefix_source(p, args.src, args.tgt) for p in args.train]
    given: Dict[str, ParallelSource] = {}
    sizes: Dict[str, int] = {}
    for split in ("valid", "test"):
        prefix, size = getattr(args, split), getattr(args, f"{split}_size")
        if size < 0:
            raise DataPrepError(f"--{split}-size must not be negative")
        if prefix and size:
            raise DataPrepError(f"give either --{split} or --{split}-size, not both")
        if prefix:
            given[split] = prefix_source(prefix, args.src, args.tgt)
        elif size:
            sizes[split] = size
    if "valid" not in given and "valid" not in sizes:
        raise DataPrepError("a validation set is needed: --valid PREFIX or --valid-size N")
    eval_splits = [s for s in ("valid", "test") if s in given or s in sizes]

    with reported_os_errors(), output_lock(opts.out):
        pipe = Pipeline(opts, "data_prep.parallel", ["python", "-m", "data_prep.parallel", *argv], eval_splits)
        L = pipe.layout
        train_files = [f.path for s in train for f in (s.src, s.tgt)]
        eval_files = [f.path for s in given.values() for f in (s.src, s.tgt)]
        for path in dict.fromkeys(train_files + eval_files):
            pipe.add_input(path)
        heldout_file = L.work / "heldout.json"

        def eval_text(ctx: StageContext) -> dict:
            stats: Dict[str, dict] = {}
            chosen = choose_heldout(train, sizes, opts.seed, opts.drop_invalid_utf8) if sizes else {}
            for split in eval_splits:
                if split in given:
                    source = given[split]
                    pairs = ((a, b) for _, a, b in iter_text_pairs(source))
                    files = [source.src.label, source.tgt.label]
                else:
                    pairs = heldout_pairs(train, chosen[split], opts.drop_invalid_utf8)
                    files = [f"held out from train ({len(chosen[split])} random pairs)"]
                stats[split] = write_eval_split(
                    pairs,
                    (ctx.tmp(L.raw(split, L.src)), ctx.tmp(L.raw(split, L.tgt))),
                    (ctx.tmp(L.ref(split, L.src)), ctx.tmp(L.ref(split, L.tgt))),
                    L.langs,
                    " and ".join(files),
                )
                stats[split]["files"] = files
            if sizes:
                ctx.tmp(heldout_file).write_text(json.dumps(chosen), encoding="utf-8")
            total = sum(s["lines"] for s in stats.values())
            return {**stats, "lines_in": total, "lines_out": total}

        pipe.eval_text_stage(
            eval_text,
            train_files + eval_files if sizes else eval_files,
            # which pairs are held out depends on the seed and on which pairs count as readable
            {
                "heldout_sizes": sizes,
                "seed": opts.seed if sizes else None,
                "drop_invalid_utf8": opts.drop_invalid_utf8 if sizes else None,
            },
            extra_outputs=[heldout_file] if sizes else [],
            describe={split: {"files": [source.src.label, source.tgt.label]} for split, source in given.items()},
        )

        def train_text(ctx: StageContext) -> dict:
            heldout = None
            if sizes:
                lines = {i for idx in json.loads(heldout_file.read_text(encoding="utf-8")).values() for i in idx}
                heldout = HeldOut(
                    lines,
                    heldout_texts([L.raw(s, L.src) for s in sizes]),
                    heldout_texts([L.raw(s, L.tgt) for s in sizes]),
                )
            return clean_train(
                train,
                ctx.tmp(L.clean(L.src)),
                ctx.tmp(L.clean(L.tgt)),
                dedup=opts.dedup,
                drop_invalid_utf8=opts.drop_invalid_utf8,
                heldout=heldout,
                progress=opts.progress,
                langs=L.langs,
            )

        held_inputs = [heldout_file] + [L.raw(s, lang) for s in sizes for lang in L.langs] if sizes else []
        pipe.train_text_stage(
            train_text,
            train_files + held_inputs,
            {"train": [s.name for s in train]},
            describe={"corpora": {s.name: {"files": [s.src.label, s.tgt.label]} for s in train}},
        )
        pipe.run_shared_stages()
        pipe.finish(
            {
                "corpus": {
                    "train": list(args.train),
                    **{s: getattr(args, s) for s in given},
                    **{f"{s}_size": n for s, n in sizes.items()},
                }
            }
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.parallel",
        description="Clean, SentencePiece-encode and binarize a raw parallel corpus for fairseq.",
    )
    parser.add_argument("--src", required=True, help="source language suffix, e.g. en")
    parser.add_argument("--tgt", required=True, help="target language suffix, e.g. de")
    parser.add_argument(
        "--train",
        action="append",
        required=True,
        metavar="PREFIX",
        help="training corpus PREFIX (reads PREFIX.SRC and PREFIX.TGT, optionally .gz); repeatable",
    )
    parser.add_argument("--valid", metavar="PREFIX", help="validation corpus prefix")
    parser.add_argument("--test", metavar="PREFIX", help="test corpus prefix")
    parser.add_argument(
        "--valid-size", type=int, default=0, metavar="N", help="instead of --valid: hold out N random training pairs"
    )
    parser.add_argument(
        "--test-size", type=int, default=0, metavar="N", help="instead of --test: hold out N random training pairs"
    )
    add_common_args(parser, vocab_size=8000, spm_sample=1_000_000)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli(prepare, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
