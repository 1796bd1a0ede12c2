"""A training-speed data set with real sentence lengths: joint SentencePiece over parallel text, binarised with a
dictionary padded to a WMT-size vocabulary (the model's output layer then costs what it costs on WMT14).

    python -m fairseq_resmlp_tools.bench.train_data --src newstest2014.en --tgt newstest2014.de \\
        --vocab 8000 --dict-size 32000 --out runs/bench-data-32k

Several --src/--tgt pairs may be given (comma-separated, in the same order). The pieces are real; the padding
entries (``madeupwordNNNN``) never occur in the data, as with fairseq's own --padding-factor.
"""

import argparse
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence


def build(
    srcs: List[Path],
    tgts: List[Path],
    vocab: int,
    dict_size: int,
    out: Path,
    repeat: int = 1,
    test: Optional[List[Path]] = None,
) -> Path:
    import sentencepiece as spm

    out.mkdir(parents=True, exist_ok=True)
    raw = {"src": out / "train.raw.src", "tgt": out / "train.raw.tgt"}
    for side, files in (("src", srcs), ("tgt", tgts)):
        with open(raw[side], "w", encoding="utf-8") as f:
            for path in files:
                f.write(path.read_text(encoding="utf-8"))
    if sum(1 for _ in open(raw["src"], encoding="utf-8")) != sum(1 for _ in open(raw["tgt"], encoding="utf-8")):
        raise SystemExit(f"error: {raw['src']} and {raw['tgt']} have different line counts")
    spm.SentencePieceTrainer.train(
        input=f"{raw['src']},{raw['tgt']}",
        model_prefix=str(out / "spm"),
        vocab_size=vocab,
        character_coverage=1.0,
        model_type="unigram",
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    counts = {}
    for side in ("src", "tgt"):
        # Repeated so that an epoch lasts many updates: epoch boundaries would otherwise dominate a speed test.
        lines = raw[side].read_text(encoding="utf-8").splitlines() * repeat
        with open(out / f"train.spm.{side}", "w", encoding="utf-8") as f:
            for line in lines:
                pieces = sp.encode(line, out_type=str)
                f.write(" ".join(pieces) + "\n")
                for p in pieces:
                    counts[p] = counts.get(p, 0) + 1
    # fairseq's Dictionary adds 4 specials; pad the real pieces up to dict_size entries in all.
    entries = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    lines = [f"{p} {c}" for p, c in entries]
    lines += [f"madeupword{i:05d} 0" for i in range(max(0, dict_size - 4 - len(lines)))]
    (out / "dict.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    extra = []
    if test:  # a test split in the same SentencePiece and dictionary (for fairseq-generate timings)
        for side, path in zip(("src", "tgt"), test):
            lines = path.read_text(encoding="utf-8").splitlines()
            (out / f"test.spm.{side}").write_text(
                "".join(" ".join(sp.encode(x, out_type=str)) + "\n" for x in lines), encoding="utf-8"
            )
        extra = ["--testpref", str(out / "test.spm")]
    data_bin = out / "data-bin"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "fairseq_cli.preprocess",
            "--source-lang",
            "src",
            "--target-lang",
            "tgt",
            "--trainpref",
            str(out / "train.spm"),
            "--validpref",
            str(out / "train.spm"),
            "--srcdict",
            str(out / "dict.txt"),
            "--joined-dictionary",
            "--destdir",
            str(data_bin),
            "--workers",
            "8",
            *extra,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return data_bin


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="source text files, comma-separated")
    p.add_argument("--tgt", required=True, help="target text files, comma-separated, same order")
    p.add_argument("--vocab", type=int, default=8000, help="SentencePiece vocabulary")
    p.add_argument("--dict-size", type=int, default=32000, help="fairseq dictionary size after padding")
    p.add_argument("--repeat", type=int, default=1, help="repeat the corpus this many times (longer epochs)")
    p.add_argument("--test", default=None, help="SRC,TGT text files binarised as the test split")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    srcs, tgts = [Path(x) for x in a.src.split(",")], [Path(x) for x in a.tgt.split(",")]
    for path in srcs + tgts:
        if not path.is_file():
            p.error(f"{path} does not exist")
    if len(srcs) != len(tgts):
        p.error("--src and --tgt need the same number of files")
    test = [Path(x) for x in a.test.split(",")] if a.test else None
    if test and (len(test) != 2 or not all(x.is_file() for x in test)):
        p.error(f"--test needs two existing files SRC,TGT, got {a.test}")
    print(build(srcs, tgts, a.vocab, a.dict_size, a.out, a.repeat, test))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
