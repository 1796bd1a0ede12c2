"""``--optimizer fused_adam``: the update against torch's AdamW and fairseq's adam, fp32 master weights for half
precision, loss-scale handling, gradient norms and clipping against fairseq's, checkpoint state, option errors, and
fairseq-train runs (fp32 and ``--fp16 --memory-efficient-fp16``, resumed from a checkpoint)."""

import argparse
import copy
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fairseq import utils as fairseq_utils
from fairseq.optim.adam import Adam as FairseqAdamImpl
from helpers import json_records, per_update_log_args, tiny_train_args
from omegaconf import OmegaConf

from fairseq_resmlp.optim import FairseqFusedAdam, MasterWeightAdamW
from fairseq_resmlp.optim.fused_adam import _betas
from fairseq_resmlp_tools.recipes.fairseq_args import label_smoothing

ROOT = Path(__file__).resolve().parent.parent
HP = dict(lr=1e-2, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.01)


def params(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(5, 7, generator=g, dtype=dtype).requires_grad_(),
        torch.randn(3, generator=g, dtype=dtype).requires_grad_(),
    ]


def grads_for(ps, step, scale=1.0):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=g, dtype=torch.float64) * scale for p in ps]


def test_update_equals_torch_adamw_and_fairseq_adam():
    ours, torch_ps, fairseq_ps = params(), params(), params()
    a = MasterWeightAdamW(ours, **HP)
    b = torch.optim.AdamW(torch_ps, **HP)
    c = FairseqAdamImpl(fairseq_ps, **HP)
    for step in range(25):
        for ps in (ours, torch_ps, fairseq_ps):
            for p, g in zip(ps, grads_for(ps, step)):
                p.grad = g.to(p.dtype)
        a.step()
        b.step()
        c.step()
    for x, y, z, start in zip(ours, torch_ps, fairseq_ps, params()):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
        # fairseq's adam adds eps before v's bias correction: a difference of the order of eps / sqrt(1 - beta2).
        torch.testing.assert_close(x, z, rtol=0, atol=1e-6)
        assert (x - start).abs().min() > 1e-5  # every weight moved


@pytest.mark.parametrize("scale", [4.0, 2.0, torch.tensor(4.0, dtype=torch.float64)])
def test_step_scale_divides_the_gradients(scale):
    scaled, plain = params(), params()
    a, b = MasterWeightAdamW(scaled, **HP), MasterWeightAdamW(plain, **HP)
    for step in range(5):
        for p, g in zip(scaled, grads_for(scaled, step, float(scale))):
            p.grad = g
        for p, g in zip(plain, grads_for(plain, step)):
            p.grad = g
        a.step(scale=scale)
        b.step()
    for x, y in zip(scaled, plain):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_parameters_get_fp32_masters(half):
    model = [p.detach().to(half).requires_grad_() for p in params(torch.float32)]
    reference = [p.detach().float().requires_grad_() for p in model]  # fp32 copies of the same rounded start
    a, b = MasterWeightAdamW(model, **HP), MasterWeightAdamW(reference, **HP)
    for step in range(10):
        for h, r, g in zip(model, reference, grads_for(model, step, 128.0)):
            h.grad = g.to(half)
            r.grad = g.to(half).float()  # the gradient the half model really has
        a.step(scale=128.0)
        b.step(scale=128.0)
    for h, r in zip(model, reference):
        state = a.state[h]
        assert h.dtype == half and state["master"].dtype == torch.float32
        assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
        torch.testing.assert_close(state["master"], r.detach(), rtol=0, atol=0)
        torch.testing.assert_close(
            h.detach(), r.detach().to(half), rtol=0, atol=0
        )  # the weights are the rounded masters
    # Small updates accumulate in the master even where the half weight cannot show them.
    assert any(not torch.equal(a.state[h]["master"].to(half).float(), a.state[h]["master"]) for h in model)


def test_fp32_gradient_buffers_are_reused_across_updates():
    model = [p.detach().half().requires_grad_() for p in params(torch.float32)]
    opt = MasterWeightAdamW(model, **HP)
    pointers = []
    for step in range(3):
        for p, g in zip(model, grads_for(model, step)):
            p.grad = g.half()
        opt.step()
        pointers.append([opt.state[p]["grad32"].data_ptr() for p in model])
    assert pointers[0] == pointers[1] == pointers[2]


