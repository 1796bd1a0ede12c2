"""The chunked label-smoothed cross-entropy against fairseq's label_smoothed_cross_entropy: values, gradients,
logs, option errors and a fairseq-train run.

``PYTHONPATH=. python tests/test_criterion.py [--device cuda --dtype float16]`` measures peak memory and time.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fairseq.criterions.label_smoothed_cross_entropy import LabelSmoothedCrossEntropyCriterion, label_smoothed_nll_loss
from fairseq.models.transformer import TransformerModel
from fairseq.models.transformer.transformer_legacy import tiny_architecture
from helpers import (
    TinyTask,
    build_model,
    json_records,
    make_dictionary,
    per_update_log_args,
    random_tokens,
    tiny_train_args,
)

from fairseq_resmlp.criterions import (
    ChunkedCriterionError,
    ChunkedLabelSmoothedCrossEntropyCriterion,
    chunked_label_smoothed_nll_loss,
)
from fairseq_resmlp.criterions import chunked_label_smoothed_cross_entropy as chunked_module
from fairseq_resmlp.criterions.chunked_label_smoothed_cross_entropy import (
    ChunkedLabelSmoothedCrossEntropyConfig,
    output_projection,
)

ROOT = Path(__file__).resolve().parent.parent
TOL = dict(rtol=1e-5, atol=1e-5)


def stock_loss(features, weight, bias, target, epsilon, pad):
    lprobs = torch.log_softmax(torch.nn.functional.linear(features, weight, bias).float(), dim=-1)
    return label_smoothed_nll_loss(lprobs, target, epsilon, ignore_index=pad)


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 24, 1000])
@pytest.mark.parametrize("with_bias", [False, True])
def test_function_matches_fairseq_values_and_gradients(chunk_size, with_bias):
    g = torch.Generator().manual_seed(0)
    n, dim, vocab = 24, 16, 50
    features = torch.randn(n, dim, generator=g, dtype=torch.float64).float().requires_grad_()
    weight = (torch.randn(vocab, dim, generator=g) * 0.5).requires_grad_()
    bias = torch.randn(vocab, generator=g).requires_grad_() if with_bias else None
    target = torch.randint(0, vocab, (n,), generator=g)
    leaves = [features, weight] + ([bias] if with_bias else [])

    loss, nll = stock_loss(features, weight, bias, target, 0.1, pad=None)
    # Output gradients whose sum is not 1 (a loss scale, as under --fp16, plus some nll): the softmax term of the
    # gradient is scaled by their sum, the target and uniform terms by each separately.
    expected = torch.autograd.grad(loss * 8.0 + nll * 0.5, leaves)
    loss_c, nll_c, n_correct = chunked_label_smoothed_nll_loss(features, weight, bias, target, 0.1, chunk_size)
    got = torch.autograd.grad(loss_c * 8.0 + nll_c * 0.5, leaves)

    torch.testing.assert_close(loss_c, loss, **TOL)
    torch.testing.assert_close(nll_c, nll, **TOL)
    for e, c in zip(expected, got):
        torch.testing.assert_close(c, e, **TOL)
    logits = torch.nn.functional.linear(features, weight, bias)
    assert n_correct.item() == logits.argmax(-1).eq(target).sum().item()


def test_compiled_chunks_match_fairseq():
    # torch.compile of the per-chunk element-wise work (Triton on a GPU, C++ here); varying chunk lengths
    # (7 rows in chunks of 3) must not change the values.
    g = torch.Generator().manual_seed(2)
    features = torch.randn(7, 8, generator=g).requires_grad_()
    weight = torch.randn(30, 8, generator=g).requires_grad_()
    target = torch.randint(0, 30, (7,), generator=g)
    loss, nll = stock_loss(features, weight, None, target, 0.1, pad=None)
    expected = torch.autograd.grad(loss, [features, weight])
    loss_c, nll_c, _ = chunked_label_smoothed_nll_loss(features, weight, None, target, 0.1, 3, compiled=True)
    got = torch.autograd.grad(loss_c, [features, weight])
    torch.testing.assert_close(loss_c, loss, **TOL)
    torch.testing.assert_close(nll_c, nll, **TOL)
    for e, c in zip(expected, got):
        torch.testing.assert_close(c, e, **TOL)


@pytest.mark.parametrize("compiled", [False, True])
def test_function_keeps_fp32_log_sum_exp_for_bf16_inputs(compiled, compile_calls):
    # compiled: the kernels --loss-compile would compile (run eagerly by compile_calls), in half precision too.
    g = torch.Generator().manual_seed(1)
    features = torch.randn(40, 32, generator=g).bfloat16().requires_grad_()
    weight = torch.randn(300, 32, generator=g).bfloat16().requires_grad_()
    target = torch.randint(0, 300, (40,), generator=g)
    loss, nll = stock_loss(features, weight, None, target, 0.1, pad=None)
    loss_c, nll_c, _ = chunked_label_smoothed_nll_loss(features, weight, None, target, 0.1, 16, compiled)
    assert loss_c.dtype == torch.float32
    torch.testing.assert_close(loss_c, loss, rtol=1e-4, atol=1e-3)
    gw, gf = torch.autograd.grad(loss, [weight, features])
    gw_c, gf_c = torch.autograd.grad(loss_c, [weight, features])
    assert gw_c.dtype == torch.bfloat16 and gf_c.dtype == torch.bfloat16
    torch.testing.assert_close(gw_c.float(), gw.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gf_c.float(), gf.float(), rtol=2e-2, atol=2e-2)


def test_function_computes_in_the_features_precision_with_fp32_weights():
    # Half-precision features against fp32 (master) weights and bias: the logits are computed in the features'
    # precision, as nn.Linear under autocast would, and each input gets its gradient in its own dtype.
    g = torch.Generator().manual_seed(3)
    features = torch.randn(12, 16, generator=g).bfloat16().requires_grad_()
    weight = torch.randn(40, 16, generator=g).requires_grad_()
    bias = torch.randn(40, generator=g).requires_grad_()
    target = torch.randint(0, 40, (12,), generator=g)
    loss, nll = stock_loss(features, weight.bfloat16(), bias.bfloat16(), target, 0.1, pad=None)
    expected = torch.autograd.grad(loss, [features, weight, bias])
    loss_c, nll_c, _ = chunked_label_smoothed_nll_loss(features, weight, bias, target, 0.1, 5)
    got = torch.autograd.grad(loss_c, [features, weight, bias])
    torch.testing.assert_close(loss_c, loss, **TOL)
    torch.testing.assert_close(nll_c, nll, **TOL)
    assert [grad.dtype for grad in got] == [torch.bfloat16, torch.float32, torch.float32]
    for e, c in zip(expected, got):
        torch.testing.assert_close(c.float(), e.float(), rtol=2e-2, atol=2e-2)


def test_function_gradients_of_inputs_that_need_none():
    # A frozen output layer (only the features need gradients), or frozen features: the others get theirs alone.
    g = torch.Generator().manual_seed(4)
    features = torch.randn(9, 8, generator=g)
    weight = torch.randn(30, 8, generator=g)
    bias = torch.randn(30, generator=g)
    target = torch.randint(0, 30, (9,), generator=g)
    for needs in ([True, False, False], [False, True, False], [False, False, True], [False, True, True]):
        leaves = [t.clone().requires_grad_(need) for t, need in zip((features, weight, bias), needs)]
        wanted = [t for t in leaves if t.requires_grad]
        loss, nll = stock_loss(*leaves, target, 0.1, pad=None)
        expected = torch.autograd.grad(loss * 2.0 + nll, wanted)
        loss_c, nll_c, _ = chunked_label_smoothed_nll_loss(*leaves, target, 0.1, 4)
        got = torch.autograd.grad(loss_c * 2.0 + nll_c, wanted)
        for e, c in zip(expected, got):
            torch.testing.assert_close(c, e, **TOL)


@pytest.fixture
def compile_calls(monkeypatch):
    """torch.compile replaced by a recorder that returns the function as it is (eager: no compilation time), and
    the criterion's per-process cache of compiled kernels emptied for the test."""
    calls = []

    def recording_compile(fn, **options):
        calls.append((fn, options))
        return fn

    monkeypatch.setattr(torch, "compile", recording_compile)
    monkeypatch.setattr(chunked_module, "_COMPILED", {})
    return calls


