"""The run's record: manifest.json and the summary table printed at the end.

Pure: :func:`build_manifest` turns a :class:`RunRecord` (assembled by ``Pipeline.finish``) into the
manifest, and :func:`summary_table` a manifest into text; nothing here reads files.
"""

from __future__ import annotations

import importlib.metadata
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence

import data_prep
from data_prep.clean import empty_drop_counts
from data_prep.layout import Layout, Options
from data_prep.stages import StageResult

MANIFEST_FORMAT = 2


@dataclass
class RunRecord:
    """Everything a finished run reports: what ran, on what, with which options, and what it wrote."""

    tool: str
    argv: List[str]
    started: str
    opts: Options
    layout: Layout
    results: List[StageResult]
    inputs: List[Dict[str, Any]]  # external input files: path, bytes, sha256, ...
    outputs: Dict[str, Dict[str, Any]]  # output file (relative to OUT) -> bytes, sha256, lines/sequences
    extra: Dict[str, Any]


def versions() -> Dict[str, str]:
    """Versions of what shaped the output (recorded in the manifest)."""

    def dist(*names: str) -> str:
        for name in names:
            try:
                return importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
        return "not installed"

    return {
        "python": platform.python_version(),
        "data_prep": data_prep.__version__,
        "sentencepiece": dist("sentencepiece"),
        "fairseq": dist("fairseq", "fairseq-fixed"),
        "tqdm": dist("tqdm"),
    }


def build_manifest(run: RunRecord) -> Dict[str, Any]:
    """The manifest of a finished run (see docs/data_prep.md for the fields)."""
    L = run.layout
    stats = {r.name: r.stats for r in run.results}
    text, filt, binz = stats.get("train-text", {}), stats.get("filter", {}), stats.get("binarize", {})
    dropped = empty_drop_counts()
    for part in (text.get("dropped", {}), filt.get("dropped", {})):
        for reason, n in part.items():
            dropped[reason] += n
    evals = stats.get("eval-text", {})
    line_counts: Dict[str, Any] = {
        "train": {
            "read": text.get("lines_in"),
            "after_train-text": text.get("lines_out"),
            "after_encode": text.get("lines_out"),
            "after_filter": filt.get("lines_out"),
            "binarized": binz.get("sequences", {}).get("train"),
        }
    }
    for split in L.eval_splits:
        line_counts[split] = {
            "read": evals.get(split, {}).get("lines"),
            "after_eval-text": evals.get(split, {}).get("lines"),
            "binarized": binz.get("sequences", {}).get(split),
        }
    return {
        "format": MANIFEST_FORMAT,
        "tool": run.tool,
        "command": run.argv,
        "started": run.started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "languages": {"src": L.src, "tgt": L.tgt},
        "directions": [f"{L.src}-{L.tgt}", f"{L.tgt}-{L.src}"],
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(run.opts).items()},
        "versions": versions(),
        **run.extra,
        "inputs": run.inputs,
        "line_counts": line_counts,
        "dropped": {"train": dropped},
        "normalised": {
            "train": text.get("normalised"),
            **{s: evals.get(s, {}).get("normalised") for s in L.eval_splits},
        },
        "references": {s: {lang: f"ref/{s}.{lang}" for lang in L.langs} for s in L.eval_splits},
        "corpora": text.get("corpora", {}),
        "spm": {
            "model": "spm.model",
            "vocab": "spm.vocab",
            "vocab_size": stats.get("spm-train", {}).get("vocab_size"),
            "model_type": run.opts.model_type,
            "character_coverage": run.opts.character_coverage,
            "normalization": "identity",
            "byte_fallback": True,
            "sample_pairs": stats.get("spm-sample", {}).get("pairs"),
            "training_threads": run.opts.spm_threads,
        },
        "fairseq": {
            "data_bin": "data-bin",
            "joined_dictionary": True,
            "dataset_impl": "mmap",
            "report": binz.get("fairseq"),
        },
        "tokens": {"train": filt.get("tokens")},
        "stages": [
            {"name": r.name, "status": r.status, "seconds": round(r.seconds, 3), "stats": r.stats} for r in run.results
        ],
        "outputs": run.outputs,
    }


def _fmt(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else ("-" if n is None else str(n))


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A plain-text table; ``align`` has one ``l`` or ``r`` per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    cells = [list(map(str, header))] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for k, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, align)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_table(manifest: Dict[str, Any]) -> str:
    """The end-of-run summary: what each stage did, then the size of each split."""
    rows = []
    for st in manifest["stages"]:
        s = st["stats"]
        dropped = sum(s.get("dropped", {}).values()) if s.get("dropped") else None
        rows.append([st["name"], st["status"], s.get("lines_in"), s.get("lines_out"), dropped, f"{st['seconds']:.1f}s"])
    parts = [format_table(["stage", "status", "pairs in", "pairs out", "dropped", "time"], rows, "llrrrr")]
    drops = [[reason, n] for reason, n in manifest["dropped"]["train"].items() if n]
    if drops:
        parts.append(format_table(["train dropped because", "pairs"], drops))
    splits = [[split, c.get("binarized")] for split, c in manifest["line_counts"].items()]
    parts.append(format_table(["split", "pairs"], splits))
    parts.append(f"output: {manifest['options']['out']}  (fairseq-train {manifest['options']['out']}/data-bin)")
    return "\n\n".join(parts)
