"""A checkpoint written by fairseq-resmlp 0.1.0 (state-dict version 1, before the layer renames) still loads and
translates exactly as it did (tests/data/checkpoint_v1/README.md says how it was made)."""

import json

import pytest
import torch
from helpers import V1_CHECKPOINT_DIR, load_v1_hub

from fairseq_resmlp import ResMLPCheckpointError

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
    assert float(upgraded["version"][0]) == 3
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


def _small(**options):
    from helpers import build_model

    from fairseq_resmlp.models.resmlp import resmlp_small

    sizes = dict(encoder_embed_dim=16, decoder_embed_dim=16, encoder_ffn_embed_dim=24, decoder_ffn_embed_dim=24)
    sizes.update(max_source_positions=16, max_target_positions=16)
    return build_model(resmlp_small, seed=3, **sizes, **options)


def _outputs(model):
    src = torch.tensor([[7, 8, 9, 10, 2], [1, 1, 11, 12, 2]])
    prev = torch.tensor([[2, 7, 8, 9], [2, 10, 11, 1]])
    with torch.no_grad():
        return model(src, torch.tensor([5, 3]), prev)[0]


def test_resmlp_small_checkpoint_from_before_the_gate_loads_without_gates():
    """resmlp_small turned --token-mixing-gate on by default with state-dict version 3: a checkpoint of version 2 (no
    gate weights, no value for the option) builds with the new default and must load as it was trained: ungated,
    with its outputs unchanged, and recorded as ungated (re-saving, exporting and averaging see the truth)."""
    trained = _small(token_mixing_gate="none")
    old = {k: v for k, v in trained.state_dict().items()}
    old["version"] = torch.tensor([2.0])
    model = _small()  # the option absent, as in the old checkpoint's config: resmlp_small's default applies
    assert model.encoder.layers[0].gate_tokens is not None
    model.load_state_dict(old)
    assert all(layer.gate_tokens is None for layer in [*model.encoder.layers, *model.decoder.layers])
    assert model.cfg.token_mixing_gate == "none"
    assert not any("gate_tokens" in k for k in model.state_dict())
    assert float(model.state_dict()["version"][0]) == 3
    torch.testing.assert_close(_outputs(model.eval()), _outputs(trained), rtol=0, atol=0)


def test_gated_checkpoint_and_current_checkpoints_keep_their_gates():
    gated = _small()
    state = gated.state_dict()
    assert float(state["version"][0]) == 3 and any("gate_tokens" in k for k in state)
    with torch.no_grad():
        for layer in gated.encoder.layers:
            layer.gate_tokens.weight.normal_()
    again = _small()
    again.load_state_dict(gated.state_dict())
    torch.testing.assert_close(_outputs(again), _outputs(gated), rtol=0, atol=0)
    # A version-3 checkpoint without gates while the options ask for them is a real mismatch: refused, not dropped.
    plain = _small(token_mixing_gate="none").state_dict()
    with pytest.raises(
        ResMLPCheckpointError, match=r"lacks, first encoder\.layers\.0\.gate_tokens\.weight: .*--token-mixing-gate"
    ):
        _small().load_state_dict(plain)
    # And a gated checkpoint into a model built without gates (--model-overrides): one line, not torch's key list.
    with pytest.raises(ResMLPCheckpointError, match=r"the checkpoint has but this model lacks, first .*gate_tokens"):
        _small(token_mixing_gate="none").load_state_dict(gated.state_dict())
    # An old checkpoint loaded into a model built without gates: nothing to drop.
    old = dict(plain, version=torch.tensor([2.0]))
    ungated = _small(token_mixing_gate="none")
    ungated.load_state_dict(old)
    assert ungated.cfg.token_mixing_gate == "none"


@pytest.mark.parametrize(
    "given, expected",
    [([], "linear"), (["--token-mixing-gate", "none"], "none"), (["--token-mixing-gate", "linear"], "linear")],
)
def test_resmlp_small_gate_can_be_turned_off_on_fairseqs_command_line(given, expected):
    """The option is a choice, not a flag: fairseq turns a bool option into store_true, which could only turn the
    gate on; the paper's block on resmlp_small's recipe needs --token-mixing-gate none."""
    from fairseq import options

    from fairseq_resmlp_tools.fairseq_io import user_dir

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser, ["data-bin", "--user-dir", str(user_dir()), "--task", "translation", "--arch", "resmlp_small", *given]
    )
    assert args.token_mixing_gate == expected
