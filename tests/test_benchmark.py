"""Smoke test of the speed benchmark: a tiny configuration must finish and print the table (no targets)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_benchmark_tiny_runs_and_reports(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--preset", "tiny", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resmlp_tiny vs transformer" in proc.stdout and "train target tok/s" in proc.stdout
    assert "decode beam4_batch8 sent/s" in proc.stdout and "step latency t=32 (ms)" in proc.stdout
    report = json.loads((tmp_path / "results.json").read_text())
    for arch in ("resmlp_tiny", "transformer"):
        entry = report["models"][arch]
        assert entry["training"]["tokens_per_s"] > 0
        assert all(v["sentences_per_s"] > 0 for v in entry["decoding"].values())
    assert (tmp_path / "benchmark.png").stat().st_size > 10_000
