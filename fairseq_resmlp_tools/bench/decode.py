"""Decoding speed of ResMLP against fairseq's Transformer at the same widths and depths, in one run.

    resmlp-benchmark --device cuda --fp16 --out runs/bench-gpu       # the full comparison (GPU)
    resmlp-benchmark --device cpu --out runs/bench-cpu               # CPU decoding targets
    resmlp-benchmark --preset tiny --out /tmp/bench                  # a smoke test (CI)

Measures, for each pair (``resmlp_6`` vs ``transformer_wmt_en_de``, ``resmlp_small`` vs
``transformer_iwslt_de_en``; tiny: ``resmlp_tiny`` vs ``transformer_tiny``):
- decoding through fairseq's ``SequenceGenerator``: sentences/s and tokens/s for each beam and batch size;
- per-step decoding latency as the output grows (t = 16, 64, 128, 256), beam search reordering included;
- on a GPU, ResMLP twice: with its fixed-shape CUDA-graph decoding step (the default) and without it
  ("(no graphs)"), the fraction of hypotheses identical between the two, and with ``--profile`` a torch.profiler
  table of one beam-4 generation per model (where a step's time goes).
Training speed is measured through fairseq-train itself: ``resmlp-benchmark-train``. Timings are medians
over repetitions after warm-up; CUDA timings are synchronised. Prints a table with the ratios
ResMLP / Transformer, writes ``results.json``, ``table.txt`` and ``benchmark.png`` to ``--out``.
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
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

import numpy as np

from fairseq_resmlp_tools._cli import ToolError, console_script
from fairseq_resmlp_tools.model_size import count_parameters

if TYPE_CHECKING:  # fairseq and torch are imported when a benchmark runs, not for --help
    import torch
    from fairseq.data import Dictionary


@dataclass
class Config:
    """What one benchmark run measures (filled from the command line)."""

    device: str
    fp16: bool
    pairs: List[List[str]]
    vocab: int
    beams: List[int]
    batch_sizes: List[int]
    decode_sentences: int
    step_lengths: List[int]
    step_batch: int
    step_beam: int
    repeats: int
    out: Path
    profile: bool = False
    int8: bool = False
    lengths: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 2), dtype=np.int64))


# ----------------------------------------------------------------------------------------------- inputs


class _Task:
    def __init__(self, dictionary: Dictionary) -> None:
        self.source_dictionary = self.target_dictionary = dictionary


def make_dictionary(size: int) -> Dictionary:
    """A fairseq dictionary of ``size`` entries, specials included."""
    from fairseq.data import Dictionary

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
        from fairseq.data import data_utils

        path = Path(source)
        src_idx = sorted(path.glob("train.*-*.*.idx"))
        if len(src_idx) < 2:
            raise ToolError(f"{path} holds no fairseq train.*.idx files (a data-bin from fairseq-preprocess)")
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
    """The registered architecture ``arch``, with its own defaults, as fairseq builds it."""
    import torch
    from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY

    args = argparse.Namespace()
    if arch.startswith("transformer"):
        args.max_source_positions = args.max_target_positions = 1024
    ARCH_CONFIG_REGISTRY[arch](args)
    torch.manual_seed(0)
    model = ARCH_MODEL_REGISTRY[arch].build_model(args, _Task(dictionary))
    # --fp16 as fairseq does it: the model itself in half precision.
    return model.to(cfg.device, dtype=torch.float16 if cfg.fp16 else torch.float32)


def random_batch(lengths: np.ndarray, dictionary: Dictionary, device: str, rng: np.random.Generator):
    """src (left-padded, ending in EOS) and its lengths, as fairseq builds them."""
    import torch

    bsz = len(lengths)
    src = torch.full((bsz, int(lengths[:, 0].max())), dictionary.pad(), dtype=torch.long)
    for i, ls in enumerate(lengths[:, 0]):
        row = torch.from_numpy(rng.integers(dictionary.nspecial, len(dictionary), ls))
        row[-1] = dictionary.eos()
        src[i, src.size(1) - ls :] = row
    return src.to(device), torch.as_tensor(lengths[:, 0]).to(device)


# ------------------------------------------------------------------------------------------------ timing


def sync(device: str) -> None:
    """Wait for queued CUDA work, so that a timing covers it."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[..., object], device: str, *args: object) -> float:
    """Seconds that ``fn(*args)`` takes, device work included."""
    sync(device)
    start = time.perf_counter()
    fn(*args)
    sync(device)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------- decoding


