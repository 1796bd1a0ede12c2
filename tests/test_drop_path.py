"""--drop-path (stochastic depth): whole sentences' residual branches dropped while training, nothing in evaluation."""

import argparse

import pytest
import torch

from fairseq_resmlp.models.resmlp import resmlp_tiny
from fairseq_resmlp.modules.drop_path import DropPath
from fairseq_resmlp.modules.resmlp_layer import ResMLPDecoderLayer, ResMLPEncoderLayer


def test_evaluation_and_rate_zero_return_the_branch_itself():
    branch = torch.randn(4, 3, 5)
    assert DropPath(0.5).eval()(branch) is branch
    assert DropPath(0.0).train()(branch) is branch


def test_each_sentence_is_dropped_whole_or_kept_and_rescaled():
    torch.manual_seed(0)
    p = 0.25
    branch = torch.rand(3, 4000, 2) + 1.0  # T x B x C, no zeros of its own
    out = DropPath(p).train()(branch)
    kept = out.ne(0).all(dim=2).all(dim=0)
    dropped = out.eq(0).all(dim=2).all(dim=0)
    assert bool((kept | dropped).all())  # one draw per sentence: never a partly dropped one
    assert torch.allclose(out[:, kept], branch[:, kept] / (1 - p))
    assert abs(float(dropped.float().mean()) - p) < 0.03
    assert DropPath(p).extra_repr() == "p=0.25"


@pytest.mark.parametrize("p", [1.0, 1.5, -0.01])
def test_rates_outside_zero_one_are_refused(p):
    with pytest.raises(ValueError, match=rf"^--drop-path must be in \[0, 1\), got {p}$"):
        DropPath(p)


def layer_cfg(**options) -> argparse.Namespace:
    cfg = argparse.Namespace(dropout=0.0, encoder_embed_dim=8, decoder_embed_dim=8, **options)
    resmlp_tiny(cfg)
    return cfg


def perturb(layer):
    """LayerScale away from its small start and a non-identity norm, so that every branch changes the output."""
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    return layer


def run(layer, x):
    if isinstance(layer, ResMLPDecoderLayer):
        encoder_out = torch.randn(3, x.size(1), 8, generator=torch.Generator().manual_seed(2))
        return layer(x, encoder_out, None)[0]
    return layer(x, None)


@pytest.mark.parametrize("layer_type", [ResMLPEncoderLayer, ResMLPDecoderLayer])
def test_every_residual_branch_of_a_layer_is_dropped(layer_type):
    """At a rate near 1, most sentences pass a layer unchanged: only if every branch (token mixing, cross-attention,
    channel MLP) is dropped; at rate 0 or in evaluation none does."""
    x = torch.randn(5, 64, 8)
    layer = perturb(layer_type(layer_cfg(drop_path=0.99), 16)).train()
    assert layer.drop_path.p == 0.99
    torch.manual_seed(3)
    unchanged = run(layer, x).eq(x).all(dim=2).all(dim=0)
    assert int(unchanged.sum()) >= 48, int(unchanged.sum())  # 0.99^3 of 64 sentences expected: about 62
    assert not bool(run(layer.eval(), x).eq(x).all(dim=2).all(dim=0).any())
    plain = perturb(layer_type(layer_cfg(drop_path=0.0), 16)).train()
    assert not bool(run(plain, x).eq(x).all(dim=2).all(dim=0).any())


def test_a_configuration_without_the_option_trains_without_it():
    """Checkpoints saved before --drop-path existed have no value for it."""
    cfg = layer_cfg()
    del cfg.drop_path
    assert ResMLPEncoderLayer(cfg, 16).drop_path.p == 0.0
    assert ResMLPDecoderLayer(cfg, 16).drop_path.p == 0.0
