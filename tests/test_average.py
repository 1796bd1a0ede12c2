"""Checkpoint averaging against a hand computation (N = 3 and 10, as the recipes average 5 and 10), and refusal of
checkpoints trained with other model options (equal shapes included)."""

from pathlib import Path

import pytest
import torch

from fairseq_resmlp_tools._cli import ToolError
from fairseq_resmlp_tools.average import (
    average_checkpoints,
    average_state_dicts,
    check_same_model_options,
    last_checkpoints,
    model_options,
    resolve_inputs,
    save_checkpoint,
)

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


# --- unit tests written against mutants that survived (docs/testing.md, mutation testing) -------------------


def names_of(paths):
    return [p.name for p in paths]


@pytest.fixture
def run_dir(tmp_path) -> Path:
    for name in [
        "checkpoint1.pt",
        "checkpoint2.pt",
        "checkpoint_1_500.pt",
        "checkpoint_2_1000.pt",
        "checkpoint_last.pt",
    ]:
        (tmp_path / name).write_bytes(b"")
    return tmp_path


def test_last_checkpoints_messages_and_default(run_dir):
    assert names_of(last_checkpoints(run_dir, 1)) == ["checkpoint_2_1000.pt"]  # by update unless told
    with pytest.raises(ValueError, match="^by must be 'update' or 'epoch', not 'step'$"):
        last_checkpoints(run_dir, 1, "step")
    with pytest.raises(ToolError, match=f"^{run_dir / 'checkpoint1.pt'} is not a directory$"):
        last_checkpoints(run_dir / "checkpoint1.pt", 1)
    with pytest.raises(ToolError) as e:
        last_checkpoints(run_dir, 3)
    assert str(e.value) == (
        f"{run_dir} has 2 checkpoint(s) named like checkpoint_E_U.pt (--save-interval-updates), but 3 were asked for"
    )
    with pytest.raises(ToolError) as e:
        last_checkpoints(run_dir, 2, "epoch", upper_bound=1)
    assert str(e.value) == f"{run_dir} has 1 checkpoint(s) named like checkpointE.pt up to 1, but 2 were asked for"


def test_resolve_inputs(run_dir):
    assert names_of(resolve_inputs([run_dir], 1, None)) == ["checkpoint_2_1000.pt"]
    assert names_of(resolve_inputs([run_dir], None, 2)) == ["checkpoint1.pt", "checkpoint2.pt"]
    assert names_of(resolve_inputs([run_dir], 2, None, upper_bound=500, allow_fewer=True)) == ["checkpoint_1_500.pt"]
    with pytest.raises(ToolError, match="has 1 checkpoint"):
        resolve_inputs([run_dir], 2, None, upper_bound=500)  # fewer only when allowed
    files = [run_dir / "checkpoint1.pt", run_dir / "checkpoint2.pt"]
    assert resolve_inputs(files, None, None) == files
    one_directory = "--num-update-checkpoints/--num-epoch-checkpoints need --inputs to be one directory"
    for inputs in ([run_dir, run_dir], files[:1]):
        with pytest.raises(ToolError) as e:
            resolve_inputs(inputs, 1, None)
        assert str(e.value) == one_directory
    with pytest.raises(ToolError, match="^the number of checkpoints to average must be at least 1, not 0$"):
        resolve_inputs([run_dir], None, 0)
    with pytest.raises(ToolError) as e:
        resolve_inputs([run_dir], None, None)
    assert str(e.value) == f"{run_dir} is a directory: give --num-update-checkpoints N or --num-epoch-checkpoints N"


def test_mismatched_state_dicts_are_refused_naming_both_files():
    a = {"w": torch.zeros(2), "k1": torch.zeros(1), "steps": torch.tensor([1])}
    names = ["a.pt", "b.pt", "c.pt"]
    # The third differs: every input is compared with the first, and the message names the first and the odd one.
    other_keys = {"w": torch.zeros(2), "z1": torch.zeros(1), "steps": torch.tensor([1])}
    with pytest.raises(ToolError) as e:
        average_state_dicts([a, dict(a), other_keys], names)
    assert str(e.value) == (
        "c.pt has different parameters from a.pt (missing ['k1'], extra ['z1']): "
        "only checkpoints of the same model can be averaged"
    )
    many = {f"m{i}": torch.zeros(1) for i in range(5)}
    with pytest.raises(ToolError, match=r"\(missing \['m0', 'm1', 'm2'\], extra \[\]\)"):
        average_state_dicts([{**a, **many}, a], names[:2])
    with pytest.raises(ToolError, match=r"\(missing \['k1', 'steps', 'w'\], extra \['m0', 'm1', 'm2'\]\)"):
        average_state_dicts([a, many], names[:2])
    with pytest.raises(ToolError, match=r"\(missing \[\], extra \['m0', 'm1', 'm2'\]\)"):
        average_state_dicts([a, {**a, **many}], names[:2])
    with pytest.raises(ToolError, match=r"^w has shape \(3,\) in c.pt but \(2,\) in a.pt$"):
        average_state_dicts([a, dict(a), {**a, "w": torch.zeros(3)}], names)
    with pytest.raises(ToolError, match="^non-floating-point tensor steps differs between a.pt and c.pt$"):
        average_state_dicts([a, dict(a), {**a, "steps": torch.tensor([2])}], names)
    # Two inputs: the second is compared with the first (not with itself).
    with pytest.raises(ToolError, match="b.pt has different parameters from a.pt"):
        average_state_dicts([a, other_keys], names[:2])
    with pytest.raises(ToolError, match=r"^w has shape \(3,\) in b.pt but \(2,\) in a.pt$"):
        average_state_dicts([a, {**a, "w": torch.zeros(3)}], names[:2])