def bench_decoding(model, dictionary, cfg: Config, beam: int, batch_size: int) -> Dict[str, float]:
    """Sentences/s and tokens/s of SequenceGenerator; every hypothesis is forced to the same length."""
    import torch
    from fairseq.sequence_generator import SequenceGenerator

    model.eval()
    out_len = int(np.median(cfg.lengths[:, 1]))
    gen = SequenceGenerator([model], dictionary, beam_size=beam, max_len_a=0, max_len_b=out_len, min_len=out_len)
    rng = np.random.default_rng(2)
    # Batch 1 is slow per sentence: cap it at 32 batches so one measurement stays within seconds.
    n_batches = max(1, min(cfg.decode_sentences, 32 * batch_size) // batch_size)
    samples = []
    for _ in range(n_batches + 1):
        src, src_len = random_batch(
            cfg.lengths[rng.integers(0, len(cfg.lengths), batch_size)], dictionary, cfg.device, rng
        )
        samples.append({"net_input": {"src_tokens": src, "src_lengths": src_len}})
    produced: List[int] = []

    def run_all(batch_list) -> None:
        with torch.inference_mode():
            for sample in batch_list:
                produced.append(sum(len(h[0]["tokens"]) for h in gen.forward(sample)))

    run_all(samples[:1])  # warm-up
    rates, token_rates = [], []
    for _ in range(cfg.repeats):
        produced.clear()
        seconds = timed(run_all, cfg.device, samples[1:])
        rates.append(n_batches * batch_size / seconds)
        token_rates.append(sum(produced) / seconds)
    return {"sentences_per_s": statistics.median(rates), "tokens_per_s": statistics.median(token_rates)}


def bench_step_latency(model, dictionary, cfg: Config) -> Dict[int, float]:
    """Seconds per decoding step (decoder + log-softmax + beam reordering) when the prefix has t tokens."""
    import torch

    model.eval()
    bsz, beam = cfg.step_batch, cfg.step_beam
    max_t = min(max(cfg.step_lengths), model.max_decoder_positions())
    rng = np.random.default_rng(3)
    src, src_len = random_batch(cfg.lengths[rng.integers(0, len(cfg.lengths), bsz)], dictionary, cfg.device, rng)
    tokens = torch.randint(dictionary.nspecial, len(dictionary), (bsz * beam, max_t), device=cfg.device)
    tokens[:, 0] = dictionary.eos()
    beam_offsets = (torch.arange(bsz, device=cfg.device) * beam).repeat_interleave(beam)
    per_step: List[List[float]] = [[] for _ in range(max_t)]

    def one_step(t: int, enc, state, order) -> None:
        out, _ = model.decoder(tokens[:, : t + 1], encoder_out=enc, incremental_state=state)
        torch.log_softmax(out[:, -1].float(), dim=-1)
        model.decoder.reorder_incremental_state_scripting(state, order)

    with torch.inference_mode():
        for rep in range(cfg.repeats + 1):
            enc = model.encoder(src, src_lengths=src_len)
            enc = model.encoder.reorder_encoder_out(enc, torch.arange(bsz, device=cfg.device).repeat_interleave(beam))
            state: Dict[str, Dict[str, Optional[torch.Tensor]]] = {}
            for t in range(max_t):
                order = beam_offsets + torch.randint(0, beam, (bsz * beam,), device=cfg.device)
                seconds = timed(one_step, cfg.device, t, enc, state, order)
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
    """Measure every architecture of ``cfg.pairs``; the report that results.json holds."""
    import torch

    import fairseq_resmlp  # noqa: F401  (registers the resmlp architectures)

    dictionary = make_dictionary(cfg.vocab)
    gpu = cfg.device.startswith("cuda")
    report: Dict[str, object] = {
        "device": torch.cuda.get_device_name() if gpu else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "fp16": cfg.fp16,
        "config": {k: v for k, v in cfg.__dict__.items() if k != "lengths"},
        "lengths": {
            "pairs": int(len(cfg.lengths)),
            "median_src": float(np.median(cfg.lengths[:, 0])),
            "median_tgt": float(np.median(cfg.lengths[:, 1])),
        },
        "models": {},
    }
    models: Dict[str, object] = {}

    def measure(model) -> Dict[str, object]:
        return {
            "parameters": count_parameters(model),
            "decoding": {
                f"beam{b}_batch{n}": bench_decoding(model, dictionary, cfg, b, n)
                for b in cfg.beams
                for n in cfg.batch_sizes
            },
            "step_latency_s": bench_step_latency(model, dictionary, cfg),
        }

    for pair in cfg.pairs:
        for arch in pair:
            print(f"[bench] {arch}", file=sys.stderr, flush=True)
            model = build(arch, cfg, dictionary)
            graphs = getattr(getattr(model, "decoder", None), "static_decoding", None)
            models[arch] = measure(model)
            if cfg.profile:
                (cfg.out / f"profile_{arch}.txt").write_text(profile_generation(model, dictionary, cfg))
            if cfg.int8 and graphs is not None and not gpu:
                import copy

                from fairseq_resmlp import quantize_int8

                models[int8_name(arch)] = measure(quantize_int8(copy.deepcopy(model)))
            if graphs is not None and gpu:
                report.setdefault("graphs_agreement", {})[arch] = graph_agreement(model, dictionary, cfg)
                graphs.mode = "off"
                models[no_graphs(arch)] = measure(model)
                if cfg.profile:
                    (cfg.out / f"profile_{arch}_no_graphs.txt").write_text(profile_generation(model, dictionary, cfg))
                graphs.mode = "auto"
            del model
            if gpu:
                torch.cuda.empty_cache()
    report["models"] = models
    return report


def int8_name(arch: str) -> str:
    """The report's name for a ResMLP model measured with int8 dynamic quantization (CPU)."""
    return f"{arch} (int8)"


def no_graphs(arch: str) -> str:
    """The report's name for a ResMLP model measured with CUDA-graph decoding turned off."""
    return f"{arch} (no graphs)"


def graph_agreement(model, dictionary, cfg: Config, sentences: int = 64) -> Dict[str, float]:
    """Hypotheses with the CUDA-graph step against the incremental path (beam 4, natural lengths)."""
    import torch
    from fairseq.sequence_generator import SequenceGenerator

    gen = SequenceGenerator([model], dictionary, beam_size=4, max_len_a=0, max_len_b=40)
    rng = np.random.default_rng(11)
    batches = [
        random_batch(cfg.lengths[rng.integers(0, len(cfg.lengths), 16)], dictionary, cfg.device, rng)
        for _ in range(max(1, sentences // 16))
    ]
    found = {}
    for mode in ("off", "auto"):
        model.decoder.static_decoding.mode = mode
        with torch.inference_mode():
            found[mode] = [
                h for src, n in batches for h in gen.forward({"net_input": {"src_tokens": src, "src_lengths": n}})
            ]
    pairs = list(zip(found["off"], found["auto"]))
    same = sum(a[0]["tokens"].tolist() == b[0]["tokens"].tolist() for a, b in pairs)
    return {
        "identical_fraction": same / len(pairs),
        "max_score_difference": max(abs(float(a[0]["score"]) - float(b[0]["score"])) for a, b in pairs),
    }


def profile_generation(model, dictionary, cfg: Config, beam: int = 4) -> str:
    """torch.profiler's operator table for one generation (after two warm-ups): where a step's time goes."""
    import torch
    from fairseq.sequence_generator import SequenceGenerator
    from torch.profiler import ProfilerActivity, profile

    out_len = int(np.median(cfg.lengths[:, 1]))
    gen = SequenceGenerator([model], dictionary, beam_size=beam, max_len_a=0, max_len_b=out_len, min_len=out_len)
    rng = np.random.default_rng(9)
    batch = max(cfg.batch_sizes)
    src, src_len = random_batch(cfg.lengths[rng.integers(0, len(cfg.lengths), batch)], dictionary, cfg.device, rng)
    sample = {"net_input": {"src_tokens": src, "src_lengths": src_len}}
    gpu = cfg.device.startswith("cuda")
    with torch.inference_mode():
        gen.forward(sample)
        gen.forward(sample)
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])) as prof:
            gen.forward(sample)
            sync(cfg.device)
    header = f"one generation: beam {beam}, batch {batch}, {out_len} steps\n"
    return header + prof.key_averages().table(
        sort_by="self_cuda_time_total" if gpu else "self_cpu_time_total", row_limit=25
    )


