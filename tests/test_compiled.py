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


# The fallback without Dynamo: torch.compile replaced by a fake whose compiled callables run the layer, or raise a
# chosen error. Under mutmut's trampolines Dynamo compiles nothing, so only these tests score the fallback path.
class Scale(torch.nn.Module):
    """A layer without parameters whose output says which layer ran, with which positional and keyword arguments."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x, scale=1.0):
        return x * self.factor * scale


class FakeCompiled:
    """A compiled callable: records its calls, then raises its compiler's current error or runs the function."""

    def __init__(self, compiler, fn):
        self.compiler, self.fn, self.calls = compiler, fn, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if self.compiler.error is not None:
            raise self.compiler.error
        return self.fn(*args, **kwargs)


class FakeCompile:
    """torch.compile's stand-in: records (function, options) and returns a FakeCompiled per call."""

    def __init__(self):
        self.error = None
        self.calls = []
        self.compiled = []

    def __call__(self, fn, **options):
        self.calls.append((fn, options))
        self.compiled.append(FakeCompiled(self, fn))
        return self.compiled[-1]


@pytest.fixture
def fake_compile(monkeypatch):
    fake = FakeCompile()
    monkeypatch.setattr(compiled.torch, "compile", fake)
    monkeypatch.setattr(compiled, "COMPILE_BACKEND", "test-backend")  # read when compiling, not at import
    return fake


def scale_layers():
    return torch.nn.ModuleList([Scale(2.0), Scale(3.0), Scale(5.0)])


X = torch.tensor([1.0, -2.0, 4.0])


def fallback_warnings(caplog):
    return [r for r in caplog.records if r.name == compiled.__name__]


def test_training_calls_are_compiled_once_per_layer_with_dynamic_shapes(fake_compile, caplog):
    layers = scale_layers()
    stack = compiled.CompiledLayers(layers, enabled=True)
    assert stack.compiled_calls == 0 and fake_compile.calls == []  # nothing is compiled before the first call
    with caplog.at_level(logging.WARNING, logger=compiled.__name__):
        assert torch.equal(stack(0, True)(X, scale=0.5), X * 2.0 * 0.5)
        assert torch.equal(stack(2, True)(X), X * 5.0)
        assert torch.equal(stack(0, True)(X, 3.0), X * 2.0 * 3.0)
    # every layer compiled once, on the first call, its own forward, with dynamic shapes and the module's backend
    assert fake_compile.calls == [(m.forward, dict(dynamic=True, backend="test-backend")) for m in layers]
    assert [fn.__self__ for fn, _ in fake_compile.calls] == list(layers)
    first, second, third = fake_compile.compiled
    assert [(args[0] is X, args[1:], kwargs) for args, kwargs in first.calls] == [
        (True, (), {"scale": 0.5}),
        (True, (3.0,), {}),
    ]
    assert second.calls == [] and [(args[0] is X, kwargs) for args, kwargs in third.calls] == [(True, {})]
    assert stack.compiled_calls == 3
    assert stack.enabled is True and fallback_warnings(caplog) == []


def test_evaluation_and_disabled_stacks_are_never_compiled(fake_compile):
    layers = scale_layers()
    enabled = compiled.CompiledLayers(layers, enabled=True)
    disabled = compiled.CompiledLayers(layers, enabled=False)
    for i, layer in enumerate(layers):
        assert enabled(i, False) is layer  # evaluation, decoding: the layer itself
        assert disabled(i, True) is layer  # --compile-layers off: the layer itself, in training too
        assert disabled(i, False) is layer
    assert fake_compile.calls == []
    assert enabled.compiled_calls == 0 and disabled.compiled_calls == 0
    assert enabled.enabled is True and disabled.enabled is False


class BackendCompilerFailed(RuntimeError):
    """Like Dynamo's: the backend's error in ``inner_exception``."""

    def __init__(self, message, inner_exception):
        super().__init__(message)
        self.inner_exception = inner_exception


class CompilerMissing(Exception):
    pass


def with_cause(error, cause):
    error.__cause__ = cause
    return error


