"""Checkpoint averaging against a hand computation (N = 3 and 10, as the recipes average 5 and 10), and refusal of
checkpoints trained with other model options (equal shapes included)."""

from pathlib import Path

import pytest
import torch

from fairseq_resmlp_tools._cli import ToolError
from fairseq_resmlp_tools.average import average_checkpoints

OPTIONS = {"_name": "resmlp", "encoder_embed_dim": 4, "positional_embeddings": "none", "dropout": 0.1}


def write(path: Path, index: int, **options) -> Path:
    """A small fairseq-format checkpoint whose weights are known functions of ``index``."""
    model = {
        "w": torch.full((2, 3), float(index)) + torch.arange(6.0).view(2, 3),  # index + position
        "half": torch.full((4,), 0.5 * index, dtype=torch.float16),
        "steps": torch.tensor([7]),  # an integer buffer: must agree, copied
    }
    torch.save({"model": model, "cfg": {"model": {**OPTIONS, **options}}, "extra_state": {}}, path)
    return path


@pytest.mark.parametrize("n", [3, 10])
def test_average_of_n_checkpoints_is_their_mean(tmp_path, n):
    paths = [write(tmp_path / f"c{i}.pt", i) for i in range(n)]
    avg = average_checkpoints(paths)["model"]
    mean_index = (n - 1) / 2  # sum(range(n)) / n, computed by hand
    torch.testing.assert_close(avg["w"], mean_index + torch.arange(6.0).view(2, 3), rtol=0, atol=1e-6)
    assert avg["half"].dtype == torch.float16
    torch.testing.assert_close(avg["half"], torch.full((4,), 0.5 * mean_index, dtype=torch.float16), rtol=0, atol=1e-3)
    assert torch.equal(avg["steps"], torch.tensor([7]))
    # Not the mean of the last two, nor a sum divided by a wrong count.
    assert not torch.allclose(avg["w"], (n - 1.5) + torch.arange(6.0).view(2, 3))


def test_other_model_options_are_refused_by_name(tmp_path):
    a = write(tmp_path / "a.pt", 0)
    b = write(tmp_path / "b.pt", 1, positional_embeddings="sinusoidal")  # same shapes, other model
    with pytest.raises(ToolError, match="--positional-embeddings 'sinusoidal'"):
        average_checkpoints([a, b])


def test_training_only_options_may_differ(tmp_path):
    a = write(tmp_path / "a.pt", 0)
    b = write(tmp_path / "b.pt", 2, dropout=0.3)
    torch.testing.assert_close(average_checkpoints([a, b])["model"]["w"], 1 + torch.arange(6.0).view(2, 3))


def test_argparse_namespace_configs_are_compared(tmp_path):
    """fairseq's argparse-registered architectures (transformer_iwslt_de_en) store cfg.model as a Namespace: their
    checkpoints average (seen failing with "'Namespace' object is not iterable"), and other options are refused."""
    import argparse

    def save(path, index, **options):
        model = {"w": torch.full((2,), float(index))}
        ns = argparse.Namespace(_name="transformer_iwslt_de_en", encoder_layers=6, dropout=0.3, **options)
        torch.save({"model": model, "cfg": {"model": ns}, "extra_state": {}}, path)
        return path

    a, b = save(tmp_path / "a.pt", 0), save(tmp_path / "b.pt", 2)
    torch.testing.assert_close(average_checkpoints([a, b])["model"]["w"], torch.full((2,), 1.0))
    c = save(tmp_path / "c.pt", 4, decoder_layers=3)
    with pytest.raises(ToolError, match="decoder-layers"):
        average_checkpoints([a, c])
