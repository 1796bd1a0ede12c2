"""Speed and memory of ResMLP against fairseq's Transformer at the same widths and depths, in one run.

    python scripts/benchmark.py --device cuda --fp16 --out runs/bench-gpu       # the full comparison (GPU)
    python scripts/benchmark.py --device cpu --out runs/bench-cpu               # CPU decoding targets
    python scripts/benchmark.py --preset tiny --out /tmp/bench                  # a smoke test (CI)

Measures, for each pair (``resmlp_6`` vs ``transformer_wmt_en_de``, ``resmlp_small`` vs
``transformer_iwslt_de_en``):
- training: target tokens/s of forward + backward + optimizer step on batches built like fairseq's
  (``--max-tokens``) from real sentence lengths, peak memory, and on GPU the model FLOPs utilisation against
  the device's measured matrix-multiply peak;
- decoding through fairseq's ``SequenceGenerator``: sentences/s and tokens/s for each beam and batch size;
- per-step decoding latency as the output grows (t = 16, 64, 128, 256), beam search reordering included.
Timings are medians over repetitions after warm-up; CUDA timings are synchronised. Prints a table with the
ratios ResMLP / Transformer, writes ``results.json`` and ``benchmark.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import fairseq_resmlp  # noqa: E402,F401  (registers the resmlp architectures)
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss  # noqa: E402
from fairseq.data import Dictionary, data_utils  # noqa: E402
from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY  # noqa: E402
from fairseq.sequence_generator import SequenceGenerator  # noqa: E402

TINY_OVERRIDES = dict(
    encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_layers=2, encoder_attention_heads=2,
    decoder_embed_dim=32, decoder_ffn_embed_dim=64, decoder_layers=2, decoder_attention_heads=2,
    max_source_positions=128, max_target_positions=128, dropout=0.0,
)


@dataclass
class Config:
    """What one benchmark run measures (filled from the command line)."""

    device: str
    fp16: bool
    pairs: List[List[str]]
    overrides: Dict[str, object]
    vocab: int
    max_tokens: int
    train_steps: int
    beams: List[int]
    batch_sizes: List[int]
    decode_sentences: int
    step_lengths: List[int]
    step_batch: int
    step_beam: int
    repeats: int
    warmup: int
    training_only: bool = False
    decoding_only: bool = False
    lengths: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))


# ----------------------------------------------------------------------------------------------- inputs


class _Task:
    def __init__(self, dictionary: Dictionary) -> None:
        self.source_dictionary = self.target_dictionary = dictionary


def make_dictionary(size: int) -> Dictionary:
    d = Dictionary()
    for i in range(size - d.nspecial):
        d.add_symbol(f"tok{i}")
    return d


def load_lengths(source: Optional[str], tiny: bool, seed: int = 0) -> np.ndarray:
    """(source, target) lengths in tokens, N x 2: from a fairseq data-bin split, or WMT-like synthetic ones.

    The synthetic distribution (log-normal, median about 27 SentencePiece tokens, target/source ratio around 1)
    is what WMT14 En-De gives after joint 32k SentencePiece; a data-bin gives the real thing.
    """
    if source:
        path = Path(source)
        src_idx = sorted(path.glob("train.*-*.*.idx"))
        if len(src_idx) < 2:
            raise SystemExit(f"error: {path} holds no fairseq train.*.idx files (a data-bin from fairseq-preprocess)")
        pair = src_idx[0].name.split(".")[1]
        s, t = pair.split("-")
        src = data_utils.load_indexed_dataset(str(path / f"train.{pair}.{s}"), None)
        tgt = data_utils.load_indexed_dataset(str(path / f"train.{pair}.{t}"), None)
        return np.stack([src.sizes, tgt.sizes], axis=1).astype(np.int64)
    rng = np.random.default_rng(seed)
    n = 20000
    src = np.clip(np.round(rng.lognormal(math.log(27), 0.55, n)), 3, 60 if tiny else 250)
    tgt = np.clip(np.round(src * rng.normal(1.05, 0.15, n)), 3, 60 if tiny else 250)
    return np.stack([src, tgt], axis=1).astype(np.int64)


def build(arch: str, cfg: Config, dictionary: Dictionary) -> torch.nn.Module:
    args = argparse.Namespace(**cfg.overrides)
    if arch.startswith("transformer"):
        for key in ("max_source_positions", "max_target_positions"):
            args.__dict__.setdefault(key, 1024)
    ARCH_CONFIG_REGISTRY[arch](args)
    torch.manual_seed(0)
    model = ARCH_MODEL_REGISTRY[arch].build_model(args, _Task(dictionary))
    # --fp16 as fairseq does it: the model itself in half precision (fp32 master weights live in the optimizer).
    return model.to(cfg.device, dtype=torch.float16 if cfg.fp16 else torch.float32)


def random_batch(lengths: np.ndarray, dictionary: Dictionary, device: str, rng: np.random.Generator):
    """src (left-padded, ending in EOS), prev_output_tokens and target (right-padded), as fairseq builds them."""
    bsz = len(lengths)
    pad, eos = dictionary.pad(), dictionary.eos()
    src = torch.full((bsz, int(lengths[:, 0].max())), pad, dtype=torch.long)
    tgt = torch.full((bsz, int(lengths[:, 1].max())), pad, dtype=torch.long)
    prev = tgt.clone()
    for i, (ls, lt) in enumerate(lengths):
        row_s = torch.from_numpy(rng.integers(dictionary.nspecial, len(dictionary), ls))
        row_s[-1] = eos
        src[i, src.size(1) - ls :] = row_s
        row_t = torch.from_numpy(rng.integers(dictionary.nspecial, len(dictionary), lt))
        row_t[-1] = eos
        tgt[i, :lt] = row_t
        prev[i, 0] = eos
        prev[i, 1:lt] = row_t[:-1]
    return src.to(device), torch.as_tensor(lengths[:, 0]).to(device), prev.to(device), tgt.to(device)


def make_batches(lengths: np.ndarray, max_tokens: int, max_positions: int) -> List[np.ndarray]:
    """fairseq's own batching (sort by length, fill up to max_tokens) over the length distribution."""
    ok = np.nonzero(lengths.max(axis=1) <= max_positions)[0]
    order = ok[np.lexsort((lengths[ok, 0], lengths[ok, 1]))]
    batches = data_utils.batch_by_size(
        order, num_tokens_fn=lambda i: int(lengths[i].max()), max_tokens=max_tokens, required_batch_size_multiple=8
    )
    return [lengths[b] for b in batches]


