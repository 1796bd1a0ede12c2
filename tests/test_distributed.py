"""Data-parallel training with two CPU processes (gloo): both ranks end with identical parameters, and a
second run resumes from the checkpoint the first wrote (fairseq broadcasts it from rank 0 to rank 1).

The processes are started with fairseq's explicit options (--distributed-init-method, --distributed-rank,
--distributed-no-spawn), as for multi-node runs: fairseq's torchrun/spawn detection divides by the number of
CUDA devices and cannot start CPU processes itself.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import prepare_toy_data_bin

from fairseq_resmlp_tools.fairseq_io import user_dir
from fairseq_resmlp_tools.recipes.fairseq_args import label_smoothing

HERE = Path(__file__).resolve().parent


def train_two_ranks(folder: Path, probe: Path, max_epoch: int, port: int) -> str:
    """Run fairseq-train as two gloo ranks on the CPU; return their combined log."""
    probe.mkdir(exist_ok=True)
    common = [
        sys.executable,
        str(HERE / "dist_train_probe.py"),
        "data-bin",
        "--user-dir",
        str(user_dir()),
        "--arch",
        "resmlp_tiny",
        "--share-all-embeddings",
        "--cpu",
        "--distributed-backend",
        "gloo",
        "--distributed-world-size",
        "2",
        "--distributed-no-spawn",
        "--ddp-backend",
        "legacy_ddp",  # torch DDP with device_ids=[0], as fairseq builds it, needs a GPU
        "--distributed-init-method",
        f"tcp://127.0.0.1:{port}",
        "--optimizer",
        "adam",
        "--lr",
        "0.003",
        *label_smoothing(0.1),
        "--max-tokens",
        "600",
        "--max-epoch",
        str(max_epoch),
        "--save-dir",
        "ckpt",
        "--no-epoch-checkpoints",
        "--seed",
        "3",
        "--no-progress-bar",
        "--log-interval",
        "5",
        "--required-batch-size-multiple",
        "1",
        "--num-workers",
        "0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PROBE_DIR": str(probe), "PYTHONWARNINGS": "ignore"}
    procs = [
        subprocess.Popen(
            [*common, "--distributed-rank", str(rank)],
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    logs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=900)
        logs.append(out)
    failed = [rank for rank, proc in enumerate(procs) if proc.returncode != 0]
    assert not failed, "\n\n".join(f"rank {r} log:\n{logs[r][-4000:]}" for r in (0, 1))
    return "\n".join(logs)


def load_ranks(probe: Path):
    ranks = [torch.load(probe / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    return ranks


@pytest.mark.slow
def test_two_process_training_keeps_ranks_identical_and_resumes(tmp_path):
    prepare_toy_data_bin(tmp_path, vocab_size=48)
    first = train_two_ranks(tmp_path, tmp_path / "probe1", max_epoch=1, port=29517)
    assert "distributed init (rank 1)" in first, first[-4000:]
    r0, r1 = load_ranks(tmp_path / "probe1")
    assert r0["num_updates"] == r1["num_updates"] > 0
    assert r0["params"].keys() == r1["params"].keys()
    for name in r0["params"]:
        assert torch.equal(r0["params"][name], r1["params"][name]), name
    start = torch.load(tmp_path / "ckpt" / "checkpoint_last.pt", weights_only=True)
    # The checkpoint rank 0 wrote holds the same weights that both ranks trained.
    assert all(torch.equal(start["model"][k], r0["params"][k]) for k in start["model"])

    log = train_two_ranks(tmp_path, tmp_path / "probe2", max_epoch=2, port=29518)
    assert f"@ {r0['num_updates']} updates" in log and "Loaded checkpoint" in log, log[-3000:]
    s0, s1 = load_ranks(tmp_path / "probe2")
    assert s0["num_updates"] == s1["num_updates"] > r0["num_updates"]  # went on from the checkpoint
    for name in s0["params"]:
        assert torch.equal(s0["params"][name], s1["params"][name]), name
