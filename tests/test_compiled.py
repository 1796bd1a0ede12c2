"""--compile-layers: training-mode layers through torch.compile give the eager results (outputs and gradients) for
varying batch shapes, leave state dicts, evaluation and decoding alone, and fall back to eager with a warning.

The CPU tests compile with the "aot_eager" backend (conftest sets it): the same Dynamo tracing, dynamic shapes and
AOTAutograd backward as Inductor, without generating code, so they need no C compiler and little time. The GPU
benchmark (docs/benchmarks.md) runs Inductor."""

import logging

import pytest
import torch
from fairseq.models import ARCH_CONFIG_REGISTRY
from helpers import build_model, random_tokens

from fairseq_resmlp.modules import compiled

VARIANTS = {
    "resmlp_tiny": dict(arch="resmlp_tiny"),
    "resmlp_small-toeplitz": dict(arch="resmlp_small", dropout=0.0, attention_dropout=0.0, activation_dropout=0.0),
}
SHAPES = [((7, 5, 3), (6, 4, 2)), ((4, 4), (9, 1)), ((9, 2, 6, 1, 3), (3, 3, 7, 2, 5))]


def tiny_pair(variant):
    options = dict(VARIANTS[variant])
    arch = ARCH_CONFIG_REGISTRY[options.pop("arch")]
    small = dict(encoder_embed_dim=16, decoder_embed_dim=16, encoder_ffn_embed_dim=24, decoder_ffn_embed_dim=24)
    eager = build_model(arch=arch, seed=3, **small, **options).train()
    fast = build_model(arch=arch, seed=3, compile_layers=True, **small, **options).train()
    return eager, fast


def loss_and_grads(model, src, prev):
    model.zero_grad()
    logits, _ = model(src, src.ne(model.encoder.padding_idx).sum(1), prev)
    weights = torch.linspace(-1, 1, logits.size(-1))
    loss = (logits * weights).sum()
    loss.backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_compiled_layers_equal_eager_outputs_and_gradients(variant):
    eager, fast = tiny_pair(variant)
    assert eager.state_dict().keys() == fast.state_dict().keys()  # nothing compiled is in the module tree
    for src_lens, tgt_lens in SHAPES:  # varying batch sizes and lengths: dynamic shapes, no failure
        src = random_tokens(eager, src_lens, left_pad=True)
        prev = random_tokens(eager, tgt_lens, seed=1)
        out_e, grads_e = loss_and_grads(eager, src, prev)
        out_f, grads_f = loss_and_grads(fast, src, prev)
        torch.testing.assert_close(out_f, out_e, rtol=1e-5, atol=1e-5)
        assert grads_e.keys() == grads_f.keys()
        for name in grads_e:
            torch.testing.assert_close(grads_f[name], grads_e[name], rtol=1e-4, atol=1e-5, msg=name)
    layers = len(fast.encoder.layers) + len(fast.decoder.layers)
    assert fast.encoder.compiled_layers.compiled_calls + fast.decoder.compiled_layers.compiled_calls == 3 * layers


def test_evaluation_and_decoding_are_not_compiled():
    eager, fast = tiny_pair("resmlp_tiny")
    eager.eval()
    fast.eval()
    src = random_tokens(eager, [5, 3], left_pad=True)
    prev = random_tokens(eager, [4, 4], seed=1)
    with torch.no_grad():
        torch.testing.assert_close(fast(src, torch.tensor([5, 3]), prev)[0], eager(src, torch.tensor([5, 3]), prev)[0])
        enc = fast.encoder(src, src_lengths=torch.tensor([5, 3]))
        state = {}
        fast.decoder(prev[:, :1], encoder_out=enc, incremental_state=state)
    assert fast.encoder.compiled_layers.compiled_calls == 0 and fast.decoder.compiled_layers.compiled_calls == 0


def test_compiler_failure_falls_back_to_eager_with_one_warning(monkeypatch, caplog):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C compiler here")

    monkeypatch.setattr(compiled, "COMPILE_BACKEND", broken_backend)
    eager, fast = tiny_pair("resmlp_tiny")
    src = random_tokens(eager, [5, 3], left_pad=True)
    prev = random_tokens(eager, [4, 4], seed=1)
    with caplog.at_level(logging.WARNING):
        out_e, _ = loss_and_grads(eager, src, prev)
        out_f, _ = loss_and_grads(fast, src, prev)
        loss_and_grads(fast, src, prev)
    torch.testing.assert_close(out_f, out_e)
    warnings = [r for r in caplog.records if "--compile-layers" in r.getMessage()]
    assert len(warnings) == 2  # once per stack (encoder, decoder), then eager without retrying
    assert "no C compiler here" in warnings[0].getMessage()
    assert not fast.encoder.compiled_layers.enabled and not fast.decoder.compiled_layers.enabled
