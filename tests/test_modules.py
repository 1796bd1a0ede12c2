"""Unit tests of the building blocks: Affine, LayerScale, token mixing, left-alignment."""

import torch

from fairseq_resmlp.modules import Affine, LayerScale, TokenMixing, align_tokens_left, leading_pads, restore_time_first


def test_affine_starts_as_identity_and_is_per_channel():
    aff = Affine(4)
    assert torch.equal(aff.alpha, torch.ones(4)) and torch.equal(aff.beta, torch.zeros(4))
    x = torch.randn(3, 2, 4)
    assert torch.equal(aff(x), x)
    with torch.no_grad():
        aff.alpha.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        aff.beta.fill_(0.5)
    assert torch.allclose(aff(x), x * torch.tensor([1.0, 2.0, 3.0, 4.0]) + 0.5)


def test_layerscale_init_value():
    ls = LayerScale(5, 0.2)
    assert torch.allclose(ls.scale, torch.full((5,), 0.2))
    assert torch.allclose(ls(torch.ones(2, 5)), torch.full((2, 5), 0.2))


def test_token_mixing_is_one_matrix_shared_by_channels():
    mix = TokenMixing(8, causal=False)
    x = torch.randn(5, 3, 4)  # T x B x C
    expected = torch.einsum("ts,sbc->tbc", mix.weight[:5, :5], x) + mix.bias[:5, None, None]
    assert torch.allclose(mix(x), expected, atol=1e-6)


def test_causal_token_mixing_is_lower_triangular():
    mix = TokenMixing(8, causal=True)
    assert torch.count_nonzero(mix.weight.triu(diagonal=1)) == 0
    with torch.no_grad():  # even a non-triangular stored matrix must not leak the future
        mix.weight.normal_()
    x = torch.randn(6, 2, 3)
    y = mix(x)
    x2 = x.clone()
    x2[4:] = torch.randn(2, 2, 3)
    assert torch.equal(mix(x2)[:4], y[:4])


def test_padding_contributes_nothing():
    mix = TokenMixing(8, causal=False)
    x = torch.randn(6, 2, 3)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[1, 4:] = True
    y = mix(x, mask)
    x2 = x.clone()
    x2[4:, 1] = 1e3  # garbage at padded positions
    assert torch.equal(mix(x2, mask)[:4, 1], y[:4, 1])


def test_identity_init():
    mix = TokenMixing(6, causal=True, init="identity")
    x = torch.randn(4, 2, 3)
    assert torch.equal(mix(x), x)


def test_left_alignment_round_trip():
    pad = 1
    tokens = torch.tensor([[1, 1, 5, 6, 2], [7, 8, 9, 4, 2], [1, 1, 1, 3, 2]])
    shift = leading_pads(tokens, pad)
    assert shift.tolist() == [2, 0, 3]
    aligned = align_tokens_left(tokens, shift)
    assert aligned.tolist() == [[5, 6, 2, 1, 1], [7, 8, 9, 4, 2], [3, 2, 1, 1, 1]]
    features = aligned.t().unsqueeze(-1).float()  # T x B x 1
    assert restore_time_first(features, shift).squeeze(-1).t().long().tolist() == tokens.tolist()
    assert leading_pads(torch.tensor([[5, 2, 1]]), pad) is None
