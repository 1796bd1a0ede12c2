"""WMT14 En-De / En-Fr as in the paper's setup, from the official archives (or a local mirror).

    python -m data_prep.wmt14 --pair en-de --out data/wmt14_en_de [--mirror DIR] [options]

En-De: Europarl v7 + CommonCrawl + News Commentary v9 (fairseq's prepare-wmt14en2de.sh --icml17).
En-Fr: the same plus UN (undoc.2000) and Giga-fren (fairseq's prepare-wmt14en2fr.sh).
Valid: newstest2013. Test: newstest2014 "full" (3003 sentences, from the sgm files of test-full.tgz).
The output serves both directions: the dictionary is joint, and fairseq finds ``train.en-de.*`` for
``--source-lang de --target-lang en`` as well.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from data_prep.clean import clean_train, write_eval_split
from data_prep.cli import add_common_args, cli, options_from_args
from data_prep.download import download, verify_archive
from data_prep.errors import DataPrepError
from data_prep.pipeline import Pipeline, output_lock, reported_os_errors
from data_prep.sgm import aligned_texts, parse_sgm
from data_prep.stages import Stage, StageContext
from data_prep.textio import InputFile, ParallelSource, read_members


@dataclass(frozen=True)
class Archive:
    """One WMT download: its file name, official URL and, where a reference is known, its md5."""

    name: str
    url: str
    md5: Optional[str] = None  # checked on download only: a mirror may hold stand-ins


ARCHIVES: Dict[str, Archive] = {
    "europarl": Archive(
        "training-parallel-europarl-v7.tgz", "http://statmt.org/wmt13/training-parallel-europarl-v7.tgz"
    ),
    "commoncrawl": Archive(
        "training-parallel-commoncrawl.tgz", "http://statmt.org/wmt13/training-parallel-commoncrawl.tgz"
    ),
    "nc-v9": Archive("training-parallel-nc-v9.tgz", "http://statmt.org/wmt14/training-parallel-nc-v9.tgz"),
    "un": Archive("training-parallel-un.tgz", "http://statmt.org/wmt13/training-parallel-un.tgz"),
    "giga-fren": Archive("training-giga-fren.tar", "http://statmt.org/wmt10/training-giga-fren.tar"),
    # newstest2013 in all WMT14 languages (fairseq's en2de script takes the same files from
    # the WMT17 dev.tgz, which has the same layout and can stand in for this one in a mirror).
    "dev": Archive("dev.tgz", "http://statmt.org/wmt14/dev.tgz"),
    # md5 as recorded by sacreBLEU for wmt14/full
    "test": Archive("test-full.tgz", "http://statmt.org/wmt14/test-full.tgz", "a8cd784e006feb32ac6f3d9ec7eb389a"),
}


@dataclass(frozen=True)
class Corpus:
    """A training corpus inside an archive; ``member`` has a ``{lang}`` placeholder."""

    name: str
    archive: str
    member: str

    def file(self, lang: str) -> str:
        return self.member.format(lang=lang)


@dataclass(frozen=True)
class EvalSet:
    """A test set as a pair of sgm files (source, reference) in an archive."""

    archive: str
    src: str
    ref: str


@dataclass(frozen=True)
class PairSpec:
    """Everything that defines one language pair's data."""

    src: str
    tgt: str
    train: Tuple[Corpus, ...]
    valid: EvalSet
    test: EvalSet

    @property
    def archives(self) -> List[str]:
        keys = [c.archive for c in self.train] + [self.valid.archive, self.test.archive]
        return list(dict.fromkeys(keys))

    def members(self, archive: str) -> List[str]:
        """The members this pair reads from ``archive`` (checked before anything is read)."""
        names = [c.file(lang) for c in self.train if c.archive == archive for lang in (self.src, self.tgt)]
        names += [n for e in (self.valid, self.test) if e.archive == archive for n in (e.src, e.ref)]
        return names


