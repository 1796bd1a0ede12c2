"""Unit tests of the building blocks: Affine, LayerScale, token mixing, left-alignment."""

import pytest
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
    # LayerScale is the residual add of its branch: residual + scale * branch, in one kernel.
    assert torch.allclose(ls(torch.ones(2, 5), torch.ones(2, 5)), torch.full((2, 5), 1.2))


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


@pytest.mark.parametrize("causal", [False, True])
def test_toeplitz_token_mixing_is_shift_invariant(causal):
    """A[t, s] = w[t - s]: one weight per offset, so shifting input and output by one position commutes."""
    mix = TokenMixing(8, causal=causal, matrix="toeplitz", init="trunc_normal")
    assert mix.weight is None and mix.relative.numel() == (8 if causal else 15)
    A = mix.matrix(8)
    assert torch.equal(A[1:, 1:], A[:-1, :-1])
    with torch.no_grad():
        mix.bias.zero_()
    x = torch.randn(7, 2, 3)
    shifted = torch.cat([torch.zeros(1, 2, 3), x])  # the same sentence one position later
    assert torch.allclose(mix(shifted)[1:], mix(x), atol=1e-6) if causal else True
    # Its gradient reaches every offset used (including the negative ones in the encoder).
    mix(x).sum().backward()
    used = 7 if causal else 13
    assert int((mix.relative.grad != 0).sum()) == used


def test_full_plus_toeplitz_starts_as_the_full_matrix():
    torch.manual_seed(0)
    full = TokenMixing(8, causal=False)
    torch.manual_seed(0)
    both = TokenMixing(8, causal=False, matrix="full_plus_toeplitz")
    assert torch.equal(both.matrix(8), full.matrix(8))
    assert torch.count_nonzero(both.relative) == 0
    x = torch.randn(5, 2, 3)
    both(x).sum().backward()
    assert both.relative.grad.abs().sum() > 0 and both.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("matrix", ["full", "toeplitz", "full_plus_toeplitz"])
def test_token_mixing_step_equals_full_forward(matrix):
    """The fixed-shape step and the incremental step use the same matrix as the full forward."""
    mix = TokenMixing(8, causal=True, matrix=matrix, init="xavier")
    with torch.no_grad():
        mix.bias.normal_()  # xavier starts with zero bias: a bias subtracted instead of added would pass
        if mix.relative is not None:
            mix.relative.normal_()
    x = torch.randn(6, 2, 3)
    full = mix(x)
    inputs = torch.zeros(2, 6, 3)  # a buffer of 6 positions, fewer than the matrix's 8
    for t in range(6):
        out = mix.step(x[t], inputs, torch.tensor([t]), 6)
        assert torch.allclose(out, full[t], atol=1e-6)
    state = {}
    for t in range(6):
        assert torch.allclose(mix(x[t : t + 1], None, state)[0], full[t], atol=1e-6)


def test_token_mixing_trunc_normal_init_and_repr():
    torch.manual_seed(0)
    mix = TokenMixing(64, causal=False, init="trunc_normal")
    assert 0.018 < float(mix.weight.std()) < 0.022 and torch.count_nonzero(mix.bias) == 0  # std 0.02, zero bias
    assert mix.extra_repr() == "max_positions=64, causal=False"
    mix = TokenMixing(4, causal=True, matrix="toeplitz", dropout=0.1)
    assert mix.extra_repr() == "max_positions=4, causal=True, matrix=toeplitz, dropout=0.1"


def test_token_mixing_dropout_drops_matrix_entries_in_training_only():
    mix = TokenMixing(16, causal=False, dropout=0.5, init="identity")
    x = torch.ones(16, 1, 1)
    assert torch.equal(mix.eval()(x), x)  # no dropout at inference
    torch.manual_seed(0)
    mix.train()
    y = mix(x).flatten()
    # identity A: each output keeps its diagonal entry (scaled by 2) or loses it
    assert set(y.tolist()) <= {0.0, 2.0} and 3 < int((y == 0).sum()) < 13
    with pytest.raises(ValueError, match="--token-mixing-dropout"):
        TokenMixing(4, causal=False, dropout=1.0)
    with pytest.raises(ValueError, match="--token-mixing-matrix"):
        TokenMixing(4, causal=False, matrix="circulant")


def test_left_alignment_round_trip():
    pad = 1
    tokens = torch.tensor([[1, 1, 5, 6, 2], [7, 8, 9, 4, 2], [1, 1, 1, 3, 2]])
    shift = leading_pads(tokens, pad)
    assert shift.tolist() == [2, 0, 3]
    aligned = align_tokens_left(tokens, shift)
    assert aligned.tolist() == [[5, 6, 2, 1, 1], [7, 8, 9, 4, 2], [3, 2, 1, 1, 1]]
    features = aligned.t().unsqueeze(-1).float()  # T x B x 1
    assert restore_time_first(features, shift).squeeze(-1).t().long().tolist() == tokens.tolist()
    assert leading_pads(torch.tensor([[5, 2, 1]]), pad).tolist() == [0]


