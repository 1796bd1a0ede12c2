"""Throughput of each data_prep stage on Tatoeba En-De (~170k pairs), and what it implies for WMT14.

    resmlp-benchmark-data-prep [--workers 1 2] [--target-pairs 4500000]

Runs ``python -m data_prep.parallel`` on the shared Tatoeba files (RESMLP_DATA, default
../shared/data) once per worker count, reads the stage timings from the manifest and prints
sentence pairs per second per stage, plus a linear extrapolation to ``--target-pairs``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from data_prep.report import format_table
from fairseq_resmlp_tools._cli import ToolError, console_script

# Stages whose cost does not grow with the corpus: SentencePiece trains on a fixed-size sample.
FIXED_COST = {"spm-train"}


def fairseq_startup_seconds() -> float:
    """fairseq-preprocess pays a fixed start-up (importing torch and fairseq) before any work."""
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", "import fairseq_cli.preprocess"], check=True, capture_output=True)
    return time.monotonic() - start


def run_once(data: Path, workers: int, args: argparse.Namespace, out: Path) -> Dict:
    cmd = [
        sys.executable,
        "-m",
        "data_prep.parallel",
        "--src",
        "en",
        "--tgt",
        "de",
        "--train",
        str(data / "deu-eng.2018-05-13"),
        "--valid-size",
        "2000",
        "--test-size",
        "2000",
        "--out",
        str(out),
        "--workers",
        str(workers),
        "--vocab-size",
        str(args.vocab_size),
        "--spm-sample",
        str(args.spm_sample),
        "--no-progress",
        "--force",
    ]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolError(f"data_prep.parallel failed:\n{proc.stderr}")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["wall_seconds"] = time.monotonic() - start
    return manifest


def stage_rows(m: Dict, startup: float, target: int) -> List[list]:
    """One row per stage: pairs handled, seconds, pairs/s and the extrapolated time."""
    pairs = m["line_counts"]["train"]["read"]
    rows = []
    total = 0.0
    for st in m["stages"]:
        seconds = st["seconds"]
        work = seconds - startup if st["name"] == "binarize" else seconds
        if st["name"] in FIXED_COST:
            rate, estimate = "-", seconds
            handled = f"{st['stats']['sentences']:,} sents (sample)"
        else:
            rate = f"{pairs / work:,.0f}" if work > 0 else "-"
            estimate = work * target / pairs + (startup if st["name"] == "binarize" else 0)
            handled = f"{pairs:,} pairs"
        total += estimate
        rows.append([st["name"], handled, f"{seconds:.1f}", rate, f"{estimate / 60:.1f}"])
    rows.append(["total", "", f"{sum(s['seconds'] for s in m['stages']):.1f}", "", f"{total / 60:.1f}"])
    return rows


@console_script
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="resmlp-benchmark-data-prep", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("RESMLP_DATA", "../shared/data")) / "tatoeba",
        help="folder of the Tatoeba deu-eng files (default $RESMLP_DATA/tatoeba)",
    )
    parser.add_argument("--workers", type=int, nargs="+", default=sorted({1, min(8, os.cpu_count() or 1)}))
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--spm-sample", type=int, default=100_000)
    parser.add_argument(
        "--target-pairs", type=int, default=4_500_000, help="extrapolate to this many pairs (WMT14 En-De)"
    )
    parser.add_argument("--keep", type=Path, help="keep the prepared data here instead of a temporary folder")
    args = parser.parse_args(argv)
    if not (args.data / "deu-eng.2018-05-13.en.gz").exists():
        raise ToolError(f"Tatoeba files not found in {args.data} (set RESMLP_DATA or --data)")

    startup = fairseq_startup_seconds()
    print(f"CPU cores: {os.cpu_count()}; fairseq-preprocess start-up: {startup:.1f}s (counted once in binarize)")
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            out = args.keep / f"workers{workers}" if args.keep else Path(tmp) / "out"
            m = run_once(args.data, workers, args, out)
        pairs = m["line_counts"]["train"]["read"]
        print(
            f"\n== workers={workers}: {pairs:,} training pairs read, {m['line_counts']['train']['binarized']:,} kept, "
            f"wall {m['wall_seconds']:.1f}s =="
        )
        print(
            format_table(
                ["stage", "handled", "seconds", "pairs/s", f"min for {args.target_pairs / 1e6:g}M pairs"],
                stage_rows(m, startup, args.target_pairs),
                "llrrr",
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
