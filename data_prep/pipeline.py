"""The pipeline both front ends share: clean -> SentencePiece -> filter -> binarize -> manifest.

A front end (``wmt14``, ``parallel``) runs its own text stages, which must produce the normalised
training text ``work/clean.{src,tgt}`` and the normalised evaluation text ``raw/{valid,test}.*``;
:meth:`Pipeline.run_shared_stages` does the rest. Output layout (see docs/data_prep.md)::

    OUT/manifest.json              counts, drops, checksums, versions
    OUT/spm.model, OUT/spm.vocab   joint SentencePiece model
    OUT/raw/{train,valid,test}.L   the prepared text (train: exactly the binarized pairs)
    OUT/ref/{valid,test}.L         valid/test with only sacreBLEU's cleaning: the references
    OUT/spm/{train,valid,test}.L   the same as SentencePiece pieces
    OUT/data-bin/                  fairseq-preprocess output (joined dictionary)
    OUT/work/                      intermediates, stage stamps, logs
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Optional, Sequence

from data_prep import binarize, children, report, subword
from data_prep.clean import filter_lengths
from data_prep.errors import DataPrepError
from data_prep.layout import Layout, Options
from data_prep.stages import (
    ChecksumCache,
    Stage,
    StageContext,
    StageResult,
    StageRunner,
    remove_path,
    write_json_atomic,
)
from data_prep.textio import count_lines
from fairseq_resmlp_tools import _fs

__all__ = ["Layout", "Options", "Pipeline", "output_lock", "reported_os_errors"]

# Bump when a stage's code changes what it writes, so that old stamps stop matching.
STAGE_VERSIONS = {
    "train-text": 2,
    "eval-text": 2,
    "spm-sample": 1,
    "spm-train": 1,
    "encode": 1,
    "filter": 1,
    "binarize": 1,
}


def output_lock(out: Path) -> ContextManager[None]:
    """One run per output directory at a time: two would overwrite each other's temporary files."""
    return _fs.output_lock(out, what="data_prep run")


@contextmanager
def reported_os_errors() -> Iterator[None]:
    """Turn a file-system error (unwritable or impossible path, full disk) into one line naming the path."""
    try:
        yield
    except OSError as exc:
        where = exc.filename if exc.filename is not None else "writing the output"
        raise DataPrepError(f"{where}: {exc.strerror or exc}") from None