def test_compiled_kernels_are_compiled_once_with_dynamic_shapes(compile_calls):
    # --loss-compile compiles the statistics and the point-wise gradient once per process, with dynamic shapes (a
    # last chunk of another length must not recompile); without it nothing is compiled. The point-wise gradient
    # (run eagerly here) equals fairseq's under output gradients whose sum is not 1.
    g = torch.Generator().manual_seed(5)
    features = torch.randn(11, 8, generator=g).requires_grad_()
    weight = torch.randn(30, 8, generator=g).requires_grad_()
    bias = torch.randn(30, generator=g).requires_grad_()
    target = torch.randint(0, 30, (11,), generator=g)
    leaves = [features, weight, bias]
    loss, nll = stock_loss(features, weight, bias, target, 0.2, pad=None)
    expected = torch.autograd.grad(loss * 8.0 + nll * 0.5, leaves)

    loss_c, nll_c, _ = chunked_label_smoothed_nll_loss(features, weight, bias, target, 0.2, 4)
    torch.autograd.grad(loss_c * 8.0 + nll_c * 0.5, leaves)
    assert compile_calls == []  # the default is eager
    for chunk_size in (4, 3):
        loss_c, nll_c, _ = chunked_label_smoothed_nll_loss(features, weight, bias, target, 0.2, chunk_size, True)
        got = torch.autograd.grad(loss_c * 8.0 + nll_c * 0.5, leaves)
        torch.testing.assert_close(loss_c, loss, **TOL)
        torch.testing.assert_close(nll_c, nll, **TOL)
        for e, c in zip(expected, got):
            torch.testing.assert_close(c, e, **TOL)
    assert compile_calls == [
        (chunked_module._chunk_statistics, {"dynamic": True}),
        (chunked_module._chunk_grad_logits_fusable, {"dynamic": True}),
    ]


