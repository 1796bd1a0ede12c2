"""Smoke test of the decoding benchmark: a tiny configuration must finish and print the table (no targets)."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_benchmark_tiny_runs_and_reports(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fairseq_resmlp_tools.bench.decode", "--preset", "tiny", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resmlp_tiny vs transformer_tiny" in proc.stdout and "train" not in proc.stdout.split("training speed")[0]
    assert "decode beam4_batch8 sent/s" in proc.stdout and "step latency t=32 (ms)" in proc.stdout
    report = json.loads((tmp_path / "results.json").read_text())
    for arch in ("resmlp_tiny", "transformer_tiny"):
        entry = report["models"][arch]
        assert entry["parameters"] > 0 and "training" not in entry
        assert all(v["sentences_per_s"] > 0 for v in entry["decoding"].values())
    assert (tmp_path / "benchmark.png").stat().st_size > 10_000


def test_benchmark_refuses_unknown_architectures(tmp_path, capsys):
    from fairseq_resmlp_tools.bench import decode

    assert decode.main(["--preset", "tiny", "--pairs", "resmlp_tiny:nope", "--out", str(tmp_path)]) == 1
    assert "error: --pairs: resmlp_tiny:nope is not" in capsys.readouterr().err
