"""A toy prepared-data directory in data_prep's layout, for smoke tests of the evaluation and the recipes.

The "language pair" is a word-for-word cipher over a small vocabulary, so a tiny model learns something in
seconds on a CPU. Layout (the same names as ``python -m data_prep.parallel`` writes)::

    OUT/manifest.json   {"languages": {"src": ..., "tgt": ...}, ...}
    OUT/spm.model       joint SentencePiece model
    OUT/raw/{train,valid,test}.{src,tgt}
    OUT/data-bin/       fairseq-preprocess --joined-dictionary output

    python -m fairseq_resmlp_tools.toy_data OUT [--train 2000 --valid 40 --test 21]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_resmlp_tools._cli import ToolError, console_script
from fairseq_resmlp_tools._fs import sha256_file, write_json_atomic
from fairseq_resmlp_tools.fairseq_io import fairseq_command

_WORDS = (
    "the a small big red blue green old young man woman dog cat child house street car ball tree water "
    "runs sits plays looks walks holds eats sees in on under near with and while"
).split()


def _cipher(word: str) -> str:
    # A deterministic, invertible word mapping: reversed letters plus a suffix, so target words differ
    # from source words but keep a one-to-one correspondence.
    return word[::-1] + "en"


def toy_pairs(n: int, rng: random.Random) -> List[Tuple[str, str]]:
    """``n`` (source, target) sentence pairs: 2-9 words, some hyphenated compounds, target = cipher of source."""
    pairs = []
    for _ in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(2, 9))]
        if rng.random() < 0.2:  # some hyphenated compounds, as in real text
            i = rng.randrange(len(words) - 1)
            words[i : i + 2] = [f"{words[i]}-{words[i + 1]}"]
        src = " ".join(words).capitalize() + "."
        tgt = " ".join("-".join(_cipher(p) for p in w.split("-")) for w in words).capitalize() + "."
        pairs.append((src, tgt))
    return pairs


def write_toy_corpus(folder: Path, sizes: Dict[str, int], seed: int = 0) -> Dict[str, Tuple[List[str], List[str]]]:
    """Write ``{split}.src`` / ``{split}.tgt`` (one sentence a line) to ``folder``; returns {split: (sources, targets)}."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    corpus = {}
    for split, n in sizes.items():
        pairs = toy_pairs(n, rng)
        corpus[split] = ([s for s, _ in pairs], [t for _, t in pairs])
        for side, lines in zip(("src", "tgt"), corpus[split]):
            (folder / f"{split}.{side}").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return corpus


def build_toy_data(
    out: Path,
    n_train: int = 2000,
    n_valid: int = 40,
    n_test: int = 21,
    src: str = "en",
    tgt: str = "de",
    vocab_size: int = 120,
    seed: int = 0,
) -> Path:
    """Write a complete toy data directory to ``out`` and return it."""
    import sentencepiece as spm

    rng = random.Random(seed)
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    for split, n in sizes.items():
        pairs = toy_pairs(n, rng)
        (raw / f"{split}.{src}").write_text("".join(s + "\n" for s, _ in pairs), encoding="utf-8")
        (raw / f"{split}.{tgt}").write_text("".join(t + "\n" for _, t in pairs), encoding="utf-8")

    spm.SentencePieceTrainer.train(
        input=[str(raw / f"train.{src}"), str(raw / f"train.{tgt}")],
        model_prefix=str(out / "spm"),
        vocab_size=vocab_size,
        character_coverage=1.0,
        model_type="unigram",
        hard_vocab_limit=False,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    pieces = out / "spm"
    pieces.mkdir(exist_ok=True)
    for split in sizes:
        for lang in (src, tgt):
            lines = (raw / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()
            (pieces / f"{split}.{lang}").write_text(
                "".join(" ".join(sp.encode(line, out_type=str)) + "\n" for line in lines), encoding="utf-8"
            )

    cmd = [
        fairseq_command("fairseq-preprocess"),
        "--source-lang",
        src,
        "--target-lang",
        tgt,
        "--trainpref",
        str(pieces / "train"),
        "--validpref",
        str(pieces / "valid"),
        "--testpref",
        str(pieces / "test"),
        "--destdir",
        str(out / "data-bin"),
        "--joined-dictionary",
        "--workers",
        "1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolError(f"fairseq-preprocess failed:\n{proc.stderr[-2000:]}")
    manifest = {
        "format": 1,
        "tool": "fairseq_resmlp_tools.toy_data",
        "languages": {"src": src, "tgt": tgt},
        "line_counts": {split: {"binarized": n} for split, n in sizes.items()},
        "spm": {"model": "spm.model"},
        "fairseq": {"data_bin": "data-bin", "joined_dictionary": True},
        # As data_prep records its outputs: what resmlp-evaluate checks the SentencePiece model and dictionaries by.
        "outputs": {
            p.relative_to(out).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in [out / "spm.model", *sorted((out / "data-bin").glob("dict.*.txt"))]
        },
    }
    write_json_atomic(out / "manifest.json", manifest)
    return out


@console_script
def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="output directory")
    p.add_argument("--train", type=int, default=2000, help="training pairs (default %(default)s)")
    p.add_argument("--valid", type=int, default=40, help="validation pairs (default %(default)s)")
    p.add_argument("--test", type=int, default=21, help="test pairs (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    build_toy_data(args.out, args.train, args.valid, args.test, seed=args.seed)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