# ------------------------------------------------------------------------------------------------ timing


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


class MasterWeightsAdam:
    """What ``fairseq-train --fp16`` does: fp16 model, fp32 master copy updated by Adam, dynamic loss scale
    (halved and the step skipped on overflow, as fairseq's FP16Optimizer).

    Timing the model the way fairseq trains it matters: under torch.autocast fairseq's Transformer runs its
    attention masks in fp32 and is several times slower than with ``--fp16``, which would flatter ResMLP.
    """

    def __init__(self, model: torch.nn.Module, fp16: bool, scale: float = 128.0) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.fp16 = fp16
        self.scale = scale if fp16 else 1.0
        self.master = [p.detach().float().clone().requires_grad_(True) for p in self.params] if fp16 else self.params
        # fused=True on CUDA is what fairseq's --fp16 uses too (FusedAdam): one kernel for all parameters.
        self.optimizer = torch.optim.Adam(self.master, lr=1e-4, fused=self.master[0].is_cuda)
        self.skipped = 0

    def step(self) -> None:
        if self.fp16:
            grads = [p.grad.float() if p.grad is not None else torch.zeros_like(m) for p, m in zip(self.params, self.master)]
            found_inf = torch.zeros(1, device=grads[0].device)
            # One fused unscale + overflow check over all gradients, one host sync per step (as fairseq).
            torch._amp_foreach_non_finite_check_and_unscale_(
                grads, found_inf, torch.full((1,), 1.0 / self.scale, device=grads[0].device)
            )
            if bool(found_inf.item()):
                self.scale /= 2
                self.skipped += 1
                for p in self.params:
                    p.grad = None
                return
            for m, g in zip(self.master, grads):
                m.grad = g
        self.optimizer.step()
        if self.fp16:
            with torch.no_grad():
                torch._foreach_copy_(self.params, self.master)
        for p in self.params:
            p.grad = None