def test_criterion_loss_compile_option_reaches_the_kernels(compile_calls):
    model = build_resmlp()
    task = TinyTask(model.decoder.dictionary)
    sample = make_sample(model)
    loss = run_criterion(LabelSmoothedCrossEntropyCriterion(task, False, 0.1), model, sample)[0]
    loss_c = run_criterion(ChunkedLabelSmoothedCrossEntropyCriterion(task, False, 0.1), model, sample)[0]
    assert compile_calls == []
    compiled = ChunkedLabelSmoothedCrossEntropyCriterion(task, False, 0.1, loss_compile=True)
    loss_compiled = run_criterion(compiled, model, sample)[0]
    assert [fn for fn, _ in compile_calls] == [
        chunked_module._chunk_statistics,
        chunked_module._chunk_grad_logits_fusable,
    ]
    torch.testing.assert_close(loss_c, loss, **TOL)
    torch.testing.assert_close(loss_compiled, loss, **TOL)


def test_defaults_are_the_registered_options():
    # fairseq builds the criterion from the registered dataclass; a direct construction has the same defaults.
    task = TinyTask(make_dictionary())
    cfg = ChunkedLabelSmoothedCrossEntropyConfig(sentence_avg=False, label_smoothing=0.1)
    for criterion in (
        ChunkedLabelSmoothedCrossEntropyCriterion.build_criterion(cfg, task),
        ChunkedLabelSmoothedCrossEntropyCriterion(task, False, 0.1),
    ):
        assert (criterion.loss_chunk_size, criterion.loss_compile) == (4096, False)
        assert (criterion.eps, criterion.ignore_prefix_size, criterion.report_accuracy) == (0.1, 0, False)


# Models and samples


def build_transformer(share: bool = True, **overrides) -> TransformerModel:
    torch.manual_seed(0)
    args = argparse.Namespace(
        dropout=0.0,
        attention_dropout=0.0,
        share_all_embeddings=share,
        max_source_positions=64,
        max_target_positions=64,
        **overrides,
    )
    tiny_architecture(args)
    return TransformerModel.build_model(args, TinyTask(make_dictionary())).eval()


def build_resmlp(share: bool = True):
    return build_model(share_all_embeddings=share)


MODELS = {
    "resmlp": build_resmlp,
    "transformer": build_transformer,
    "resmlp-untied": lambda: build_resmlp(share=False),
    "transformer-untied": lambda: build_transformer(share=False),
}


def make_sample(model, target_lengths=(7, 3, 5, 1), source_lengths=(4, 6, 2, 5)):
    """A fairseq translation sample: left-padded sources, right-padded targets, shifted decoder inputs."""
    d = model.decoder.dictionary
    src = random_tokens(model, source_lengths, seed=1, left_pad=True)
    tgt = random_tokens(model, target_lengths, seed=2)
    prev = torch.full_like(tgt, d.pad())
    for i, n in enumerate(target_lengths):
        prev[i, 0] = d.eos()
        prev[i, 1:n] = tgt[i, : n - 1]
    return {
        "net_input": {"src_tokens": src, "src_lengths": torch.tensor(source_lengths), "prev_output_tokens": prev},
        "target": tgt,
        "ntokens": int(tgt.ne(d.pad()).sum()),
        "id": torch.arange(len(target_lengths)),
    }