def test_folded_affine_linear_equals_unfolded():
    from fairseq_resmlp.modules import ChannelMLP, norm_then_linear

    torch.manual_seed(0)
    norm = Affine(8)
    mlp = ChannelMLP(8, 4, 0.0)  # fewer weights (32) than activations: the folded path is taken
    with torch.no_grad():
        norm.alpha.normal_()
        norm.beta.normal_()
        mlp.fc1.bias.normal_()  # the folded path adds the bias itself: a zero bias would hide its loss
    x = torch.randn(5, 3, 8, requires_grad=True)
    assert x.numel() > mlp.fc1.weight.numel()
    folded = mlp(x, norm=norm)
    plain = mlp(norm(x))
    assert torch.allclose(folded, plain, atol=1e-5)
    params = [x, norm.alpha, norm.beta, mlp.fc1.weight, mlp.fc1.bias]
    grads = torch.autograd.grad(folded.sum(), params)
    plain_grads = torch.autograd.grad(plain.sum(), params)
    for g, h in zip(grads, plain_grads):
        assert torch.allclose(g, h, atol=1e-5)

    # Only a plain floating-point nn.Linear is folded: a subclass (e.g. quantized or LoRA) is applied as it is.
    class Doubled(torch.nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    doubled = Doubled(8, 4)
    assert torch.allclose(norm_then_linear(norm, doubled, x), doubled(norm(x)))


def test_cross_attention_matches_fairseq_multihead_attention():
    """Same weights, same function as fairseq's MultiheadAttention (encoder-decoder mode), with padding."""
    from fairseq.modules import MultiheadAttention

    from fairseq_resmlp.modules.cross_attention import CrossAttention

    torch.manual_seed(0)
    ours = CrossAttention(16, 12, 4, 0.0).eval()
    ref = MultiheadAttention(16, 4, kdim=12, vdim=12, encoder_decoder_attention=True).eval()
    ref.load_state_dict(ours.state_dict())
    query, enc = torch.randn(5, 3, 16), torch.randn(7, 3, 12)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 5:] = True
    pad[2, :2] = True  # left padding
    expected, expected_w = ref(query, enc, enc, key_padding_mask=pad, static_kv=True, need_weights=True)
    for need in (False, True):
        out, w = ours(query, enc, pad, need_weights=need)
        assert torch.allclose(out, expected, atol=1e-5)
        if need:
            assert torch.allclose(w, expected_w, atol=1e-6)
    # Incremental: keys/values computed once, reordered with the beams.
    state = {}
    ours(query[:1], enc, pad, incremental_state=state)
    order = torch.tensor([2, 0, 1])
    ours.reorder_incremental_state(state, order)
    out, _ = ours(query[1:2, order], enc[:, order] * 0, pad[order], incremental_state=state)  # cache, not enc
    assert torch.allclose(out, expected[1:2, order], atol=1e-5)


def test_cross_attention_initialisation_is_fairseqs():
    """fairseq's MultiheadAttention initialisation: Xavier-uniform with gain 1/sqrt(2) for the query, key and value
    projections (fan-in 256 + fan-out 256 here), plain Xavier for the output projection, whose bias starts at 0."""
    import math

    from fairseq_resmlp.modules.cross_attention import CrossAttention

    torch.manual_seed(0)
    attn = CrossAttention(256, 256, 4, 0.0)
    for proj, gain in ((attn.q_proj, 2**-0.5), (attn.k_proj, 2**-0.5), (attn.v_proj, 2**-0.5), (attn.out_proj, 1.0)):
        bound = gain * math.sqrt(6 / (256 + 256))
        # 65,536 uniform draws: the largest is within 0.1% of the bound, none beyond it.
        assert bound * 0.999 < proj.weight.abs().max().item() <= bound
    assert torch.equal(attn.out_proj.bias, torch.zeros(256))