def _pair(x: str) -> PairSpec:
    train = [
        Corpus("europarl-v7", "europarl", f"training/europarl-v7.{x}-en.{{lang}}"),
        Corpus("commoncrawl", "commoncrawl", f"commoncrawl.{x}-en.{{lang}}"),
        Corpus("news-commentary-v9", "nc-v9", f"training/news-commentary-v9.{x}-en.{{lang}}"),
    ]
    if x == "fr":
        train += [
            Corpus("un-undoc.2000", "un", "un/undoc.2000.fr-en.{lang}"),
            Corpus("giga-fren", "giga-fren", "giga-fren.release2.fixed.{lang}.gz"),
        ]
    return PairSpec(
        src="en",
        tgt=x,
        train=tuple(train),
        valid=EvalSet("dev", "dev/newstest2013-src.en.sgm", f"dev/newstest2013-ref.{x}.sgm"),
        test=EvalSet("test", f"test-full/newstest2014-{x}en-src.en.sgm", f"test-full/newstest2014-{x}en-ref.{x}.sgm"),
    )


PAIRS: Dict[str, PairSpec] = {"en-de": _pair("de"), "en-fr": _pair("fr")}


def check_md5(path: Path, archive: Archive) -> None:
    """Compare a download with its reference md5, where one is known."""
    if archive.md5 is None:
        return
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != archive.md5:
        raise DataPrepError(f"{archive.name}: md5 {h.hexdigest()} differs from the expected {archive.md5}")


def locate_archives(
    spec: PairSpec, mirror: Optional[Path], download_dir: Path, progress: bool = True
) -> Dict[str, Path]:
    """Paths of the archives a pair needs: from the mirror, or downloaded (resuming) into download_dir."""
    paths: Dict[str, Path] = {}
    if mirror is not None:
        if not mirror.is_dir():
            raise DataPrepError(f"--mirror {mirror}: no such directory")
        missing = []
        for key in spec.archives:
            path = mirror / ARCHIVES[key].name
            if not path.is_file():
                missing.append(f"{path} (download it from {ARCHIVES[key].url})")
            paths[key] = path
        if missing:
            raise DataPrepError("missing archive(s) in the mirror: " + "; ".join(missing))
        return paths
    for key in spec.archives:
        arc = ARCHIVES[key]
        path = download_dir / arc.name
        if not path.is_file():
            print(f"[download] {arc.url}", file=sys.stderr)
            # Reading the archive through is the next stage's job; here only size and md5.
            download(arc.url, path, verify=lambda p, arc=arc: check_md5(p, arc), progress=progress)
        paths[key] = path
    return paths


def verify_archives(
    spec: PairSpec, archives: Dict[str, Path], ours: Optional[Path] = None, progress: bool = False
) -> dict:
    """Read every archive through and check its members; a bad one found in ``ours`` is deleted."""
    checked = {}
    for key, path in archives.items():
        try:
            checked[ARCHIVES[key].name] = verify_archive(path, spec.members(key), progress=progress)
        except DataPrepError as exc:
            if ours is not None and path.parent == ours:
                path.unlink(missing_ok=True)  # our download: the next run fetches it again
                raise DataPrepError(f"{exc} (deleted; run again to download it again)") from None
            raise
    return {"archives": checked}


def train_sources(spec: PairSpec, archives: Dict[str, Path]) -> List[ParallelSource]:
    """The training corpora of a pair, as members of the archives."""
    return [
        ParallelSource(
            c.name, InputFile(archives[c.archive], c.file(spec.src)), InputFile(archives[c.archive], c.file(spec.tgt))
        )
        for c in spec.train
    ]


def read_eval_set(archive: Path, ev: EvalSet) -> Tuple[List[Tuple[str, str]], List[str]]:
    """The (source, reference) segments of a test set's sgm files, and the files' labels."""
    data = read_members(archive, [ev.src, ev.ref])
    labels = [f"{archive}:{ev.src}", f"{archive}:{ev.ref}"]
    src, ref = (parse_sgm(data[name], label) for name, label in zip((ev.src, ev.ref), labels))
    return aligned_texts(src, ref, *labels), labels