def test_defaults_are_fairseq_adams_and_zero_is_allowed():
    assert MasterWeightAdamW(params()).defaults == {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
    MasterWeightAdamW(params(), lr=0.0, eps=0.0, weight_decay=0.0)  # a zero learning rate (warm-up) is legitimate


def test_state_dict_round_trip_keeps_fp32_state_and_resumes_exactly():
    def run(steps, resume_at=None):
        model = [p.detach().half().requires_grad_() for p in params(torch.float32)]
        opt = MasterWeightAdamW(model, **HP)
        for step in range(steps):
            if step == resume_at:
                saved = copy.deepcopy(opt.state_dict())
                assert set(saved["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "master"}  # no scratch buffers
                model = [p.detach().clone().requires_grad_() for p in model]
                opt = MasterWeightAdamW(model, **HP)
                opt.load_state_dict(saved)
                for p in model:
                    assert {n: t.dtype for n, t in opt.state[p].items()} == {
                        "step": torch.float32,
                        "exp_avg": torch.float32,
                        "exp_avg_sq": torch.float32,
                        "master": torch.float32,
                    }
            for p, g in zip(model, grads_for(model, step)):
                p.grad = g.half()
            opt.step()
        return [opt.state[p]["master"] for p in model]

    for x, y in zip(run(8), run(8, resume_at=4)):
        assert torch.equal(x, y)


def test_parameters_without_gradients_are_left_alone_and_sparse_ones_refused():
    ps = params()
    before = ps[1].detach().clone()
    opt = MasterWeightAdamW(ps, **HP)
    ps[0].grad = torch.ones_like(ps[0])
    opt.step()
    assert torch.equal(ps[1].detach(), before) and not opt.state[ps[1]]
    emb = torch.nn.Embedding(5, 3, sparse=True)
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(RuntimeError, match="fused_adam does not support sparse gradients"):
        MasterWeightAdamW(emb.parameters()).step()


def test_closure_is_called_with_gradients_enabled():
    ps = params()
    opt = MasterWeightAdamW(ps, **HP)

    def closure():
        opt.zero_grad()
        loss = sum((p**2).sum() for p in ps)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.requires_grad and float(loss) > 0


def fairseq_optimizer(ps, **overrides):
    cfg = argparse.Namespace(lr=[1e-2], adam_betas="(0.9, 0.98)", adam_eps=1e-8, weight_decay=0.0)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return FairseqFusedAdam(cfg, ps)


@pytest.mark.parametrize("max_norm", [0.0, 0.5, 1e6])
def test_clip_grad_norm_equals_fairseq(max_norm):
    ours, theirs = params(torch.float32), params(torch.float32)
    for ps in (ours, theirs):
        for p, g in zip(ps, grads_for(ps, 0)):
            p.grad = g.float()
    norm = fairseq_optimizer(ours).clip_grad_norm(max_norm)
    expected = fairseq_utils.clip_grad_norm_(theirs, max_norm)
    assert norm.dtype == torch.float32
    torch.testing.assert_close(norm, expected)
    for x, y in zip(ours, theirs):
        torch.testing.assert_close(x.grad, y.grad)
    if max_norm == 0.5:
        clipped = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in ours]))
        assert abs(float(clipped) - 0.5) < 1e-5


def test_clipping_tiny_gradients_matches_fairseq_exactly():
    # fairseq divides by (norm + 1e-6): visible when the norm itself is of that order.
    ours, theirs = params(torch.float32), params(torch.float32)
    for ps in (ours, theirs):
        for p, g in zip(ps, grads_for(ps, 0, 1e-6)):
            p.grad = g.float()
    fairseq_optimizer(ours).clip_grad_norm(1e-6)
    fairseq_utils.clip_grad_norm_(theirs, 1e-6)
    for x, y in zip(ours, theirs):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-6, atol=0)


def test_clip_grad_norm_of_fp16_gradients_is_fp32_without_overflow():
    # A loss-scaled fp16 gradient whose norm is beyond fp16's range (65504): fairseq measures it in fp32.
    ps = [torch.zeros(4, dtype=torch.float16, requires_grad=True) for _ in range(3)]
    for p in ps:
        p.grad = torch.full((4,), 30000.0, dtype=torch.float16)
    opt = fairseq_optimizer(ps)
    norm = opt.clip_grad_norm(0.0)
    assert norm.dtype == torch.float32 and torch.isfinite(norm)
    torch.testing.assert_close(norm, torch.tensor(30000.0 * 12**0.5))
    sums = []
    opt.clip_grad_norm(0.0, aggregate_norm_fn=lambda n: sums.append(n) or n * 2)
    assert len(sums) == 1


def test_clip_grad_norm_without_gradients_is_zero():
    assert float(fairseq_optimizer(params()).clip_grad_norm(1.0)) == 0.0


@pytest.mark.parametrize("c", [0.25, torch.tensor(0.25)])
def test_multiply_grads(c):
    ps = params(torch.float32)
    for p in ps:
        p.grad = torch.ones_like(p)
    ps.append(torch.zeros(2, requires_grad=True))  # no gradient: skipped
    fairseq_optimizer(ps).multiply_grads(c)
    assert all(torch.equal(p.grad, torch.full_like(p, 0.25)) for p in ps[:2]) and ps[2].grad is None


def test_optimizer_config_reads_fairseq_options():
    opt = fairseq_optimizer(params(), lr=[3e-4], adam_betas="(0.9,0.98)", adam_eps=1e-6, weight_decay=0.1)
    assert opt.optimizer_config == {"lr": 3e-4, "betas": (0.9, 0.98), "eps": 1e-6, "weight_decay": 0.1}
    assert opt.get_lr() == 3e-4
    assert opt.supports_memory_efficient_fp16 and opt.supports_step_with_scale and opt.supports_flat_params