def test_cross_attention_dropout_applies_in_training_only_on_both_paths():
    """The attention-weight dropout acts in training mode only, on the fused path and on the need_weights path
    (alignments), with the module's rate: without dropout, training and evaluation give the same output."""
    from fairseq_resmlp.modules.cross_attention import CrossAttention

    torch.manual_seed(2)
    attn = CrossAttention(16, 12, 4, 0.0)
    query, enc = torch.randn(6, 3, 16), torch.randn(7, 3, 12)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 4:] = True
    reference = attn.eval()(query, enc, pad)[0]
    for need in (False, True):
        torch.testing.assert_close(attn.train()(query, enc, pad, need_weights=need)[0], reference)
    attn.dropout = 0.5
    for need in (False, True):
        torch.testing.assert_close(attn.eval()(query, enc, pad, need_weights=need)[0], reference)
        torch.manual_seed(3)
        dropped = attn.train()(query, enc, pad, need_weights=need)[0]
        assert not torch.allclose(dropped, reference, atol=1e-3)
        # Rate 0.5: about half of the attention weights are kept (and doubled), not none and not all.
        assert 0.05 < (dropped - reference).abs().mean() / reference.abs().mean() < 2.0
    attn.dropout = 1.0  # every weight dropped: only the output projection's bias is left
    for need in (False, True):
        out = attn.train()(query, enc, pad, need_weights=need)[0]
        torch.testing.assert_close(out, attn.out_proj.bias.expand_as(out))


def test_cross_attention_never_runs_cudnn_attention(monkeypatch):
    """cuDNN attention builds an execution graph per shape (host time on every fairseq batch): the fused attention
    runs with every other backend allowed, and the process-wide choice is restored afterwards."""
    from torch.backends import cuda

    from fairseq_resmlp.modules import cross_attention

    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        flags = (
            cuda.cudnn_sdp_enabled(),
            cuda.flash_sdp_enabled(),
            cuda.mem_efficient_sdp_enabled(),
            cuda.math_sdp_enabled(),
        )
        seen.append(flags)
        return real(*args, **kwargs)

    monkeypatch.setattr(cross_attention.F, "scaled_dot_product_attention", spy)
    attention = cross_attention.CrossAttention(16, 16, 2, 0.1).train()
    pad = torch.zeros(2, 4, dtype=torch.bool)
    pad[1, 3:] = True
    before = cuda.cudnn_sdp_enabled()
    out, _ = attention(torch.randn(3, 2, 16), torch.randn(4, 2, 16), pad)
    out.sum().backward()
    assert seen == [(False, True, True, True)]
    assert cuda.cudnn_sdp_enabled() == before


def test_cross_attention_per_sentence_cache_in_beam_search():
    """With group > 1, keys/values are cached once per sentence and follow beams and finished sentences."""
    from fairseq_resmlp.modules.cross_attention import CrossAttention

    torch.manual_seed(1)
    attn = CrossAttention(16, 16, 4, 0.0).eval()
    beam, sentences = 3, 4
    enc = torch.randn(6, sentences, 16).repeat_interleave(beam, dim=1)  # S x (sentences*beam) x C
    pad = torch.zeros(sentences * beam, 6, dtype=torch.bool)
    pad[3:6, :2] = True
    query = torch.randn(3, sentences * beam, 16)
    full, full_w = attn(query, enc, pad, need_weights=True)
    state = {}
    out0, w0 = attn(query[:1], enc, pad, incremental_state=state, need_weights=True, group=beam)
    cached = next(v for v in state.values() if "k" in v)
    assert cached["k"].size(0) == sentences  # one entry per sentence
    assert torch.allclose(out0, full[:1], atol=1e-5) and torch.allclose(w0, full_w[:, :1], atol=1e-6)
    # Within-beam reorder, then sentence 1 finishes (rows 3..5 leave the batch).
    within = torch.tensor([2, 2, 0, 3, 4, 5, 8, 6, 7, 9, 9, 11])
    attn.reorder_incremental_state(state, within)
    out1, _ = attn(query[1:2, within], enc[:, within], pad[within], incremental_state=state)
    assert torch.allclose(out1, full[1:2, within], atol=1e-5)
    keep = torch.tensor([0, 1, 2, 6, 7, 8, 9, 10, 11])
    attn.reorder_incremental_state(state, keep)
    out2, _ = attn(query[2:3, keep], enc[:, keep], pad[keep], incremental_state=state)
    assert torch.allclose(out2, full[2:3, keep], atol=1e-5)
    # A reorder that moves a hypothesis to another sentence cannot be followed by a per-sentence cache: refused.
    with pytest.raises(RuntimeError):
        attn.reorder_incremental_state(state, torch.tensor([0, 1, 3, 3, 4, 5, 6, 7, 8]))
    with pytest.raises(RuntimeError, match="whole groups"):
        attn.reorder_incremental_state(state, torch.tensor([0, 1, 2, 3]))
    # group 1 (the default): one entry per row.
    other = {}
    attn(query[:1], torch.randn(6, sentences * beam, 16), pad, incremental_state=other)
    assert next(v for v in other.values() if "k" in v)["k"].size(0) == sentences * beam


