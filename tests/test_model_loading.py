"""Loading weights into a ResMLP model: the hub's defaults and ensembles, the record it refuses to override,
upgrading a prefixed version-1 state dict, strict loading, int8 on load, and the int8 guards."""

import argparse
import shutil

import pytest
import torch
from helpers import V1_CHECKPOINT_DIR, build_model

from fairseq_resmlp import ResMLPModel
from fairseq_resmlp.models.data_record import ResMLPCheckpointError
from fairseq_resmlp.quantize import _refuse_unsupported, is_int8, quantize_int8

V1 = V1_CHECKPOINT_DIR


@pytest.fixture(scope="module")
def raw_v1():
    return torch.load(V1 / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]


def test_hub_defaults_model_pt_and_data_beside_it(tmp_path):
    for name in ("dict.src.txt", "dict.tgt.txt"):
        shutil.copy(V1 / name, tmp_path / name)
    shutil.copy(V1 / "checkpoint.pt", tmp_path / "model.pt")
    hub = ResMLPModel.from_pretrained(str(tmp_path), source_lang="src", target_lang="tgt")
    assert len(hub.models) == 1 and len(hub.src_dict) == len(hub.models[0].encoder.dictionary)


def test_hub_ensemble_of_checkpoints_and_data_elsewhere(tmp_path):
    for name in ("a.pt", "b.pt"):
        shutil.copy(V1 / "checkpoint.pt", tmp_path / name)  # no dictionaries here: they are in V1
    hub = ResMLPModel.from_pretrained(
        str(tmp_path), checkpoint_file="a.pt:b.pt", data_name_or_path=str(V1), source_lang="src", target_lang="tgt"
    )
    assert len(hub.models) == 2


def test_hub_refuses_to_override_the_data_record():
    with pytest.raises(ResMLPCheckpointError) as e:
        ResMLPModel.from_pretrained(str(V1), "checkpoint.pt", direction="src-tgt", source_dict_sha256="0" * 64)
    assert str(e.value) == (
        "direction, source_dict_sha256: set by the model when it was trained and verified at load; they cannot be "
        "overridden (give the data directory and languages the model was trained on)"
    )


def test_upgrade_of_a_prefixed_version_1_state_dict(raw_v1):
    model = build_model()
    prefixed = {f"model.{k}": v for k, v in raw_v1.items()}
    model.upgrade_state_dict_named(prefixed, "model")
    assert "model.encoder.layers.0.norm1.alpha" in prefixed and "model.encoder.layers.0.mix.norm.alpha" not in prefixed
    assert prefixed["model.version"].dtype == torch.float32 and prefixed["model.version"].tolist() == [3.0]
    plain = dict(raw_v1)
    model.upgrade_state_dict_named(plain, "")
    assert plain["version"].dtype == torch.float32 and plain["version"].tolist() == [3.0]


def test_load_state_dict_is_strict_by_default_and_reports_keys():
    model, other = build_model(seed=0), build_model(seed=1)
    state = other.state_dict()
    result = model.load_state_dict(dict(state))
    assert list(result.missing_keys) == [] and list(result.unexpected_keys) == []
    assert torch.equal(model.encoder.layers[0].norm1.alpha, other.encoder.layers[0].norm1.alpha)
    del state["decoder.layers.0.norm1.alpha"]
    with pytest.raises(ResMLPCheckpointError, match=r"^1 parameter\(s\) that this model has but the checkpoint lacks, "
                       r"first decoder\.layers\.0\.norm1\.alpha: the checkpoint was trained with different model options"):  # fmt: skip
        model.load_state_dict(dict(state))
    assert model.load_state_dict(dict(state), strict=False).missing_keys == ["decoder.layers.0.norm1.alpha"]


def test_check_shapes_names_the_dictionary_and_the_fix():
    model = build_model()
    state = build_model(seed=1).state_dict()
    state["encoder.embed_tokens.weight"] = torch.zeros(7, state["encoder.embed_tokens.weight"].size(1))
    with pytest.raises(ResMLPCheckpointError) as e:
        model.load_state_dict(state)
    assert str(e.value) == (
        f"the checkpoint was trained with a source dictionary of 7 symbols, but the task's dictionary has "
        f"{len(model.encoder.dictionary)}: translate with the data directory (dictionaries) the model was trained on"
    )


@pytest.mark.parametrize("int8", [True, False, None])
def test_int8_option_quantizes_when_the_weights_are_loaded(int8):
    model = build_model() if int8 is None else build_model(int8=int8)
    if int8 is None:  # the config of a checkpoint older than the option: no int8 field at all
        model.cfg = argparse.Namespace(**{k: v for k, v in vars(model.cfg).items() if k != "int8"})
    model.load_state_dict(build_model(seed=1).state_dict())
    assert is_int8(model) == bool(int8)


def test_int8_guards_name_the_cause():
    model = quantize_int8(build_model())
    tokens = torch.tensor([[5, 6, 2]])
    with torch.enable_grad():  # evaluation with gradients on (fairseq's scoring) is allowed: not training
        model(tokens, torch.tensor([3]), tokens)
    embedding = model.encoder.embed_tokens
    on_meta = torch.nn.Embedding(4, 2, device="meta")
    with pytest.raises(RuntimeError) as e:
        _refuse_unsupported(on_meta, (tokens,))  # weights elsewhere, tokens on the CPU
    assert str(e.value) == (
        "this ResMLP model is quantized to int8, which runs on the CPU only: translate with --cpu "
        "(or leave out --model-overrides \"{'int8': True}\" / int8=True to use the GPU)"
    )
    half = torch.nn.Embedding(4, 2).half()
    with pytest.raises(RuntimeError) as e:
        _refuse_unsupported(half, (tokens,))
    assert str(e.value) == "this ResMLP model is quantized to int8: do not also convert it to half precision (--fp16)"
    embedding.train()
    with pytest.raises(RuntimeError) as e, torch.enable_grad():
        _refuse_unsupported(embedding, (tokens,))
    assert str(e.value) == "int8 quantization is for inference: train without the int8 option"
    with pytest.raises(ValueError) as e:
        quantize_int8(build_model().to("meta"))
    assert str(e.value).startswith("int8 quantization runs on the CPU only, but ") and "is on meta" in str(e.value)