class Pipeline:
    """Runs stages into one output directory and writes the manifest and summary at the end."""

    def __init__(
        self,
        opts: Options,
        tool: str,
        argv: Sequence[str],
        eval_splits: Sequence[str] = ("valid", "test"),
        log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
    ) -> None:
        self.opts = opts
        self.tool = tool
        self.argv = list(argv)
        self.log = log
        self.layout = Layout(opts.out, opts.src, opts.tgt, eval_splits)
        self.layout.work.mkdir(parents=True, exist_ok=True)
        # A run killed with -9 on a system without parent-death signals may have left its child.
        children.end_leftover_group(self.layout.binarize_pid)
        self.cache = ChecksumCache(self.layout.work / "checksums.json")
        self.runner = StageRunner(opts.out, self.layout.stamps, self.cache, force=opts.force, log=log)
        self.results: List[StageResult] = []
        self.inputs: List[Dict[str, Any]] = []  # external input files, for the manifest
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    def run(self, stage: Stage) -> StageResult:
        options = dict(stage.options)
        options.setdefault("stage_version", STAGE_VERSIONS.get(stage.name, 1))
        stage.options = options
        result = self.runner.run(stage)
        self.results.append(result)
        return result

    def add_input(self, path: Path, **extra: Any) -> None:
        """An external input file; its size and checksum are taken at the end, checked against what stages read."""
        self.inputs.append({"path": str(path), **extra})

    # The front end supplies these two stages' actions; the helpers above do the work.

    def train_text_stage(
        self,
        action: Callable[[StageContext], Dict[str, Any]],
        inputs: Sequence[Path],
        options: Dict[str, Any],
        describe: Optional[Dict[str, Any]] = None,
    ) -> StageResult:
        """``describe``: statistics naming this run's input files (see :class:`Stage`)."""
        L = self.layout
        return self.run(
            Stage(
                "train-text",
                action,
                inputs=inputs,
                outputs=[L.clean(L.src), L.clean(L.tgt)],
                options={"dedup": self.opts.dedup, "drop_invalid_utf8": self.opts.drop_invalid_utf8, **options},
                describe=describe or {},
            )
        )

    def eval_text_stage(
        self,
        action: Callable[[StageContext], Dict[str, Any]],
        inputs: Sequence[Path],
        options: Dict[str, Any],
        extra_outputs: Sequence[Path] = (),
        describe: Optional[Dict[str, Any]] = None,
    ) -> StageResult:
        L = self.layout
        outputs = [p for s in L.eval_splits for lang in L.langs for p in (L.raw(s, lang), L.ref(s, lang))]
        result = self.run(
            Stage(
                "eval-text",
                action,
                inputs=inputs,
                outputs=outputs + list(extra_outputs),
                options=options,
                describe=describe or {},
            )
        )
        # A split this run does not have must not linger from an earlier run with other options.
        for split in ("valid", "test"):
            if split not in L.eval_splits:
                for path in L.split_files(split):
                    remove_path(path)
        return result

    def run_shared_stages(self) -> None:
        """SentencePiece sample + training, encoding, length filter and binarization."""
        L, o = self.layout, self.opts
        langs = L.langs

        def sample(ctx: StageContext) -> Dict[str, Any]:
            n = subword.sample_pairs(L.clean(L.src), L.clean(L.tgt), ctx.tmp(L.spm_sample), o.spm_sample, o.seed)
            return {"pairs": n, "sentences": 2 * n}

        self.run(
            Stage(
                "spm-sample",
                sample,
                inputs=[L.clean(lang) for lang in langs],
                outputs=[L.spm_sample],
                options={"spm_sample": o.spm_sample, "seed": o.seed},
            )
        )

        def train(ctx: StageContext) -> Dict[str, Any]:
            prefix = L.work / ".spm-training"
            subword.train_model(
                L.spm_sample, prefix, o.vocab_size, o.model_type, o.character_coverage, o.spm_threads, o.seed
            )
            os.replace(f"{prefix}.model", ctx.tmp(L.spm_model))
            os.replace(f"{prefix}.vocab", ctx.tmp(L.spm_vocab))
            size = subword.write_fairseq_dict(ctx.tmp(L.spm_vocab), ctx.tmp(L.fairseq_dict))
            return {"vocab_size": size, "sentences": count_lines(L.spm_sample)}

        self.run(
            Stage(
                "spm-train",
                train,
                inputs=[L.spm_sample],
                outputs=[L.spm_model, L.spm_vocab, L.fairseq_dict],
                options={  # not the seed: SentencePiece training does not use it (sampling does)
                    "vocab_size": o.vocab_size,
                    "model_type": o.model_type,
                    "character_coverage": o.character_coverage,
                    "threads": o.spm_threads,
                    "normalization": "identity",
                    "byte_fallback": True,
                },
            )
        )

        jobs = [(L.clean(lang), L.clean_pieces(lang)) for lang in langs]
        jobs += [(L.raw(s, lang), L.pieces(s, lang)) for s in L.eval_splits for lang in langs]

        def encode(ctx: StageContext) -> Dict[str, Any]:
            counts = subword.encode_files(
                L.spm_model, [(src, ctx.tmp(dst)) for src, dst in jobs], o.workers, o.progress
            )
            for (src, _), n in zip(jobs, counts):
                expected = count_lines(src)
                if n != expected:
                    raise DataPrepError(f"encoding {src} gave {n} lines instead of {expected}")
            return {"lines": {self.rel(src): n for (src, _), n in zip(jobs, counts)}, "sentences": sum(counts)}

        self.run(
            Stage(
                "encode",
                encode,
                inputs=[L.spm_model] + [src for src, _ in jobs],
                outputs=[dst for _, dst in jobs],
            )
        )

        train_text = (L.raw("train", L.src), L.raw("train", L.tgt))
        train_pieces = (L.pieces("train", L.src), L.pieces("train", L.tgt))

        def filt(ctx: StageContext) -> Dict[str, Any]:
            return filter_lengths(
                (L.clean(L.src), L.clean(L.tgt)),
                (L.clean_pieces(L.src), L.clean_pieces(L.tgt)),
                tuple(ctx.tmp(p) for p in train_text),
                tuple(ctx.tmp(p) for p in train_pieces),  # type: ignore[arg-type]
                o.max_len,
                o.len_ratio,
                o.progress,
            )

        self.run(
            Stage(
                "filter",
                filt,
                inputs=[L.clean(L.src), L.clean(L.tgt), L.clean_pieces(L.src), L.clean_pieces(L.tgt)],
                outputs=[*train_text, *train_pieces],
                options={"max_len": o.max_len, "len_ratio": o.len_ratio},
            )
        )

        def binarize_action(ctx: StageContext) -> Dict[str, Any]:
            dest = ctx.tmp(L.data_bin)
            self.log(f"[binarize] fairseq-preprocess with {o.workers} worker(s), log in {L.binarize_log}")
            reported = binarize.run_preprocess(
                L.src,
                L.tgt,
                {s: L.out / "spm" / s for s in L.splits},
                L.fairseq_dict,
                dest,
                o.workers,
                L.binarize_log,
                o.progress,
            )
            counts = {}
            for split in L.splits:
                n = {
                    lang: binarize.mmap_index_count(Path(f"{dest / L.bin_prefix(split).name}.{lang}.idx"))
                    for lang in langs
                }
                expected = count_lines(L.pieces(split, L.src))
                if set(n.values()) != {expected}:
                    raise DataPrepError(f"data-bin {split} has {n} sequences, expected {expected}")
                counts[split] = expected
            return {"sequences": counts, "fairseq": reported, "lines_out": counts["train"], "lines_in": counts["train"]}

        self.run(
            Stage(
                "binarize",
                binarize_action,
                inputs=[L.fairseq_dict] + [L.pieces(s, lang) for s in L.splits for lang in langs],
                outputs=[L.data_bin],
            )
        )

    def rel(self, path: Path) -> str:
        """``path`` relative to the output directory where it is inside it."""
        try:
            return path.relative_to(self.opts.out).as_posix()
        except ValueError:
            return str(path)

    def output_entries(self) -> Dict[str, Dict[str, Any]]:
        """Every output file with its size, sha256 and line (or sequence) count."""
        L = self.layout
        files: List[Path] = [L.spm_model, L.spm_vocab]
        for split in L.splits:
            files += list(L.split_files(split))
        files += sorted(p for p in L.data_bin.iterdir() if p.is_file())
        out: Dict[str, Dict[str, Any]] = {}
        for p in files:
            entry: Dict[str, Any] = {"bytes": p.stat().st_size, "sha256": self.cache.sha256(p)}
            if p.parent.name in ("raw", "spm", "ref"):
                entry["lines"] = count_lines(p)
            elif p.suffix == ".idx":
                entry["sequences"] = binarize.mmap_index_count(p)
            out[self.rel(p)] = entry
        return out

    def input_entries(self) -> List[Dict[str, Any]]:
        """The external inputs with size and sha256, checked to be the content the stages read."""
        entries = []
        for entry in self.inputs:
            path = Path(entry["path"])
            digest = self.cache.sha256(path)
            label = self.runner.label(path)
            for result in self.results:
                used = result.inputs.get(label)
                if used is not None and used != digest:
                    raise DataPrepError(
                        f"{path}: changed during the run (stage {result.name} read other content); run again"
                    )
            entries.append(
                {
                    "path": entry["path"],
                    "bytes": path.stat().st_size,
                    "sha256": digest,
                    **{k: v for k, v in entry.items() if k != "path"},
                }
            )
        return entries

    def finish(self, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Check the outputs are what the stages wrote, then write manifest.json and print the summary."""
        outputs = self.output_entries()
        for result in self.results:
            for label, digest in result.outputs.items():
                entry = outputs.get(label)
                if entry is not None and entry["sha256"] != digest:
                    raise DataPrepError(
                        f"{self.opts.out / label}: changed after stage {result.name} wrote it; run again"
                    )
        record = report.RunRecord(
            tool=self.tool,
            argv=self.argv,
            started=self.started,
            opts=self.opts,
            layout=self.layout,
            results=self.results,
            inputs=self.input_entries(),
            outputs=outputs,
            extra=extra or {},
        )
        manifest = report.build_manifest(record)
        write_json_atomic(self.layout.manifest, manifest)
        self.cache.save()
        print(report.summary_table(manifest), file=sys.stderr)
        return manifest