# Written against mutants that survived the first whole-module run of token_mixing.py (docs/testing.md).


@pytest.mark.parametrize("causal", [False, True])
def test_toeplitz_identity_init_is_exactly_the_identity(causal):
    # The Toeplitz vector is taken from the first row and column of an initial full matrix, at the right offsets.
    mix = TokenMixing(8, causal=causal, init="identity", matrix="toeplitz")
    a = mix.matrix(6)
    assert torch.equal(a.tril() if causal else a, torch.eye(6))


@pytest.mark.parametrize("matrix", ["toeplitz", "full_plus_toeplitz"])
def test_toeplitz_offsets_are_not_saved(matrix):
    # A derived index table: checkpoints hold the parameters only.
    keys = set(TokenMixing(8, causal=False, matrix=matrix).state_dict())
    assert keys == ({"relative", "bias"} if matrix == "toeplitz" else {"weight", "relative", "bias"})


def test_token_mixing_dropout_uses_its_rate(monkeypatch):
    import fairseq_resmlp.modules.token_mixing as token_mixing

    rates = []
    real = token_mixing.F.dropout

    def spy(w, p=0.5, *args, **kwargs):
        rates.append(p)
        return real(w, p, *args, **kwargs)

    monkeypatch.setattr(token_mixing.F, "dropout", spy)
    TokenMixing(8, causal=False, dropout=0.1).train()(torch.ones(8, 1, 2))
    assert rates == [0.1]


def test_token_mixing_length_limits_are_exact_and_named():
    mix = TokenMixing(4, causal=True).eval()
    assert mix(torch.ones(4, 1, 2)).shape == (4, 1, 2)  # exactly max_positions: allowed
    with pytest.raises(
        ValueError, match=r"sequence of 5 positions is longer than the token-mixing matrix \(4\); raise"
    ):
        mix(torch.ones(5, 1, 2))
    state = {}
    for _ in range(4):  # steps 0..3 fill the matrix
        mix(torch.ones(1, 1, 2), incremental_state=state)
    with pytest.raises(ValueError, match=r"decoding step 4 is beyond the token-mixing matrix \(4 positions\)"):
        mix(torch.ones(1, 1, 2), incremental_state=state)


@pytest.mark.parametrize("layer_type", ["encoder", "decoder"])
def test_token_mixing_gate_starts_at_one_and_multiplies_the_mixing(layer_type):
    """--token-mixing-gate: branch = A h * (h W_g + b_g) with h = norm1(x); at initialisation the gate is exactly 1,
    so the gated layer equals the ungated one with the same other weights."""
    import argparse

    from fairseq_resmlp.models.resmlp import resmlp_tiny
    from fairseq_resmlp.modules.resmlp_layer import ResMLPDecoderLayer, ResMLPEncoderLayer

    def layer(gate: bool):
        torch.manual_seed(0)
        cfg = argparse.Namespace(token_mixing_gate="linear" if gate else "none", norm_type="layernorm")
        resmlp_tiny(cfg)
        build = ResMLPEncoderLayer if layer_type == "encoder" else ResMLPDecoderLayer
        return build(cfg, max_positions=8).eval()

    plain, gated_layer = layer(False), layer(True)
    assert plain.gate_tokens is None
    assert torch.equal(gated_layer.gate_tokens.weight, torch.zeros(32, 32))
    assert torch.equal(gated_layer.gate_tokens.bias, torch.ones(32))
    gated_layer.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(5, 2, 32)

    def run(m):
        with torch.no_grad():
            return m(x, None) if layer_type == "encoder" else m(x, None, None)[0]

    torch.testing.assert_close(run(gated_layer), run(plain), rtol=0, atol=0)

    # A trained gate: the token-mixing branch is A h times the gate of the same position's h.
    with torch.no_grad():
        gated_layer.gate_tokens.weight.normal_(0, 0.3)
        gated_layer.gate_tokens.bias.normal_(1, 0.3)
        h = gated_layer.norm1(x)
        mixed = gated_layer.linear_tokens(h, None)
        branch = mixed * (h @ gated_layer.gate_tokens.weight.T + gated_layer.gate_tokens.bias)
        # The rest of the layer by hand (the decoder's cross-attention is skipped without an encoder output).
        after_mixing = gated_layer.ls1(x, branch)
        if layer_type == "encoder":
            want = gated_layer.ls2(after_mixing, gated_layer.mlp_channels(after_mixing, norm=gated_layer.norm2))
        else:
            want = gated_layer.ls3(after_mixing, gated_layer.mlp_channels(after_mixing, norm=gated_layer.norm3))
    torch.testing.assert_close(run(gated_layer), want, rtol=1e-6, atol=1e-6)
