"""Tests written against mutants of token_mixing.py, resmlp_encoder.py and resmlp_decoder.py that survived their
re-run on today's code (docs/testing.md)."""

import argparse

import pytest
import torch
from helpers import build_model, make_dictionary, random_tokens

from fairseq_resmlp.models.resmlp import ResMLPModel, resmlp_base, resmlp_tiny
from fairseq_resmlp.models.resmlp_decoder import ResMLPDecoder
from fairseq_resmlp.models.resmlp_encoder import ResMLPEncoder
from fairseq_resmlp.modules import TokenMixing


@pytest.mark.parametrize("causal", [False, True])
def test_token_mixing_runs_on_torch_without_is_exporting(monkeypatch, causal):
    # requirements.txt allows torch >= 2.1; torch.compiler.is_exporting exists only from 2.7 on.
    monkeypatch.delattr(torch.compiler, "is_exporting", raising=False)
    mix = TokenMixing(6, causal=causal, init="xavier", matrix="full_plus_toeplitz")
    with torch.no_grad():
        mix.relative.normal_()
        mix.bias.normal_()
    x = torch.randn(4, 2, 3)
    a = mix.weight[:4, :4] + mix.relative[mix.offsets[:4, :4]]
    if causal:
        a = a.tril()
    expected = torch.einsum("ts,sbc->tbc", a, x) + mix.bias[:4, None, None]
    assert torch.allclose(mix(x), expected, atol=1e-6)


def _model_and_batch():
    model = build_model()
    src = random_tokens(model, [7, 5, 3], left_pad=True)
    prev = random_tokens(model, [6, 4, 2], seed=1)
    enc = model.encoder(src, src_lengths=src.ne(model.encoder.padding_idx).sum(1))
    return model, src, prev, enc


def test_extract_features_defaults_are_the_decoders_features():
    # fairseq's FairseqEncoderDecoderModel.extract_features calls the decoder's with only tokens and encoder output.
    model, src, prev, enc = _model_and_batch()
    features, extra = model.decoder(prev, encoder_out=enc, features_only=True)
    direct, direct_extra = model.decoder.extract_features(prev, enc)
    assert torch.equal(direct, features) and torch.equal(direct_extra["attn"][0], extra["attn"][0])
    via_model, _ = model.extract_features(src, src.ne(1).sum(1), prev)
    assert torch.equal(via_model, features)


def test_alignment_training_options_are_refused_by_name():
    model, _, prev, enc = _model_and_batch()
    with pytest.raises(NotImplementedError) as e:
        model.decoder(prev, encoder_out=enc, full_context_alignment=True)
    assert str(e.value) == "full_context_alignment (alignment training) is not supported by ResMLP"
    for call in (model.decoder, model.decoder.extract_features):
        with pytest.raises(NotImplementedError) as e:
            call(prev, enc, alignment_heads=1)
        assert str(e.value) == (
            "alignment_heads is not supported by ResMLP: its cross-attention weights are averaged over all heads"
        )


def test_alignment_layer_picks_the_returned_attention():
    # fairseq's convention: the last layer's cross-attention by default, the one asked for with alignment_layer.
    model, _, prev, enc = _model_and_batch()
    assert len(model.decoder.layers) == 2
    with torch.no_grad():
        by_layer = [model.decoder(prev, enc, alignment_layer=i)[1]["attn"][0] for i in range(2)]
        default = model.decoder(prev, enc)[1]["attn"][0]
        features = model.decoder.extract_features(prev, enc, alignment_layer=0)[1]["attn"][0]
    assert not torch.allclose(by_layer[0], by_layer[1], atol=1e-3)
    assert torch.equal(default, by_layer[1]) and torch.equal(features, by_layer[0])


def test_beam_search_keeps_cross_attention_keys_once_per_sentence():
    # After the generator's first reorder (each sentence expanded into its beam), incremental decoding keeps the
    # cross-attention keys and values once per sentence, not once per hypothesis (beam times less memory).
    model = build_model()
    src = random_tokens(model, [5, 3])
    beam = 3
    expanded = model.encoder.reorder_encoder_out(model.encoder(src), torch.arange(2).repeat_interleave(beam))
    prev = torch.full((2 * beam, 1), model.decoder.dictionary.eos())
    state, per_row = {}, {}
    with torch.no_grad():
        out, _ = model.decoder(prev, expanded, incremental_state=state)
        # The same rows without the beam structure: the same scores, with keys and values per row.
        unstructured = dict(expanded, beam_group=[])
        ref, _ = model.decoder(prev, unstructured, incremental_state=per_row)
    cached = [entry["k"] for entry in state.values() if "k" in entry]
    assert len(cached) == len(model.decoder.layers)
    assert [k.size(0) for k in cached] == [2] * len(cached)
    assert [entry["k"].size(0) for entry in per_row.values() if "k" in entry] == [2 * beam] * len(cached)
    assert torch.allclose(out, ref, atol=1e-5)


def test_right_padded_targets_with_a_one_token_row_are_accepted_and_left_padded_ones_refused():
    # With the task's right-padded targets, a row can be one token long (padding from column 1 on): it is valid,
    # while padding in column 0 (left-padded targets given to a right-padding decoder) is refused.
    model, _, _, enc = _model_and_batch()
    model.decoder.left_pad = False
    prev = random_tokens(model, [4, 1, 3], seed=1)
    with torch.no_grad():
        out, _ = model.decoder(prev, enc)
        alone, _ = model.decoder(prev[1:2, :1], model.encoder.reorder_encoder_out(enc, torch.tensor([1])))
    assert torch.allclose(out[1, :1], alone[0], atol=1e-5)
    with pytest.raises(RuntimeError):
        model.decoder(random_tokens(model, [4, 1, 3], seed=1, left_pad=True), enc)


def test_config_without_compile_layers_trains_uncompiled(monkeypatch):
    # The encoder and decoder built directly (as a variant's build hooks may) from a config that has no
    # compile_layers nor no_cuda_graphs (one from before those options existed): they train with their eager layers, uncompiled.
    compiles = []
    monkeypatch.setattr(torch, "compile", lambda *args, **kwargs: compiles.append(args) or args[0])
    cfg = argparse.Namespace()
    resmlp_tiny(cfg)
    resmlp_base(cfg)
    del cfg.compile_layers, cfg.no_cuda_graphs
    d = make_dictionary()
    embed = ResMLPModel.build_embedding(cfg, d, cfg.encoder_embed_dim)
    model = ResMLPModel(cfg, ResMLPEncoder(cfg, d, embed), ResMLPDecoder(cfg, d, embed)).train()
    src = random_tokens(model, [5, 3], left_pad=True)
    prev = random_tokens(model, [4, 2], seed=1)
    logits, _ = model(src, src.ne(model.encoder.padding_idx).sum(1), prev)
    logits.sum().backward()
    assert compiles == []
    assert model.encoder.compiled_layers.compiled_calls == model.decoder.compiled_layers.compiled_calls == 0