def run_criterion(criterion, model, sample):
    model.zero_grad()
    loss, sample_size, log = criterion(model, sample)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    grads["output weights"] = model.decoder.output_projection.weight.grad.clone()
    return loss, sample_size, log, grads


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize(
    "options",
    [
        dict(label_smoothing=0.1, loss_chunk_size=5),  # 16 real target tokens: chunks of 5 leave a remainder
        dict(label_smoothing=0.1, loss_chunk_size=4, report_accuracy=True),
        dict(label_smoothing=0.0, loss_chunk_size=1000, sentence_avg=True),
        dict(label_smoothing=0.2, loss_chunk_size=3, ignore_prefix_size=1, report_accuracy=True),
    ],
)
def test_criterion_matches_fairseq_on_models(arch, options):
    model = MODELS[arch]()
    task = TinyTask(model.decoder.dictionary)
    options = {"sentence_avg": False, **options}
    chunk = options.pop("loss_chunk_size")
    stock = LabelSmoothedCrossEntropyCriterion(task, **options)
    chunked = ChunkedLabelSmoothedCrossEntropyCriterion(task, **options, loss_chunk_size=chunk)
    sample = make_sample(model)

    loss, size, log, grads = run_criterion(stock, model, sample)
    loss_c, size_c, log_c, grads_c = run_criterion(chunked, model, sample)

    torch.testing.assert_close(loss_c, loss, **TOL)
    assert size_c == size
    assert log_c.keys() == log.keys()
    for key in log:
        if torch.is_tensor(log[key]):
            torch.testing.assert_close(log_c[key], log[key], **TOL)
        else:
            assert log_c[key] == log[key], key
    assert grads_c.keys() == grads.keys()
    for name in grads:  # every parameter: the output weights directly, the rest through the features
        torch.testing.assert_close(grads_c[name], grads[name], **TOL, msg=lambda m, name=name: f"{name}: {m}")


def test_features_gradient_matches_fairseq():
    model = build_resmlp()
    task = TinyTask(model.decoder.dictionary)
    sample = make_sample(model)
    captured = []
    handle = model.decoder.layer_norm.register_forward_hook(lambda m, a, out: out.retain_grad() or captured.append(out))
    grads = []
    for criterion in (
        LabelSmoothedCrossEntropyCriterion(task, False, 0.1),
        ChunkedLabelSmoothedCrossEntropyCriterion(task, False, 0.1, loss_chunk_size=3),
    ):
        captured.clear()
        criterion(model, sample)[0].backward()
        grads.append(captured[0].grad)
    handle.remove()
    torch.testing.assert_close(grads[1], grads[0], **TOL)


def test_criterion_skips_padding_before_the_projection():
    model = build_resmlp()
    task = TinyTask(model.decoder.dictionary)
    sample = make_sample(model)
    rows = []
    handle = model.decoder.output_projection.register_forward_pre_hook(lambda m, a: rows.append(a[0].shape))
    calls = []
    original = torch.nn.functional.linear

    def counting_linear(x, w, b=None):
        if w.shape[0] == len(model.decoder.dictionary):
            calls.append(x.shape[0])
        return original(x, w, b)

    torch.nn.functional.linear = counting_linear
    try:
        ChunkedLabelSmoothedCrossEntropyCriterion(task, False, 0.1, loss_chunk_size=5)(model, sample)
    finally:
        torch.nn.functional.linear = original
        handle.remove()
    assert rows == []  # the decoder's own output layer never runs
    assert calls == [5, 5, 5, 1]  # 16 real target tokens of 4 x 7 positions, in chunks of 5