FAILURES = {
    # the error itself: its own class name (not qualified) and message
    "plain": (CompilerMissing("no C compiler here"), "CompilerMissing: no C compiler here"),
    # Dynamo's wrapper: the backend error in inner_exception, before __cause__
    "inner_exception": (
        with_cause(BackendCompilerFailed("backend='inductor' raised:", OSError("cc: not found")), ValueError("x")),
        "OSError: cc: not found",
    ),
    # inner_exception present but None: __cause__
    "inner_exception None": (
        with_cause(BackendCompilerFailed("wrapper", None), FileNotFoundError("gcc")),
        "FileNotFoundError: gcc",
    ),
    # raise ... from ...: __cause__
    "__cause__": (with_cause(RuntimeError("wrapper"), ImportError("no triton")), "ImportError: no triton"),
    # the first line of the message, after leading blank lines and spaces
    "multi-line": (
        RuntimeError("\n   first line of the cause\nsecond line\nthird line\n"),
        "RuntimeError: first line of the cause",
    ),
    "empty": (RuntimeError(), "RuntimeError: "),
    "blank": (RuntimeError(" \n\t\n "), "RuntimeError: "),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_compiler_failure_falls_back_to_the_layer_with_one_warning_naming_the_cause(fake_compile, caplog, failure):
    error, cause = FAILURES[failure]
    layers = scale_layers()
    stack = compiled.CompiledLayers(layers, enabled=True)
    fake_compile.error = error
    with caplog.at_level(logging.WARNING, logger=compiled.__name__):
        out = stack(1, True)(X, scale=0.5)  # fails in the compiled callable: the eager layer's result instead
        assert torch.equal(out, X * 3.0 * 0.5)
        assert stack.enabled is False and stack.compiled_calls == 0
        # from then on the layers themselves, without calling compiled code or compiling again
        for i, layer in enumerate(layers):
            assert stack(i, True) is layer
        assert torch.equal(stack(1, True)(X, 2.0), X * 3.0 * 2.0)
    assert len(fake_compile.calls) == 3 and all(c.calls == [] for i, c in enumerate(fake_compile.compiled) if i != 1)
    assert [(args[0] is X, args[1:], kwargs) for args, kwargs in fake_compile.compiled[1].calls] == [
        (True, (), {"scale": 0.5})
    ]
    assert stack.compiled_calls == 0
    [warning] = fallback_warnings(caplog)
    assert warning.levelno == logging.WARNING
    assert warning.getMessage() == (
        f"--compile-layers: torch.compile is unavailable here ({cause}); training continues without it"
    )


def test_compiled_calls_count_only_the_calls_that_compiled_code_ran(fake_compile, caplog):
    # a later failure (a new shape that does not compile) falls back too, after successful compiled calls
    layers = scale_layers()
    stack = compiled.CompiledLayers(layers, enabled=True)
    for i in (0, 1, 0):
        assert torch.equal(stack(i, True)(X), X * layers[i].factor)
    assert stack.compiled_calls == 3
    fake_compile.error = RuntimeError("recompilation failed")
    with caplog.at_level(logging.WARNING, logger=compiled.__name__):
        assert torch.equal(stack(2, True)(X, scale=-1.0), X * -5.0)
        assert torch.equal(stack(0, True)(X), X * 2.0)
    assert stack.compiled_calls == 3 and stack.enabled is False
    assert [len(c.calls) for c in fake_compile.compiled] == [2, 1, 1]
    assert len(fake_compile.calls) == 3  # compiled once, on the first call
    assert [w.getMessage() for w in fallback_warnings(caplog)] == [
        "--compile-layers: torch.compile is unavailable here (RuntimeError: recompilation failed); "
        "training continues without it"
    ]


def test_failure_after_compilation_was_switched_off_is_raised(fake_compile, caplog):
    # a compiled callable taken while enabled, run after the stack fell back (switched off): its error is raised,
    # not hidden behind a second fallback and warning
    layers = scale_layers()
    stack = compiled.CompiledLayers(layers, enabled=True)
    run = stack(0, True)
    stack.enabled = False
    error = fake_compile.error = RuntimeError("compiled code failed")
    with caplog.at_level(logging.WARNING, logger=compiled.__name__):
        with pytest.raises(RuntimeError) as raised:
            run(X)
    assert raised.value is error
    assert stack.enabled is False and stack.compiled_calls == 0
    assert len(fake_compile.compiled[0].calls) == 1
    assert fallback_warnings(caplog) == []