def _comparison_rows(x: Dict, y: Dict, tag: str = "") -> List[tuple]:
    """Rows (name, x value, y value, format, higher is better) comparing two models' measurements."""
    suffix = f" {tag}" if tag else ""
    rows = [
        (
            f"decode {key} sent/s{suffix}",
            x["decoding"][key]["sentences_per_s"],
            y["decoding"][key]["sentences_per_s"],
            "{:,.1f}",
            True,
        )
        for key in x["decoding"]
    ]
    rows += [
        (f"step latency t={t} (ms){suffix}", 1e3 * s, 1e3 * y["step_latency_s"][t], "{:.2f}", False)
        for t, s in x["step_latency_s"].items()
    ]
    return rows


def format_table(report: Dict[str, object], pairs: Sequence[Sequence[str]]) -> str:
    """The printed comparison: one block per pair, ratio > 1 where ResMLP is better."""
    models = report["models"]
    lines = [f"device: {report['device']} | torch {report['torch']} | fp16: {report['fp16']}"]
    header = f"{'metric':<40}{'ResMLP':>14}{'Transformer':>14}{'ratio':>8}"
    for resmlp, transformer in pairs:
        a, b = models[resmlp], models[transformer]
        lines += ["", f"{resmlp} vs {transformer}", header, "-" * len(header)]
        rows = [("parameters (M)", a["parameters"] / 1e6, b["parameters"] / 1e6, "{:.1f}", False)]
        rows += _comparison_rows(a, b)
        for variant in (int8_name(resmlp), no_graphs(resmlp)):
            if variant in models:
                rows += _comparison_rows(models[variant], b, variant[len(resmlp) + 1 :])
        if int8_name(resmlp) in models:
            rows += [
                (f"int8 / fp32 ResMLP {name[7:]}", x, y, fmt, higher)
                for name, x, y, fmt, higher in _comparison_rows(models[int8_name(resmlp)], a)
                if name.startswith("decode ")
            ]
        for name, x, y, fmt, higher in rows:
            ratio = x / y if higher else y / x
            lines.append(f"{name:<40}{fmt.format(x):>14}{fmt.format(y):>14}{ratio:>7.2f}x")
        if no_graphs(resmlp) in models:
            agreement = report.get("graphs_agreement", {}).get(resmlp)
            if agreement:
                lines.append(
                    f"graphs on vs off (beam 4, fp16={report['fp16']}): "
                    f"{100 * agreement['identical_fraction']:.1f}% of hypotheses identical, "
                    f"largest score difference {agreement['max_score_difference']:.2g}"
                )
        lat, base = a["step_latency_s"], b["step_latency_s"]
        ts = sorted(lat)
        if ts:
            lines.append(
                f"ResMLP step latency t={ts[-1]} / t={ts[0]}: {lat[ts[-1]] / lat[ts[0]]:.2f}x "
                f"(Transformer: {base[ts[-1]] / base[ts[0]]:.2f}x)"
            )
    lines.append("ratio > 1 means ResMLP is better (faster, smaller)")
    lines.append("training speed: resmlp-benchmark-train (through fairseq-train itself)")
    return "\n".join(lines)