def prepare(args: argparse.Namespace, argv: Sequence[str]) -> None:
    pair = args.pair
    if pair not in PAIRS:
        reverse = "-".join(reversed(pair.split("-")))
        if reverse in PAIRS:
            a, b = pair.split("-")
            raise DataPrepError(
                f"use --pair {reverse}: one output serves both directions "
                f"(fairseq-train OUT/data-bin --source-lang {a} --target-lang {b})"
            )
        raise DataPrepError(f"unknown --pair {pair!r}; choose from {', '.join(PAIRS)}")
    spec = PAIRS[pair]
    opts = options_from_args(args, spec.src, spec.tgt)
    with reported_os_errors(), output_lock(opts.out):
        pipe = Pipeline(opts, "data_prep.wmt14", ["python", "-m", "data_prep.wmt14", *argv])
        L = pipe.layout
        download_dir = args.download_dir or opts.out / "downloads"
        archives = locate_archives(spec, args.mirror, download_dir, opts.progress)
        for key, path in archives.items():
            pipe.add_input(path, archive=ARCHIVES[key].name, url=ARCHIVES[key].url)

        ours = None if args.mirror else download_dir
        pipe.run(
            Stage(
                "verify-archives",
                lambda ctx: verify_archives(spec, archives, ours, opts.progress),
                inputs=list(archives.values()),
                options={"pair": pair, "members": {ARCHIVES[k].name: spec.members(k) for k in archives}},
            )
        )

        sources = train_sources(spec, archives)

        def train_text(ctx: StageContext) -> dict:
            return clean_train(
                sources,
                ctx.tmp(L.clean(L.src)),
                ctx.tmp(L.clean(L.tgt)),
                dedup=opts.dedup,
                drop_invalid_utf8=opts.drop_invalid_utf8,
                progress=opts.progress,
                langs=L.langs,
            )

        train_archives = list(dict.fromkeys(archives[c.archive] for c in spec.train))
        pipe.train_text_stage(
            train_text,
            train_archives,
            {"corpora": [s.src.member for s in sources]},
            describe={"corpora": {s.name: {"files": [s.src.label, s.tgt.label]} for s in sources}},
        )

        def eval_text(ctx: StageContext) -> dict:
            stats = {}
            for split, ev in (("valid", spec.valid), ("test", spec.test)):
                pairs, labels = read_eval_set(archives[ev.archive], ev)
                stats[split] = write_eval_split(
                    pairs,
                    (ctx.tmp(L.raw(split, L.src)), ctx.tmp(L.raw(split, L.tgt))),
                    (ctx.tmp(L.ref(split, L.src)), ctx.tmp(L.ref(split, L.tgt))),
                    L.langs,
                    " and ".join(labels),
                )
                stats[split]["files"] = labels
            total = sum(s["lines"] for s in stats.values())
            return {**stats, "lines_in": total, "lines_out": total}

        pipe.eval_text_stage(
            eval_text,
            [archives[spec.valid.archive], archives[spec.test.archive]],
            {"valid": [spec.valid.src, spec.valid.ref], "test": [spec.test.src, spec.test.ref]},
            describe={
                split: {"files": [f"{archives[ev.archive]}:{ev.src}", f"{archives[ev.archive]}:{ev.ref}"]}
                for split, ev in (("valid", spec.valid), ("test", spec.test))
            },
        )
        pipe.run_shared_stages()
        pipe.finish(
            {
                "pair": pair,
                "setup": {
                    "train": [c.name for c in spec.train],
                    "valid": f"newstest2013 ({spec.valid.src}, {spec.valid.ref})",
                    "test": f"newstest2014 full ({spec.test.src}, {spec.test.ref})",
                    "source": f"mirror {args.mirror}" if args.mirror else f"downloaded to {download_dir}",
                },
            }
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.wmt14",
        description="Prepare WMT14 En-De or En-Fr (paper setup) as fairseq data-bin with a joint SentencePiece vocabulary.",
    )
    parser.add_argument("--pair", required=True, help="en-de or en-fr (the output serves both directions)")
    parser.add_argument(
        "--mirror", type=Path, help="read the WMT14 archives from this directory instead of downloading"
    )
    parser.add_argument("--download-dir", type=Path, help="where downloads go (default OUT/downloads)")
    add_common_args(parser, vocab_size=32000, spm_sample=1_000_000)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli(prepare, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
