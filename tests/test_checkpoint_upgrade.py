"""A checkpoint written by fairseq-resmlp 0.1.0 (state-dict version 1, before the layer renames) still loads and
translates exactly as it did (tests/data/checkpoint_v1/README.md says how it was made)."""

import json

import pytest
import torch
from helpers import V1_CHECKPOINT_DIR, load_v1_hub

FIXTURE = V1_CHECKPOINT_DIR


@pytest.fixture(scope="module")
def hub(v1_data_dir):
    return load_v1_hub(v1_data_dir)


def test_v1_keys_are_renamed_and_versioned(hub):
    keys = hub.models[0].state_dict().keys()
    assert "encoder.layers.0.norm1.alpha" in keys and "decoder.layers.1.ls3.scale" in keys
    assert not any(".mix." in k or ".cross." in k or ".mlp." in k for k in keys)
    raw = torch.load(FIXTURE / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]
    assert "encoder.layers.0.mix.norm.alpha" in raw  # the fixture really is version 1
    upgraded = dict(raw)
    hub.models[0].upgrade_state_dict_named(upgraded, "")
    assert float(upgraded["version"][0]) == 2
    assert torch.equal(upgraded["decoder.layers.0.norm2.alpha"], raw["decoder.layers.0.cross.norm.alpha"])
    assert torch.equal(upgraded["decoder.layers.0.ls2.scale"], raw["decoder.layers.0.cross.layerscale.scale"])
    again = dict(upgraded)
    hub.models[0].upgrade_state_dict_named(again, "")  # idempotent
    assert again.keys() == upgraded.keys()


@pytest.mark.parametrize("beam", [1, 4])
def test_v1_checkpoint_translates_identically(hub, beam):
    expected = json.loads((FIXTURE / "expected.json").read_text())
    results = hub.generate([hub.encode(s) for s in expected["sources"]], beam=beam)
    for got, want in zip(results, expected[f"beam{beam}"]):
        assert got[0]["tokens"].tolist() == want["tokens"]
        assert abs(float(got[0]["score"]) - want["score"]) <= 1e-5


def test_v1_checkpoint_teacher_forced_logits(hub):
    expected = json.loads((FIXTURE / "expected.json").read_text())
    src, prev = torch.tensor(expected["tf_src"]), torch.tensor(expected["tf_prev"])
    with torch.no_grad():
        logits, _ = hub.models[0](src, (src != hub.src_dict.pad()).sum(1), prev)
    reference = torch.load(FIXTURE / "tf_logits.pt", weights_only=True)
    assert (logits - reference).abs().max() <= 1e-5