@pytest.mark.parametrize(
    "value,expected",
    [
        ("(0.9, 0.98)", (0.9, 0.98)),
        ("[0.8,0.9]", (0.8, 0.9)),
        ((0.5, 0.6), (0.5, 0.6)),
        ("(0.0, 0.99)", (0.0, 0.99)),  # no momentum: allowed, as in torch
        (OmegaConf.create([0.9, 0.98]), (0.9, 0.98)),  # from a YAML config
    ],
)
def test_betas_parsing(value, expected):
    assert _betas(value) == expected


@pytest.mark.parametrize("value", ["(0.9)", "(0.9, 0.98, 0.99)", "(0.9, 1.0)", "(a, b)", "(-0.1, 0.9)", 3])
def test_bad_betas_are_named(value):
    with pytest.raises(ValueError, match=r"--adam-betas: expected two numbers in \[0, 1\)"):
        _betas(value)


@pytest.mark.parametrize("option", ["lr", "eps", "weight_decay"])
def test_negative_hyperparameters_are_refused(option):
    with pytest.raises(ValueError, match="fused_adam: lr, eps and weight_decay must be >= 0"):
        MasterWeightAdamW(params(), **{**HP, option: -1.0})


def test_fp16_optimizer_flat_buffer_gets_a_hint(caplog):
    flat = torch.nn.Parameter(torch.zeros(10))
    flat.grad = torch.zeros(10)
    with caplog.at_level(logging.INFO, logger="fairseq_resmlp.optim.fused_adam"):
        fairseq_optimizer([flat])
    assert (
        "fused_adam: running inside fairseq's FP16Optimizer (one flat fp32 parameter); add --memory-efficient-fp16 "
        "(or --memory-efficient-bf16) to skip its per-parameter copies" in caplog.text
    )
    # Not for a model's own parameters, with or without gradients, whatever their shapes.
    single_matrix = torch.nn.Parameter(torch.zeros(3, 4))
    single_matrix.grad = torch.zeros(3, 4)
    vectors_first = [torch.nn.Parameter(torch.zeros(10)), torch.nn.Parameter(torch.zeros(2, 2))]
    with_grads = params(torch.float32)
    for p in [*vectors_first, *with_grads]:
        p.grad = torch.zeros_like(p)
    groups = [{"params": [torch.nn.Parameter(torch.zeros(10))], "lr": 1e-3}]
    for model in (params(), with_grads, [single_matrix], vectors_first, groups):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="fairseq_resmlp.optim.fused_adam"):
            fairseq_optimizer(model)
        assert caplog.text == ""


# fairseq-train


def train(data: Path, save: Path, optimizer: list, max_update: int, extra=()) -> list:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
    args = tiny_train_args(data, "0.003", ROOT / "fairseq_resmlp")
    args[args.index("--optimizer") + 1 : args.index("--optimizer") + 2] = optimizer
    cmd = [
        str(Path(sys.executable).parent / "fairseq-train"),
        *args,
        "--adam-betas",
        "(0.9, 0.98)",
        "--weight-decay",
        "0.01",
        "--clip-norm",
        "0.5",
        *label_smoothing(0.1),
        *per_update_log_args(save, max_update),
        "--save-interval-updates",
        "4",
        "--no-epoch-checkpoints",
        "--disable-validation",
        *extra,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json_records(proc.stdout + proc.stderr)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from fairseq_resmlp_tools.toy_data import build_toy_data

    return build_toy_data(tmp_path_factory.mktemp("fused") / "data", n_train=300, n_valid=8, n_test=4) / "data-bin"


def losses(records):
    return [float(r["loss"]) for r in records]


@pytest.mark.slow
def test_fairseq_train_logs_the_losses_of_fairseq_adam(data, tmp_path):
    stock = train(data, tmp_path / "stock", ["adam"], 8)
    fused = train(data, tmp_path / "fused", ["fused_adam"], 8)
    assert len(stock) == len(fused) == 8
    for s, f in zip(stock, fused):
        assert abs(float(s["loss"]) - float(f["loss"])) <= 2e-3, (losses(stock), losses(fused))
        assert abs(float(s["gnorm"]) - float(f["gnorm"])) <= 2e-3 * max(1.0, float(s["gnorm"]))
    assert losses(fused)[-1] < losses(fused)[0]


@pytest.mark.slow
def test_memory_efficient_fp16_training_resumes_from_its_checkpoint(data, tmp_path):
    # fp16 on the CPU: fairseq's MemoryEfficientFP16Optimizer hands the half-precision parameters to fused_adam.
    half = ["fused_adam", "--fp16", "--memory-efficient-fp16"]
    straight = train(data, tmp_path / "straight", half, 8)
    first = train(data, tmp_path / "resumed", half, 4)
    state = torch.load(tmp_path / "resumed" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    masters = [s["master"] for s in state["last_optimizer_state"]["state"].values()]
    assert masters and all(m.dtype == torch.float32 for m in masters)
    resumed = train(data, tmp_path / "resumed", half, 8)
    assert len(straight) == 8 and len(first) == 4 and len(resumed) == 4
    assert losses(first) == losses(straight[:4])
    assert losses(resumed) == losses(straight[4:])
