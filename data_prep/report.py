"""The run's record: manifest.json and the summary table printed at the end."""

from __future__ import annotations

import importlib.metadata
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Sequence

import data_prep
from data_prep import binarize
from data_prep.clean import empty_drop_counts
from data_prep.textio import count_lines

if TYPE_CHECKING:
    from data_prep.pipeline import Pipeline

MANIFEST_FORMAT = 1


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


def output_entries(pipe: "Pipeline") -> Dict[str, Dict[str, Any]]:
    """Every output file with its size, sha256 and line (or sequence) count."""
    L = pipe.layout
    files: List[Path] = [L.spm_model, L.spm_vocab]
    for split in L.splits:
        for lang in L.langs:
            files += [L.raw(split, lang), L.pieces(split, lang)]
    files += sorted(p for p in L.data_bin.iterdir() if p.is_file())
    out: Dict[str, Dict[str, Any]] = {}
    for p in files:
        entry: Dict[str, Any] = {"bytes": p.stat().st_size, "sha256": pipe.cache.sha256(p)}
        if p.parent.name in ("raw", "spm"):
            entry["lines"] = count_lines(p)
        elif p.suffix == ".idx":
            entry["sequences"] = binarize.mmap_index_count(p)
        out[pipe.rel(p)] = entry
    return out

def build_manifest(pipe: "Pipeline", extra: Dict[str, Any]) -> Dict[str, Any]:
    """The manifest of a finished run (see docs/data_prep.md for the fields)."""
    L = pipe.layout
    stats = {r.name: r.stats for r in pipe.results}
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
        "tool": pipe.tool,
        "command": pipe.argv,
        "started": pipe.started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "languages": {"src": L.src, "tgt": L.tgt},
        "directions": [f"{L.src}-{L.tgt}", f"{L.tgt}-{L.src}"],
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(pipe.opts).items()},
        "versions": versions(),
        **extra,
        "inputs": pipe.inputs,
        "line_counts": line_counts,
        "dropped": {"train": dropped},
        "normalised": {
            "train": text.get("normalised"),
            **{s: evals.get(s, {}).get("normalised") for s in L.eval_splits},
        },
        "corpora": text.get("corpora", {}),
        "spm": {
            "model": "spm.model",
            "vocab": "spm.vocab",
            "vocab_size": stats.get("spm-train", {}).get("vocab_size"),
            "model_type": pipe.opts.model_type,
            "character_coverage": pipe.opts.character_coverage,
            "normalization": "identity",
            "byte_fallback": True,
            "sample_pairs": stats.get("spm-sample", {}).get("pairs"),
            "training_threads": pipe.opts.spm_threads,
        },
        "fairseq": {
            "data_bin": "data-bin",
            "joined_dictionary": True,
            "dataset_impl": "mmap",
            "report": binz.get("fairseq"),
        },
        "tokens": {"train": filt.get("tokens")},
        "stages": [
            {"name": r.name, "status": r.status, "seconds": round(r.seconds, 3), "stats": r.stats}
            for r in pipe.results
        ],
        "outputs": output_entries(pipe),
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
        lines.append(
            "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, align)).rstrip()
        )
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