def test_criterion_with_a_biased_output_projection_in_one_token_chunks():
    # The plugin's and fairseq's decoders have no output bias; a decoder whose projection has one gets it applied
    # (and its gradient) by the chunked criterion too. Chunks of a single token are the smallest allowed.
    model = build_resmlp(share=False)
    old = model.decoder.output_projection
    biased = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(old.weight)
        biased.bias.copy_(torch.randn(old.out_features, generator=torch.Generator().manual_seed(6)))
    model.decoder.output_projection = biased
    task = TinyTask(model.decoder.dictionary)
    sample = make_sample(model)
    stock = LabelSmoothedCrossEntropyCriterion(task, False, 0.1, report_accuracy=True)
    chunked = ChunkedLabelSmoothedCrossEntropyCriterion(task, False, 0.1, report_accuracy=True, loss_chunk_size=1)
    loss, size, log, grads = run_criterion(stock, model, sample)
    loss_c, size_c, log_c, grads_c = run_criterion(chunked, model, sample)
    torch.testing.assert_close(loss_c, loss, **TOL)
    assert size_c == size and log_c.keys() == log.keys()
    assert (log_c["n_correct"], log_c["total"]) == (log["n_correct"], log["total"])
    assert "decoder.output_projection.bias" in grads_c
    for name in grads:
        torch.testing.assert_close(grads_c[name], grads[name], **TOL, msg=lambda m, name=name: f"{name}: {m}")


# Errors


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(label_smoothing=1.0), "--label-smoothing must be in [0, 1)"),
        (dict(label_smoothing=0.1, loss_chunk_size=0), "--loss-chunk-size must be a positive"),
        (dict(label_smoothing=0.1, ignore_prefix_size=-1), "--ignore-prefix-size must be >= 0"),
    ],
)
def test_bad_option_is_named(options, message):
    task = TinyTask(make_dictionary())
    with pytest.raises(ChunkedCriterionError, match=message.replace("[", r"\[").replace(")", r"\)")):
        ChunkedLabelSmoothedCrossEntropyCriterion(task, False, **options)


def test_function_refuses_chunks_of_no_tokens():
    features, weight, target = torch.zeros(2, 4), torch.zeros(6, 4), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ChunkedCriterionError, match="^--loss-chunk-size must be a positive number of tokens, got 0$"):
        chunked_label_smoothed_nll_loss(features, weight, None, target, 0.1, 0)


def test_adaptive_softmax_is_refused_with_the_option_named():
    model = build_transformer(share=False, adaptive_softmax_cutoff="20", adaptive_softmax_dropout=0.0)
    criterion = ChunkedLabelSmoothedCrossEntropyCriterion(TinyTask(model.decoder.dictionary), False, 0.1)
    with pytest.raises(
        ChunkedCriterionError,
        match=re.escape(
            "--criterion label_smoothed_cross_entropy_chunked needs a plain output projection, but "
            "TransformerDecoderBase uses an adaptive softmax (--adaptive-softmax-cutoff): use --criterion adaptive_loss"
        ),
    ):
        criterion(model, make_sample(model))


def test_decoder_with_its_own_output_layer_is_refused():
    model = build_resmlp()

    class Scaled(type(model.decoder)):
        def output_layer(self, features):
            return 2 * self.output_projection(features)

    model.decoder.__class__ = Scaled
    criterion = ChunkedLabelSmoothedCrossEntropyCriterion(TinyTask(model.decoder.dictionary), False, 0.1)
    with pytest.raises(
        ChunkedCriterionError, match="Scaled overrides output_layer.*--criterion label_smoothed_cross_entropy"
    ):
        criterion(model, make_sample(model))


def test_decoder_without_output_projection_is_refused():
    # fairseq's LSTM decoder projects with its own `fc_out`; a model without a decoder has no projection either.
    from fairseq.models.lstm import LSTMModel, base_architecture

    task = TinyTask(make_dictionary())
    dims = (
        "encoder_embed_dim",
        "encoder_hidden_size",
        "decoder_embed_dim",
        "decoder_hidden_size",
        "decoder_out_embed_dim",
    )
    args = argparse.Namespace(encoder_layers=1, decoder_layers=1, dropout=0.0, criterion="", **dict.fromkeys(dims, 8))
    base_architecture(args)
    lstm = LSTMModel.build_model(args, task)
    expected = (
        "^--criterion label_smoothed_cross_entropy_chunked needs a decoder whose output_layer is a plain nn.Linear "
        "named output_projection, and {} has none: use --criterion label_smoothed_cross_entropy$"
    )
    with pytest.raises(ChunkedCriterionError, match=expected.format("LSTMDecoder")):
        output_projection(lstm)
    with pytest.raises(ChunkedCriterionError, match=expected.format("NoneType")):
        output_projection(torch.nn.Linear(2, 2))


def test_unreduced_loss_is_refused():
    model = build_resmlp()
    criterion = ChunkedLabelSmoothedCrossEntropyCriterion(TinyTask(model.decoder.dictionary), False, 0.1)
    with pytest.raises(ChunkedCriterionError, match="only computes summed losses"):
        criterion(model, make_sample(model), reduce=False)


