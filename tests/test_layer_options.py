"""The layers' options as read from a configuration, and the decoder layer's call defaults.

A checkpoint saved before an option existed has no field for it: its layers must be built as it trained, the
paper's block (a full token-mixing matrix without dropout, no gate). A value that names no choice is refused by
name. Calling the decoder layer without the optional arguments is one sentence per batch entry, no attention
weights: what fairseq's decoder passes when it is not aligning.
"""

import argparse

import pytest
import torch
from helpers import LAYER_DIM, layer_cfg, perturb_layer, run_layer
from torch import nn

from fairseq_resmlp.modules.resmlp_layer import ResMLPDecoderLayer, ResMLPEncoderLayer
from fairseq_resmlp.modules.token_mixing import TokenMixing

LAYERS = [ResMLPEncoderLayer, ResMLPDecoderLayer]
POSITIONS = 16
DIM = LAYER_DIM
# The options added after the first release, with a value other than the paper's (their default).
LATER_OPTIONS = dict(token_mixing_matrix="toeplitz", token_mixing_dropout=0.25, token_mixing_gate="linear")


def predating(*names: str, **options) -> argparse.Namespace:
    """A configuration as saved before the options ``names`` existed: it has no field for them."""
    cfg = layer_cfg(**options)
    for name in names:
        delattr(cfg, name)
    return cfg


def assert_paper_mixing(layer: nn.Module) -> None:
    mixing = layer.linear_tokens
    assert isinstance(mixing, TokenMixing)
    assert mixing.matrix_type == "full"
    assert mixing.relative is None
    assert mixing.weight is not None and mixing.weight.shape == (POSITIONS, POSITIONS)
    assert {name: p.shape for name, p in mixing.named_parameters()} == {
        "weight": (POSITIONS, POSITIONS),
        "bias": (POSITIONS,),
    }
    causal = isinstance(layer, ResMLPDecoderLayer)
    assert mixing.causal is causal
    assert repr(mixing) == f"TokenMixing(max_positions={POSITIONS}, causal={causal})"  # the model fairseq-train logs
    assert mixing.dropout == 0.0


@pytest.mark.parametrize("layer_type", LAYERS)
def test_a_configuration_from_before_the_later_options_builds_the_papers_layer(layer_type):
    """No field for the matrix, its dropout or the gate: a full matrix, no dropout on it, no gate; the same
    parameters as a layer built with the paper's values named, and no randomness while training."""
    old = predating(*LATER_OPTIONS, "drop_path")
    torch.manual_seed(0)
    layer = layer_type(old, POSITIONS)
    assert_paper_mixing(layer)
    assert layer.gate_tokens is None
    torch.manual_seed(0)
    named = layer_type(
        layer_cfg(token_mixing_matrix="full", token_mixing_dropout=0.0, token_mixing_gate="none"), POSITIONS
    )
    assert {k: v.shape for k, v in layer.state_dict().items()} == {k: v.shape for k, v in named.state_dict().items()}
    assert all(torch.equal(v, named.state_dict()[k]) for k, v in layer.state_dict().items())
    perturb_layer(layer)
    x = torch.randn(5, 3, DIM)
    with torch.no_grad():
        trained = run_layer(layer.train(), x)
        assert torch.equal(run_layer(layer, x), trained)  # no dropout anywhere, the mixing matrix's included
        assert torch.equal(run_layer(layer.eval(), x), trained)


@pytest.mark.parametrize("layer_type", LAYERS)
@pytest.mark.parametrize("missing", list(LATER_OPTIONS))
def test_each_missing_option_takes_the_papers_value_alone(layer_type, missing):
    """One option missing, the others set to other values: only the missing one falls back to the paper's."""
    others = {k: v for k, v in LATER_OPTIONS.items() if k != missing}
    layer = layer_type(predating(missing, **others), POSITIONS)
    mixing = layer.linear_tokens
    matrix = "full" if missing == "token_mixing_matrix" else "toeplitz"
    assert mixing.matrix_type == matrix
    assert (mixing.weight is not None) is (matrix == "full")
    assert (mixing.relative is not None) is (matrix == "toeplitz")
    assert mixing.dropout == (0.0 if missing == "token_mixing_dropout" else 0.25)
    if missing == "token_mixing_gate":
        assert layer.gate_tokens is None
    else:
        assert isinstance(layer.gate_tokens, nn.Linear)