def test_float64_parameters_are_averaged_exactly():
    # 1 + k * 2**-40: exact in float64, lost if the sum were accumulated in float32.
    states = [{"w": torch.tensor([1.0 + k * 2.0**-40], dtype=torch.float64)} for k in range(3)]
    avg = average_state_dicts(states, ["a", "b", "c"])["w"]
    assert avg.dtype == torch.float64 and avg.item() == 1.0 + 2.0**-40


def test_model_options_of_every_config_form():
    import argparse

    from omegaconf import OmegaConf

    ns = argparse.Namespace(encoder_layers=2)
    assert model_options({"cfg": {"model": {"a": 1}}}) == {"a": 1}
    assert model_options({"cfg": argparse.Namespace(model=ns)}) == {"encoder_layers": 2}  # a cfg object
    assert model_options({"cfg": None, "args": ns}) == {"encoder_layers": 2}  # fairseq before hydra
    assert model_options({"cfg": {"model": None}, "args": ns}) == {"encoder_layers": 2}
    assert model_options({"args": ns}) == {"encoder_layers": 2}
    assert model_options({"cfg": argparse.Namespace(), "args": ns}) == {"encoder_layers": 2}  # cfg without model
    assert model_options({"cfg": {"model": {"a": 1}}, "args": ns}) == {"a": 1}  # cfg wins
    assert model_options({"model": {}}) == {} and model_options({"cfg": None, "args": None}) == {}
    as_omegaconf = model_options({"cfg": {"model": OmegaConf.create({"a": 1})}})
    assert type(as_omegaconf) is dict and as_omegaconf == {"a": 1}


def test_differing_options_are_named_as_command_line_options():
    def state(**options):
        return {"cfg": {"model": {"_name": "resmlp", "encoder_layers": 2, **options}}}

    with pytest.raises(ToolError) as e:
        check_same_model_options([state(), state(), state(encoder_layers=3)], ["a.pt", "b.pt", "c.pt"])
    assert str(e.value) == (
        "c.pt was trained with --encoder-layers 3 but a.pt with 2: only checkpoints of the same model can be averaged"
    )
    with pytest.raises(ToolError, match="^b.pt was trained with _name 'transformer' but a.pt with 'resmlp'"):
        check_same_model_options([state(), state(_name="transformer")], ["a.pt", "b.pt"])


def test_averaged_checkpoint_keeps_the_first_config_and_drops_training_state(tmp_path):
    a, b = write(tmp_path / "a.pt", 0, dropout=0.1), write(tmp_path / "b.pt", 2, dropout=0.3)
    for path, metrics in ((a, {"bleu": 1}), (b, {"bleu": 2})):
        state = torch.load(path, weights_only=True)
        state["extra_state"] = {"metrics": metrics, "epoch": 3}
        state["last_optimizer_state"] = {"lr": torch.ones(1)}
        torch.save(state, path)
    result = average_checkpoints([a, b])
    assert result["cfg"]["model"]["dropout"] == 0.1
    assert result["last_optimizer_state"] is None
    assert result["extra_state"] == {"epoch": 3}
    assert result["averaged_from"] == [str(a), str(b)]
    with pytest.raises(ToolError, match="^no checkpoints to average$"):
        average_checkpoints([])
    with pytest.raises(ToolError, match="^the same checkpoint is listed twice$"):
        average_checkpoints([a, tmp_path / "." / "a.pt"])
    c = write(tmp_path / "c.pt", 1, encoder_embed_dim=8)
    with pytest.raises(ToolError, match=f"^{c} was trained with --encoder-embed-dim 8 but {a} with 4"):
        average_checkpoints([a, c])
    d = tmp_path / "d.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "cfg": {"model": OPTIONS}, "extra_state": None}, d)
    with pytest.raises(ToolError, match=f"^{d} has different parameters from {a}"):
        average_checkpoints([a, d])
    assert average_checkpoints([d])["extra_state"] == {}


def test_save_checkpoint_round_trip_and_write_error(tmp_path, monkeypatch):
    state = {"model": {"w": torch.arange(3.0)}, "cfg": {"model": OPTIONS}}
    out = tmp_path / "out.pt"
    save_checkpoint(state, out)
    loaded = torch.load(out, weights_only=True)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["cfg"] == state["cfg"]

    def full_disk(*args, **kwargs):
        raise RuntimeError("file  write\nfailed " + "x" * 300)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(ToolError) as e:
        save_checkpoint(state, tmp_path / "other.pt")
    assert str(e.value) == f"cannot write {tmp_path / 'other.pt'}: " + ("file write failed " + "x" * 300)[:200]
