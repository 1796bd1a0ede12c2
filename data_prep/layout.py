"""Pure path and option data of a data_prep run: :class:`Options` and :class:`Layout`.

Kept free of the pipeline so that the command-line layer (and tools such as ``data_prep.decode``)
can import it without loading the stages.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence, Tuple


@dataclass
class Options:
    """Settings shared by every front end (the common command-line options)."""

    out: Path
    src: str
    tgt: str
    vocab_size: int = 32000
    model_type: str = "unigram"
    character_coverage: float = 0.9995
    max_len: int = 250
    len_ratio: float = 1.5
    workers: int = 1
    spm_sample: int = 1_000_000
    spm_threads: int = 8
    dedup: bool = False
    drop_invalid_utf8: bool = False
    seed: int = 1
    force: bool = False
    progress: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace, src: str, tgt: str, **override: Any) -> "Options":
        """The options of a parsed command line: every field the parser has, by its name."""
        given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        given.update(src=src, tgt=tgt, **override)
        if hasattr(args, "no_progress"):
            given.setdefault("progress", not args.no_progress)
        return cls(**given)


class Layout:
    """Where each file of an output directory lives."""

    def __init__(self, out: Path, src: str, tgt: str, eval_splits: Sequence[str] = ("valid", "test")) -> None:
        self.out = out
        self.src = src
        self.tgt = tgt
        self.langs = (src, tgt)
        self.eval_splits = tuple(eval_splits)
        self.work = out / "work"
        self.stamps = self.work / "stamps"
        self.manifest = out / "manifest.json"
        self.spm_model = out / "spm.model"
        self.spm_vocab = out / "spm.vocab"
        self.fairseq_dict = self.work / "dict.txt"
        self.spm_sample = self.work / "spm_sample.txt"
        self.data_bin = out / "data-bin"
        self.binarize_log = self.work / "binarize.log"
        self.binarize_pid = self.work / "binarize.pid"

    @property
    def splits(self) -> Tuple[str, ...]:
        return ("train",) + self.eval_splits

    def clean(self, lang: str) -> Path:
        """Normalised training text before the length filters."""
        return self.work / f"clean.{lang}"

    def clean_pieces(self, lang: str) -> Path:
        return self.work / f"clean.spm.{lang}"

    def raw(self, split: str, lang: str) -> Path:
        """The prepared text: what the model reads (and what data-bin decodes back to)."""
        return self.out / "raw" / f"{split}.{lang}"

    def ref(self, split: str, lang: str) -> Path:
        """Valid/test text with only sacreBLEU's cleaning: the references to score against."""
        return self.out / "ref" / f"{split}.{lang}"

    def pieces(self, split: str, lang: str) -> Path:
        return self.out / "spm" / f"{split}.{lang}"

    def bin_prefix(self, split: str) -> Path:
        return self.data_bin / f"{split}.{self.src}-{self.tgt}"

    def split_files(self, split: str) -> Tuple[Path, ...]:
        """Every file of ``split`` outside work/ and data-bin/."""
        files = [p for lang in self.langs for p in (self.raw(split, lang), self.pieces(split, lang))]
        if split != "train":
            files += [self.ref(split, lang) for lang in self.langs]
        return tuple(files)
