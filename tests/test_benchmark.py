"""Smoke test of the decoding benchmark: a tiny configuration must finish and print the table (no targets)."""

import json
import os
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


# resmlp-benchmark-train


def test_benchmark_train_command_options(tmp_path):
    from fairseq_resmlp_tools.bench import train

    def command(*argv):
        return train.train_command(tmp_path, "resmlp_6", train.build_parser().parse_args([str(tmp_path), *argv]))

    stock = command("--fp16")
    assert stock[stock.index("--optimizer") + 1] == "adam" and "--memory-efficient-fp16" not in stock
    assert (
        stock[stock.index("--update-freq") + 1] == "1"
        and "fairseq_resmlp_tools.bench.train_no_cudnn_attention" not in stock
    )
    fused = command("--fp16", "--optimizer", "fused_adam", "--update-freq", "4", "--no-cudnn-attention")
    assert fused[fused.index("--optimizer") + 1] == "fused_adam" and "--memory-efficient-fp16" in fused
    assert fused[fused.index("--update-freq") + 1] == "4"
    assert fused[:3] == [sys.executable, "-m", "fairseq_resmlp_tools.bench.train_no_cudnn_attention"]
    assert "--memory-efficient-fp16" not in command("--optimizer", "fused_adam")  # fp32: no fp16 wrapper at all


def test_benchmark_train_refuses_a_bad_update_freq(tmp_path, capsys):
    from fairseq_resmlp_tools.bench import train

    with pytest.raises(SystemExit):
        train.main([str(tmp_path), "--update-freq", "0"])
    assert "--update-freq must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_train_runs_fairseq_train_without_cudnn_attention(tmp_path):
    from fairseq_resmlp_tools.toy_data import build_toy_data

    data = build_toy_data(tmp_path / "data", n_train=300, n_valid=8, n_test=4) / "data-bin"
    cmd = [sys.executable, "-m", "fairseq_resmlp_tools.bench.train", str(data), "--archs", "resmlp_tiny,resmlp_tiny"]
    cmd += ["--cpu", "--max-update", "6", "--max-tokens", "400", "--log-interval", "1", "--optimizer", "fused_adam"]
    cmd += ["--no-cudnn-attention", "--update-freq", "2", "--out", str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--update-freq 2, fp16=False, --optimizer fused_adam, cuDNN attention off" in proc.stdout
    result = json.loads((tmp_path / "out" / "train_speed.json").read_text())["resmlp_tiny"]
    assert result["updates"] == 6 and result["wps"] > 0


def test_flops_per_target_token_bounds_and_unknown_architecture():
    from fairseq_resmlp_tools.bench.flops import main, train_flops_per_target_token

    vocab, dim = 200, 32  # resmlp_tiny: 32 channels; about 100k parameters with 200 words
    flops = train_flops_per_target_token("resmlp_tiny", vocab, 10, 12, 2, "cpu", False)
    # At least the output projection's forward and backward (2 + 4 FLOPs per weight and token); below 6 FLOPs per
    # parameter and token (its 128-position mixing matrices are mostly unused at 10 and 12 positions).
    assert 6 * dim * vocab <= flops <= 6 * 100_000
    with pytest.raises(SystemExit):
        main(["--archs", "nope", "--device", "cpu"])