def measure_peak_flops(device: str, fp16: bool) -> Optional[float]:
    """Achievable matrix-multiply FLOP/s of this device, measured (8192^3 products, median of 10)."""
    if not device.startswith("cuda"):
        return None
    dtype = torch.float16 if fp16 else torch.float32
    a = torch.randn(8192, 8192, device=device, dtype=dtype)
    b = torch.randn(8192, 8192, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = [timed(lambda: a @ b, device) for _ in range(10)]
    return 2 * 8192**3 / statistics.median(times)


# ---------------------------------------------------------------------------------------------- training


def bench_training(model, dictionary, cfg: Config, peak: Optional[float]) -> Dict[str, object]:
    """Target tokens/s of forward + backward + Adam step, peak memory, FLOP/s and MFU."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    max_pos = min(model.max_positions())
    batches = make_batches(cfg.lengths, cfg.max_tokens, max_pos)
    rng = np.random.default_rng(1)
    picks = rng.choice(len(batches), size=min(len(batches), cfg.warmup + cfg.train_steps * cfg.repeats), replace=False)
    inputs = [random_batch(batches[i], dictionary, cfg.device, rng) for i in picks]
    optimizer = MasterWeightsAdam(model, cfg.fp16)

    def step(batch) -> None:
        src, src_len, prev, tgt = batch
        logits, _ = model(src, src_len, prev)
        lprobs = torch.log_softmax(logits.float(), dim=-1)
        loss, _ = label_smoothed_nll_loss(
            lprobs.view(-1, lprobs.size(-1)), tgt.view(-1), 0.1, ignore_index=dictionary.pad()
        )
        # Per-token loss, as fairseq's gradients are divided by the number of target tokens.
        (loss * optimizer.scale / tgt.ne(dictionary.pad()).sum()).backward()
        optimizer.step()

    for batch in inputs[: cfg.warmup]:
        step(batch)
    timed_inputs = inputs[cfg.warmup :]
    flop_counter = FlopCounterMode(display=False)
    with flop_counter:
        step(timed_inputs[0])
    flops_first = flop_counter.get_total_flops()
    tokens_first = int(timed_inputs[0][3].ne(dictionary.pad()).sum())
    if cfg.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    rates, flop_rates = [], []
    for r in range(cfg.repeats):
        chunk = timed_inputs[r * cfg.train_steps : (r + 1) * cfg.train_steps]
        if not chunk:
            break
        tokens = sum(int(b[3].ne(dictionary.pad()).sum()) for b in chunk)
        seconds = timed(lambda: [step(b) for b in chunk], cfg.device)
        rates.append(tokens / seconds)
        flop_rates.append(flops_first / tokens_first * tokens / seconds)
    if any(not bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise RuntimeError(f"training produced non-finite weights (skipped steps: {optimizer.skipped})")
    result: Dict[str, object] = {
        "skipped_steps": optimizer.skipped,
        "tokens_per_s": statistics.median(rates),
        "flops_per_target_token": flops_first / tokens_first,
        "achieved_flops": statistics.median(flop_rates),
    }
    if cfg.device.startswith("cuda"):
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if peak:
        result["mfu"] = result["achieved_flops"] / peak
    model.zero_grad(set_to_none=True)
    return result


# ---------------------------------------------------------------------------------------------- decoding


def bench_decoding(model, dictionary, cfg: Config, beam: int, batch_size: int) -> Dict[str, float]:
    """Sentences/s and tokens/s of SequenceGenerator; every hypothesis is forced to the same length."""
    model.eval()
    out_len = int(np.median(cfg.lengths[:, 1]))
    gen = SequenceGenerator([model], dictionary, beam_size=beam, max_len_a=0, max_len_b=out_len, min_len=out_len)
    rng = np.random.default_rng(2)
    # Batch 1 is slow per sentence: cap it at 32 batches so one measurement stays within seconds.
    n_batches = max(1, min(cfg.decode_sentences, 32 * batch_size) // batch_size)
    samples = []
    for _ in range(n_batches + 1):
        lengths = cfg.lengths[rng.integers(0, len(cfg.lengths), batch_size)]
        src, src_len, _, _ = random_batch(lengths, dictionary, cfg.device, rng)
        samples.append({"net_input": {"src_tokens": src, "src_lengths": src_len}})

    def run_all(batch_list) -> int:
        produced = 0
        with torch.inference_mode():
            for sample in batch_list:
                hypos = gen.forward(sample)
                produced += sum(len(h[0]["tokens"]) for h in hypos)
        return produced

    run_all(samples[:1])  # warm-up
    rates, token_rates = [], []
    for _ in range(cfg.repeats):
        produced = [0]
        seconds = timed(lambda: produced.__setitem__(0, run_all(samples[1:])), cfg.device)
        rates.append(n_batches * batch_size / seconds)
        token_rates.append(produced[0] / seconds)
    return {"sentences_per_s": statistics.median(rates), "tokens_per_s": statistics.median(token_rates)}


def bench_step_latency(model, dictionary, cfg: Config) -> Dict[int, float]:
    """Seconds per decoding step (decoder + log-softmax + beam reordering) when the prefix has t tokens."""
    model.eval()
    bsz, beam = cfg.step_batch, cfg.step_beam
    max_t = min(max(cfg.step_lengths), model.max_decoder_positions())
    rng = np.random.default_rng(3)
    lengths = cfg.lengths[rng.integers(0, len(cfg.lengths), bsz)]
    src, src_len, _, _ = random_batch(lengths, dictionary, cfg.device, rng)
    tokens = torch.randint(dictionary.nspecial, len(dictionary), (bsz * beam, max_t), device=cfg.device)
    tokens[:, 0] = dictionary.eos()
    beam_offsets = (torch.arange(bsz, device=cfg.device) * beam).repeat_interleave(beam)
    per_step: List[List[float]] = [[] for _ in range(max_t)]
    with torch.inference_mode():
        for rep in range(cfg.repeats + 1):
            enc = model.encoder(src, src_lengths=src_len)
            enc = model.encoder.reorder_encoder_out(enc, torch.arange(bsz, device=cfg.device).repeat_interleave(beam))
            state: Dict[str, Dict[str, Optional[torch.Tensor]]] = {}
            for t in range(max_t):
                order = beam_offsets + torch.randint(0, beam, (bsz * beam,), device=cfg.device)

                def one_step() -> None:
                    out, _ = model.decoder(tokens[:, : t + 1], encoder_out=enc, incremental_state=state)
                    torch.log_softmax(out[:, -1].float(), dim=-1)
                    model.decoder.reorder_incremental_state_scripting(state, order)

                seconds = timed(one_step, cfg.device)
                if rep > 0:  # the first pass is warm-up
                    per_step[t].append(seconds)
    result = {}
    for t in cfg.step_lengths:
        t_eff = min(t, max_t)
        window = [s for i in range(max(0, t_eff - 3), t_eff) for s in per_step[i]]
        result[t] = statistics.median(window)
    return result


# ----------------------------------------------------------------------------------------------- report


def run(cfg: Config) -> Dict[str, object]:
    dictionary = make_dictionary(cfg.vocab)
    peak = measure_peak_flops(cfg.device, cfg.fp16)
    report: Dict[str, object] = {
        "device": torch.cuda.get_device_name() if cfg.device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "fp16": cfg.fp16,
        "peak_matmul_flops": peak,
        "config": {k: v for k, v in cfg.__dict__.items() if k != "lengths"},
        "lengths": {"pairs": int(len(cfg.lengths)), "median_src": float(np.median(cfg.lengths[:, 0])),
                    "median_tgt": float(np.median(cfg.lengths[:, 1]))},
        "models": {},
    }
    for pair in cfg.pairs:
        for arch in pair:
            print(f"[bench] {arch}", file=sys.stderr, flush=True)
            model = build(arch, cfg, dictionary)
            entry: Dict[str, object] = {
                "parameters": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
            }
            entry["training"] = {} if cfg.decoding_only else bench_training(model, dictionary, cfg, peak)
            entry["decoding"] = {
                f"beam{b}_batch{n}": bench_decoding(model, dictionary, cfg, b, n)
                for b in cfg.beams
                for n in cfg.batch_sizes
                if not cfg.training_only
            }
            entry["step_latency_s"] = {} if cfg.training_only else bench_step_latency(model, dictionary, cfg)
            report["models"][arch] = entry
            del model
            if cfg.device.startswith("cuda"):
                torch.cuda.empty_cache()
    return report


def format_table(report: Dict[str, object], pairs: Sequence[Sequence[str]]) -> str:
    models = report["models"]
    lines = [f"device: {report['device']} | torch {report['torch']} | fp16: {report['fp16']}"]
    if report.get("peak_matmul_flops"):
        lines.append(f"measured matmul peak: {report['peak_matmul_flops'] / 1e12:.0f} TFLOP/s")
    header = f"{'metric':<34}{'ResMLP':>14}{'Transformer':>14}{'ratio':>8}"
    for resmlp, transformer in pairs:
        a, b = models[resmlp], models[transformer]
        lines += ["", f"{resmlp} vs {transformer}", header, "-" * len(header)]

        def row(name: str, x: Optional[float], y: Optional[float], fmt: str = "{:,.0f}", higher: bool = True):
            if x is None or y is None:
                return
            ratio = x / y if higher else y / x
            lines.append(f"{name:<34}{fmt.format(x):>14}{fmt.format(y):>14}{ratio:>7.2f}x")

        row("parameters (M)", a["parameters"] / 1e6, b["parameters"] / 1e6, "{:.1f}", higher=False)
        if a["training"]:
            row("train target tok/s", a["training"]["tokens_per_s"], b["training"]["tokens_per_s"])
            row("train peak memory (GiB)", a["training"].get("peak_memory_gib"),
                b["training"].get("peak_memory_gib"), "{:.2f}", higher=False)
            row("train GFLOP per target token", a["training"]["flops_per_target_token"] / 1e9,
                b["training"]["flops_per_target_token"] / 1e9, "{:.2f}", higher=False)
        if "mfu" in a["training"]:
            row("train MFU (%)", 100 * a["training"]["mfu"], 100 * b["training"]["mfu"], "{:.1f}")
        for key in a["decoding"]:
            row(f"decode {key} sent/s", a["decoding"][key]["sentences_per_s"], b["decoding"][key]["sentences_per_s"],
                "{:,.1f}")
        for t, s in a["step_latency_s"].items():
            row(f"step latency t={t} (ms)", 1e3 * s, 1e3 * b["step_latency_s"][t], "{:.2f}", higher=False)
        lat = a["step_latency_s"]
        ts = sorted(lat)
        if ts:
            lines.append(f"ResMLP step latency t={ts[-1]} / t={ts[0]}: {lat[ts[-1]] / lat[ts[0]]:.2f}x "
                         f"(Transformer: {b['step_latency_s'][ts[-1]] / b['step_latency_s'][ts[0]]:.2f}x)")
    lines.append("ratio > 1 means ResMLP is better (faster, smaller, less memory)")
    if str(report["device"]).startswith("NVIDIA") or "cuda" in str(report["config"].get("device", "")):
        lines.append("note: on GPU this harness's training tokens/s are far below fairseq-train's for both models "
                     "(under investigation); use scripts/benchmark_fairseq_train.py for training speed")
    return "\n".join(lines)


def plot(report: Dict[str, object], pairs: Sequence[Sequence[str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    models = report["models"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    names = [arch for pair in pairs for arch in pair]
    axes[0].bar(range(len(names)), [models[n]["training"].get("tokens_per_s", 0) for n in names],
                color=["tab:blue" if n.startswith("resmlp") else "tab:orange" for n in names])
    axes[0].set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    axes[0].set_ylabel("training target tokens/s")
    keys = list(models[names[0]]["decoding"])
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        axes[1].bar(np.arange(len(keys)) + i * width, [models[n]["decoding"][k]["sentences_per_s"] for k in keys],
                    width, label=n)
    axes[1].set_xticks(np.arange(len(keys)) + 0.4 - width / 2, keys, rotation=20, fontsize=8)
    axes[1].set_ylabel("decoding sentences/s")
    axes[1].set_yscale("log")
    axes[1].legend(fontsize=7)
    for n in names:
        lat = models[n]["step_latency_s"]
        ts = sorted(lat)
        axes[2].plot(ts, [1e3 * lat[t] for t in ts], marker="o", label=n,
                     linestyle="-" if n.startswith("resmlp") else "--")
    axes[2].set_xlabel("decoding step t (prefix length)")
    axes[2].set_ylabel("ms per step")
    axes[2].set_title(f"batch {report['config']['step_batch']} x beam {report['config']['step_beam']}", fontsize=9)
    axes[2].legend(fontsize=7)
    fig.suptitle(f"ResMLP vs Transformer on {report['device']} (fp16={report['fp16']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: Optional[Sequence[str]] = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--fp16", action="store_true", help="half-precision model as fairseq's --fp16 (CUDA only)")
    p.add_argument("--preset", choices=["full", "tiny"], default="full",
                   help="tiny: d=32 two-layer models and short runs, a smoke test that finishes in seconds")
    p.add_argument("--pairs", default=None,
                   help="comma-separated RESMLP_ARCH:TRANSFORMER_ARCH (default: resmlp_6:transformer_wmt_en_de,"
                        "resmlp_small:transformer_iwslt_de_en)")
    p.add_argument("--lengths-from", default=None, metavar="DATA_BIN",
                   help="take sentence lengths from this fairseq data-bin's train split (default: WMT-like)")
    p.add_argument("--vocab", type=int, default=None, help="dictionary size (default 32000; tiny: 500)")
    p.add_argument("--max-tokens", type=int, default=None, help="training batch size in tokens")
    p.add_argument("--train-steps", type=int, default=None, help="timed training steps per repetition")
    p.add_argument("--beams", default=None, help="comma-separated beam sizes (default 1,4,5; cpu: 4)")
    p.add_argument("--batch-sizes", default=None, help="comma-separated decoding batch sizes")
    p.add_argument("--decode-sentences", type=int, default=None, help="sentences per decoding measurement")
    p.add_argument("--step-lengths", default="16,64,128,256", help="prefix lengths for per-step latency")
    p.add_argument("--step-batch", type=int, default=32)
    p.add_argument("--step-beam", type=int, default=4)
    p.add_argument("--repeats", type=int, default=None, help="repetitions (median reported)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--training-only", action="store_true", help="measure training only (no decoding)")
    p.add_argument("--decoding-only", action="store_true", help="measure decoding only (no training)")
    p.add_argument("--out", default="runs/benchmark", help="folder for results.json and benchmark.png")
    a = p.parse_args(argv)
    tiny = a.preset == "tiny"
    gpu = a.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is available")
    if a.fp16 and not gpu:
        p.error("--fp16 needs --device cuda")
    if a.threads:
        torch.set_num_threads(a.threads)

    def ints(text: Optional[str], default: str) -> List[int]:
        return [int(x) for x in (text or default).split(",") if x]

    pairs = [x.split(":") for x in (a.pairs or ("resmlp_tiny:transformer" if tiny else
             "resmlp_6:transformer_wmt_en_de,resmlp_small:transformer_iwslt_de_en")).split(",")]
    for pair in pairs:
        if len(pair) != 2 or any(arch not in ARCH_MODEL_REGISTRY for arch in pair):
            p.error(f"--pairs: {':'.join(pair)} is not RESMLP_ARCH:TRANSFORMER_ARCH of registered architectures")
    cfg = Config(
        device=a.device,
        fp16=a.fp16,
        pairs=pairs,
        overrides=dict(TINY_OVERRIDES) if tiny else {},
        vocab=a.vocab or (500 if tiny else 32000),
        max_tokens=a.max_tokens or (1024 if tiny else (16384 if gpu else 4096)),
        train_steps=a.train_steps or (2 if tiny else (20 if gpu else 3)),
        beams=ints(a.beams, "1,4" if tiny else ("1,4,5" if gpu else "4")),
        batch_sizes=ints(a.batch_sizes, "1,8" if tiny else ("1,32,128" if gpu else "1,32")),
        decode_sentences=a.decode_sentences or (8 if tiny else (512 if gpu else 64)),
        step_lengths=ints(a.step_lengths, "16,64,128,256") if not tiny else [4, 16, 32],
        step_batch=2 if tiny else a.step_batch,
        step_beam=2 if tiny else a.step_beam,
        repeats=a.repeats or (1 if tiny else 3),
        warmup=1 if tiny else 3,
        training_only=a.training_only,
        decoding_only=a.decoding_only,
    )
    cfg.lengths = load_lengths(a.lengths_from, tiny)
    cfg.out = Path(a.out)  # type: ignore[attr-defined]
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg = parse_args(argv)
    out: Path = cfg.out  # type: ignore[attr-defined]
    report = run(cfg)
    out.mkdir(parents=True, exist_ok=True)
    table = format_table(report, cfg.pairs)
    print(table)
    (out / "results.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "table.txt").write_text(table + "\n")
    if not cfg.training_only:
        plot(report, cfg.pairs, out / "benchmark.png")
    print(f"wrote {out / 'results.json'}, {out / 'table.txt'}" + ("" if cfg.training_only else f" and {out / 'benchmark.png'}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