# fairseq-train


def train_log(data: Path, save: Path, criterion: str) -> list:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
    cmd = [
        str(Path(sys.executable).parent / "fairseq-train"),
        *tiny_train_args(data, "0.003", ROOT / "fairseq_resmlp"),
        "--criterion",
        criterion,
        "--label-smoothing",
        "0.1",
        "--report-accuracy",
        *per_update_log_args(save, 8),
        "--no-save",
        "--validate-interval-updates",
        "4",
    ]
    if criterion.endswith("chunked"):
        cmd += ["--loss-chunk-size", "37"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json_records(proc.stdout + proc.stderr, ("train_inner", "valid"))


def test_fairseq_train_logs_the_same_losses(tmp_path):
    from fairseq_resmlp_tools.toy_data import build_toy_data

    data = build_toy_data(tmp_path / "data", n_train=300, n_valid=16, n_test=4) / "data-bin"
    stock = train_log(data, tmp_path / "stock", "label_smoothed_cross_entropy")
    chunked = train_log(data, tmp_path / "chunked", "label_smoothed_cross_entropy_chunked")
    assert len(stock) == len(chunked) >= 10  # 8 updates plus validations
    for s, c in zip(stock, chunked):
        for key in ("loss", "nll_loss", "ppl", "accuracy", "ntokens", "nsentences", "sample_size", "valid_loss"):
            if key in s or key in c:
                key_ok = key in s and key in c and abs(float(s[key]) - float(c[key])) <= 2e-3
                assert key_ok, f"{key}: stock {s.get(key)} chunked {c.get(key)}"


# ``python tests/test_criterion.py``: peak memory and time of one forward + backward, stock vs chunked.


def measure(kind: str, tokens: int, vocab: int, dim: int, chunk: int, device: str, dtype: str, repeat: int) -> dict:
    """Peak extra memory (MiB) and median seconds (wall; process CPU time, which a shared CPU disturbs less) of
    loss + backward for one criterion, on random data."""
    import resource
    import statistics

    dt = getattr(torch, dtype)
    g = torch.Generator().manual_seed(0)
    features = torch.randn(tokens, dim, generator=g).to(device, dt).requires_grad_()
    weight = (torch.randn(vocab, dim, generator=g) * dim**-0.5).to(device, dt).requires_grad_()
    target = torch.randint(4, vocab, (tokens,), generator=g).to(device)

    def step():
        if kind == "stock":
            loss, _ = stock_loss(features, weight, None, target, 0.1, pad=1)
        else:
            compiled = kind == "chunked-compiled"
            loss, _, _ = chunked_label_smoothed_nll_loss(features, weight, None, target, 0.1, chunk, compiled)
        loss.backward()
        features.grad = weight.grad = None
        return loss

    if device == "cuda" or kind == "chunked-compiled":
        step()  # warm-up: cuBLAS handles, the allocator, compilation
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    times, cpu_times = [], []
    for _ in range(repeat):
        start, cpu_start = time.perf_counter(), time.process_time()
        loss = step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {
        "criterion": kind,
        "chunk": chunk,
        "seconds": statistics.median(times),
        "cpu_seconds": statistics.median(cpu_times),
        "peak_mib": round(peak / 2**20),
        "loss": loss.item(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description="peak memory and time of stock vs chunked label-smoothed CE")
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--kinds", nargs="+", default=["stock", "chunked"], choices=["stock", "chunked", "chunked-compiled"])
    p.add_argument("--one", action="store_true", help="(internal) measure --kinds[0] in this process")
    args = p.parse_args()
    if args.one:
        torch.set_num_threads(1)
        kind = args.kinds[0]
        print(
            json.dumps(
                measure(kind, args.tokens, args.vocab, args.dim, args.chunk, args.device, args.dtype, args.repeat)
            )
        )
        return
    # One process per criterion: the CPU's peak resident memory cannot be reset within a process.
    for kind in args.kinds:
        options = {k: getattr(args, k) for k in ("tokens", "vocab", "dim", "chunk", "device", "dtype", "repeat")}
        cmd = [sys.executable, __file__, *(f"--{k}={v}" for k, v in options.items()), "--kinds", kind, "--one"]
        out = subprocess.run(cmd, capture_output=True, text=True)
        print(out.stdout.strip() or out.stderr[-2000:])


if __name__ == "__main__":
    main()