def plot(report: Dict[str, object], pairs: Sequence[Sequence[str]], path: Path) -> None:
    """Decoding sentences/s by beam and batch, and per-step latency against the prefix length."""
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    models = report["models"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    names = [
        arch for pair in pairs for arch in (pair[0], no_graphs(pair[0]), int8_name(pair[0]), pair[1]) if arch in models
    ]
    keys = list(models[names[0]]["decoding"])
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        axes[0].bar(
            np.arange(len(keys)) + i * width,
            [models[n]["decoding"][k]["sentences_per_s"] for k in keys],
            width,
            label=n,
        )
    axes[0].set_xticks(np.arange(len(keys)) + 0.4 - width / 2, keys, rotation=20, fontsize=8)
    axes[0].set_ylabel("decoding sentences/s")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7)
    for n in names:
        lat = models[n]["step_latency_s"]
        ts = sorted(lat)
        axes[1].plot(
            ts, [1e3 * lat[t] for t in ts], marker="o", label=n, linestyle="-" if n.startswith("resmlp") else "--"
        )
    axes[1].set_xlabel("decoding step t (prefix length)")
    axes[1].set_ylabel("ms per step")
    axes[1].set_title(f"batch {report['config']['step_batch']} x beam {report['config']['step_beam']}", fontsize=9)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"ResMLP vs Transformer on {report['device']} (fp16={report['fp16']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    """The command line of resmlp-benchmark."""
    p = argparse.ArgumentParser(
        prog="resmlp-benchmark",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--fp16", action="store_true", help="half-precision model as fairseq's --fp16 (CUDA only)")
    p.add_argument(
        "--preset",
        choices=["full", "tiny"],
        default="full",
        help="tiny: resmlp_tiny vs transformer_tiny and short runs, a smoke test that finishes in seconds",
    )
    p.add_argument(
        "--pairs",
        default=None,
        help="comma-separated RESMLP_ARCH:TRANSFORMER_ARCH (default: resmlp_6:transformer_wmt_en_de,"
        "resmlp_small:transformer_iwslt_de_en)",
    )
    p.add_argument(
        "--lengths-from",
        default=None,
        metavar="DATA_BIN",
        help="take sentence lengths from this fairseq data-bin's train split (default: WMT-like)",
    )
    p.add_argument("--vocab", type=int, default=None, help="dictionary size (default 32000; tiny: 500)")
    p.add_argument("--beams", default=None, help="comma-separated beam sizes (default 1,4,5; cpu: 4)")
    p.add_argument("--batch-sizes", default=None, help="comma-separated decoding batch sizes")
    p.add_argument("--decode-sentences", type=int, default=None, help="sentences per decoding measurement")
    p.add_argument("--step-lengths", default="16,64,128,256", help="prefix lengths for per-step latency")
    p.add_argument("--step-batch", type=int, default=32)
    p.add_argument("--step-beam", type=int, default=4)
    p.add_argument("--repeats", type=int, default=None, help="repetitions (median reported)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--profile", action="store_true", help="write a torch.profiler table of one generation per model")
    p.add_argument("--int8", action="store_true", help="on the CPU, also measure ResMLP with int8 dynamic quantization")
    p.add_argument("--out", type=Path, default=Path("runs/benchmark"), help="folder for results.json and benchmark.png")
    return p


def config_from_args(a: argparse.Namespace) -> Config:
    """Check the options and fill in the preset's defaults."""
    import torch
    from fairseq.models import ARCH_MODEL_REGISTRY

    import fairseq_resmlp  # noqa: F401  (registers the resmlp architectures)

    tiny = a.preset == "tiny"
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        raise ToolError("--device cuda but no CUDA device is available")
    if a.fp16 and not gpu:
        raise ToolError("--fp16 needs --device cuda")
    if a.threads:
        torch.set_num_threads(a.threads)

    def ints(text: Optional[str], default: str) -> List[int]:
        return [int(x) for x in (text or default).split(",") if x]

    default_pairs = (
        "resmlp_tiny:transformer_tiny"
        if tiny
        else "resmlp_6:transformer_wmt_en_de,resmlp_small:transformer_iwslt_de_en"
    )
    pairs = [x.split(":") for x in (a.pairs or default_pairs).split(",")]
    for pair in pairs:
        if len(pair) != 2 or any(arch not in ARCH_MODEL_REGISTRY for arch in pair):
            raise ToolError(
                f"--pairs: {':'.join(pair)} is not RESMLP_ARCH:TRANSFORMER_ARCH of registered architectures"
            )
    return Config(
        device=device,
        fp16=a.fp16,
        pairs=pairs,
        vocab=a.vocab or (500 if tiny else 32000),
        beams=ints(a.beams, "1,4" if tiny else ("1,4,5" if gpu else "4")),
        batch_sizes=ints(a.batch_sizes, "1,8" if tiny else ("1,32,128" if gpu else "1,32")),
        decode_sentences=a.decode_sentences or (8 if tiny else (512 if gpu else 64)),
        step_lengths=[4, 16, 32] if tiny else ints(a.step_lengths, "16,64,128,256"),
        step_batch=2 if tiny else a.step_batch,
        step_beam=2 if tiny else a.step_beam,
        repeats=a.repeats or (1 if tiny else 3),
        out=a.out,
        profile=a.profile,
        int8=a.int8,
        lengths=load_lengths(a.lengths_from, tiny),
    )


@console_script
def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg = config_from_args(build_parser().parse_args(argv))
    cfg.out.mkdir(parents=True, exist_ok=True)
    report = run(cfg)
    table = format_table(report, cfg.pairs)
    print(table)
    (cfg.out / "results.json").write_text(json.dumps(report, indent=2, default=str))
    (cfg.out / "table.txt").write_text(table + "\n")
    plot(report, cfg.pairs, cfg.out / "benchmark.png")
    print(f"wrote {cfg.out / 'results.json'}, {cfg.out / 'table.txt'} and {cfg.out / 'benchmark.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