@pytest.mark.parametrize("layer_type", LAYERS)
def test_the_named_options_are_the_ones_built(layer_type):
    layer = layer_type(layer_cfg(token_mixing_init="identity", **LATER_OPTIONS), POSITIONS)
    mixing = layer.linear_tokens
    assert (mixing.matrix_type, mixing.dropout, mixing.max_positions) == ("toeplitz", 0.25, POSITIONS)
    # identity init: 1 at offset 0 only (the causal matrix's upper triangle is masked when it is used)
    matrix = mixing.matrix(POSITIONS)
    assert torch.equal(matrix.tril() if mixing.causal else matrix, torch.eye(POSITIONS))
    gate = layer.gate_tokens
    assert isinstance(gate, nn.Linear) and (gate.in_features, gate.out_features) == (DIM, DIM)
    assert torch.equal(gate.weight, torch.zeros(DIM, DIM)) and torch.equal(gate.bias, torch.ones(DIM))


@pytest.mark.parametrize("layer_type", LAYERS)
@pytest.mark.parametrize("kind", ["sigmoid", "Linear", "", "gated"])
def test_an_unknown_gate_kind_is_refused_with_the_whole_message(layer_type, kind):
    with pytest.raises(ValueError, match=rf"^--token-mixing-gate must be 'none' or 'linear', got {kind!r}$"):
        layer_type(layer_cfg(token_mixing_gate=kind), POSITIONS)


def decoder_and_inputs(seed: int = 0):
    torch.manual_seed(seed)
    layer = perturb_layer(ResMLPDecoderLayer(layer_cfg(**LATER_OPTIONS), POSITIONS)).eval()
    g = torch.Generator().manual_seed(seed + 5)
    x = torch.randn(4, 2, DIM, generator=g)  # T x B x C: two sentences
    encoder_out = torch.randn(3, 2, DIM, generator=g)  # each sentence its own source
    return layer, x, encoder_out


def test_decoder_layer_defaults_return_no_attention_weights():
    """need_attn defaults to False: no weights (fairseq only asks the alignment layer for them)."""
    layer, x, encoder_out = decoder_and_inputs()
    with torch.no_grad():
        out, attn = layer(x, encoder_out, None)
        assert attn is None
        named_out, named_attn = layer(x, encoder_out, None, incremental_state=None, need_attn=False, group=1)
        assert named_attn is None
        assert torch.allclose(out, named_out, atol=1e-6)
        _, weights = layer(x, encoder_out, None, need_attn=True)
    assert weights is not None and weights.shape == (2, 4, 3)  # B x T x S
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4), atol=1e-5)


def test_decoder_layer_defaults_attend_each_sentence_to_its_own_source():
    """group defaults to 1: while decoding step by step (where the layer caches keys and values), batch entries are
    separate sentences, not hypotheses that share the first one's source (a full sequence ignores group)."""
    layer, x, encoder_out = decoder_and_inputs()

    def decode(x, encoder_out, **options):
        state: dict = {}
        return torch.cat([layer(x[t : t + 1], encoder_out, None, state, **options)[0] for t in range(x.size(0))])

    with torch.no_grad():
        both = decode(x, encoder_out)
        for b in range(2):
            alone = decode(x[:, b : b + 1], encoder_out[:, b : b + 1])
            assert torch.allclose(both[:, b], alone[:, 0], atol=1e-5)
        # As two hypotheses of one sentence (group 2) the second reads the first's source: a different output.
        grouped = decode(x, encoder_out, group=2)
    assert torch.allclose(grouped[:, 0], both[:, 0], atol=1e-5)
    assert not torch.allclose(grouped[:, 1], both[:, 1], atol=1e-3)


def test_decoder_layer_without_incremental_state_mixes_the_whole_prefix():
    """incremental_state defaults to None: the call is one whole (causal) sequence, not a step of a decoding."""
    layer, x, encoder_out = decoder_and_inputs()
    with torch.no_grad():
        whole, _ = layer(x, encoder_out, None)
        state: dict = {}
        steps = [layer(x[t : t + 1], encoder_out, None, state)[0] for t in range(x.size(0))]
    assert torch.allclose(torch.cat(steps), whole, atol=1e-5)
    # Position 1 of the whole sequence sees position 0; alone it would not.
    with torch.no_grad():
        first_alone, _ = layer(x[1:2], encoder_out, None)
    assert not torch.allclose(first_alone[0], whole[1], atol=1e-3)
