"""Binarizing with ``fairseq-preprocess`` and reading back what it wrote."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, Mapping

from tqdm import tqdm

from data_prep import children
from data_prep.errors import DataPrepError
from fairseq_resmlp_tools.fairseq_io import mmap_index_count  # noqa: F401  (pipeline and report use it from here)

_SUMMARY_RE = re.compile(
    r"\[(?P<lang>[^\]]+)\] (?P<file>\S+): (?P<sents>\d+) sents, (?P<tokens>\d+) tokens"
    r"(?:, (?P<unk>[0-9.e+-]+)% replaced)?"
)


def run_preprocess(
    src: str,
    tgt: str,
    prefixes: Mapping[str, Path],
    dictionary: Path,
    destdir: Path,
    workers: int,
    log_path: Path,
    progress: bool = False,
) -> Dict[str, dict]:
    """Run ``fairseq-preprocess --joined-dictionary`` with our SentencePiece dictionary.

    ``prefixes`` maps ``train``/``valid``/``test`` to file prefixes (``PREFIX.src``/``PREFIX.tgt``).
    Returns, per split and language, the sentences, tokens and <unk> percentage fairseq reported.
    """
    cmd = [
        "--source-lang",
        src,
        "--target-lang",
        tgt,
        "--srcdict",
        str(dictionary),
        "--joined-dictionary",
        "--destdir",
        str(destdir),
        "--workers",
        str(max(1, workers)),
        "--dataset-impl",
        "mmap",
    ]
    for split in ("train", "valid", "test"):
        if split in prefixes:
            cmd += [f"--{split}pref", str(prefixes[split])]
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("fairseq-preprocess " + " ".join(cmd) + "\n")
        log.flush()
        # own process group, killed with us: no orphan keeps writing into destdir (data_prep.children)
        pid_file = log_path.with_suffix(".pid")
        proc = children.start_module("fairseq_cli.preprocess", cmd, pid_file, stdout=log, stderr=subprocess.STDOUT)
        # fairseq reports no progress of its own; at least show that time is passing.
        with tqdm(
            desc="binarize", bar_format="{desc}: {elapsed} elapsed", disable=not progress, file=sys.stderr
        ) as bar:
            try:
                while proc.poll() is None:
                    try:
                        proc.wait(timeout=1)
                    except subprocess.TimeoutExpired:
                        bar.refresh()
            finally:
                children.end_group(proc, pid_file)  # do not leave fairseq running when interrupted
    text = log_path.read_text(encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(text.splitlines()[-15:])
        raise DataPrepError(f"fairseq-preprocess failed (exit {proc.returncode}); log {log_path}:\n{tail}")
    summary: Dict[str, dict] = {}
    for m in _SUMMARY_RE.finditer(text):
        split = next((s for s, p in prefixes.items() if m.group("file") == f"{p}.{m.group('lang')}"), None)
        if split is None:
            continue
        summary.setdefault(split, {})[m.group("lang")] = {
            "sentences": int(m.group("sents")),
            "tokens": int(m.group("tokens")),
            "unk_percent": float(m.group("unk") or 0.0),
        }
    return summary
