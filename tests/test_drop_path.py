"""--drop-path (stochastic depth): whole sentences' residual branches dropped while training, nothing in evaluation."""

import pytest
import torch
from helpers import LAYER_DIM, layer_cfg, perturb_layer, run_layer

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


@pytest.mark.parametrize("layer_type", [ResMLPEncoderLayer, ResMLPDecoderLayer])
def test_every_residual_branch_of_a_layer_is_dropped(layer_type):
    """At a rate near 1, most sentences pass a layer unchanged: only if every branch (token mixing, cross-attention,
    channel MLP) is dropped; at rate 0 or in evaluation none does."""
    x = torch.randn(5, 64, LAYER_DIM)
    layer = perturb_layer(layer_type(layer_cfg(drop_path=0.99), 16)).train()
    assert layer.drop_path.p == 0.99
    torch.manual_seed(3)
    unchanged = run_layer(layer, x).eq(x).all(dim=2).all(dim=0)
    assert int(unchanged.sum()) >= 48, int(unchanged.sum())  # 0.99^3 of 64 sentences expected: about 62
    assert not bool(run_layer(layer.eval(), x).eq(x).all(dim=2).all(dim=0).any())
    plain = perturb_layer(layer_type(layer_cfg(drop_path=0.0), 16)).train()
    assert not bool(run_layer(plain, x).eq(x).all(dim=2).all(dim=0).any())


def test_a_configuration_without_the_option_trains_without_it():
    """Checkpoints saved before --drop-path existed have no value for it."""
    cfg = layer_cfg()
    del cfg.drop_path
    assert ResMLPEncoderLayer(cfg, 16).drop_path.p == 0.0
    assert ResMLPDecoderLayer(cfg, 16).drop_path.p == 0.0
