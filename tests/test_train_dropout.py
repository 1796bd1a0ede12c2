"""Training with dropout > 0 through fairseq-train: the loss goes down, and a run interrupted mid-epoch and
resumed from its checkpoint continues exactly as the uninterrupted run (same dropout masks, same batches).

The interruption is inside the first epoch on purpose: fairseq 0.12 builds the batches of a resumed run with
``numpy_seed(seed + epoch)`` of the epoch it resumes in, while an uninterrupted run keeps the batches built in
epoch 1, so a run resumed in a later epoch groups same-length sentences differently (seen with fairseq's own
Transformer too; not something the model can change).
"""

import json
from pathlib import Path
from typing import Dict

import torch
from test_end_to_end import USER_DIR, run

from fairseq_resmlp_tools.recipes.fairseq_args import label_smoothing
from fairseq_resmlp_tools.toy_data import write_toy_corpus

UPDATES = 20  # the first epoch of the toy corpus has about 30; the interruption is at half


def train(folder: Path, save_dir: str, max_update: int) -> Dict[int, float]:
    """fairseq-train resmlp_tiny with dropout 0.3 (0.1 on attention and activations); {update: loss}.

    Fails unless every logged update is in the first epoch (see the module's docstring)."""
    proc = run(
        [
            "fairseq-train",
            "data-bin",
            "--user-dir",
            USER_DIR,
            "--arch",
            "resmlp_tiny",
            "--share-all-embeddings",
            "--dropout",
            "0.3",
            "--attention-dropout",
            "0.1",
            "--activation-dropout",
            "0.1",
            "--cpu",
            "--optimizer",
            "adam",
            "--lr",
            "0.003",
            *label_smoothing(0.1),
            "--max-tokens",
            "400",
            "--max-update",
            str(max_update),
            "--save-interval-updates",
            str(UPDATES // 2),
            "--save-dir",
            save_dir,
            "--no-epoch-checkpoints",
            "--seed",
            "7",
            "--log-format",
            "json",
            "--log-interval",
            "1",
            "--required-batch-size-multiple",
            "1",
            "--num-workers",
            "0",
        ],
        cwd=folder,
    )
    losses = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        start = line.find("{")
        if start < 0 or '"num_updates"' not in line:
            continue
        record = json.loads(line[start:])
        if "loss" in record and "train_loss" not in record:
            losses[int(record["num_updates"])] = float(record["loss"])
            assert int(record["epoch"]) == 1 and float(record["update"]) < 1.0, record
    return losses


def test_dropout_training_learns_and_resumes_exactly(tmp_path):
    write_toy_corpus(tmp_path, sizes={"train": 1500, "valid": 20})
    run(
        [
            "fairseq-preprocess",
            "--source-lang",
            "src",
            "--target-lang",
            "tgt",
            "--joined-dictionary",
            "--trainpref",
            "train",
            "--validpref",
            "valid",
            "--destdir",
            "data-bin",
            "--workers",
            "1",
        ],
        cwd=tmp_path,
    )

    whole = train(tmp_path, "whole", UPDATES)
    assert sorted(whole) == list(range(1, UPDATES + 1)), whole
    first, last = [whole[u] for u in (1, 2, 3)], [whole[u] for u in (UPDATES - 2, UPDATES - 1, UPDATES)]
    assert sum(last) < sum(first) - 1.5, whole  # clearly learning, despite the dropout

    half = train(tmp_path, "resumed", UPDATES // 2)
    assert all(half[u] == whole[u] for u in half), (half, whole)  # same seed, same run
    resumed = train(tmp_path, "resumed", UPDATES)
    assert min(resumed) == UPDATES // 2 + 1, resumed  # went on from the checkpoint
    for u in resumed:
        assert resumed[u] == whole[u], (u, resumed, whole)
    # Not only the logged (rounded) losses: the final weights are the same.
    a = torch.load(tmp_path / "whole" / "checkpoint_last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "resumed" / "checkpoint_last.pt", weights_only=False)["model"]
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
