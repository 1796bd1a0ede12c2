"""Decoding speed of ResMLP (fixed-shape CUDA-graph step on and off) against fairseq's Transformer, in one run.

    python -m fairseq_resmlp_tools.bench.decoding --device cuda --fp16 --out runs/bench-decoding
    python -m fairseq_resmlp_tools.bench.decoding --device cpu --threads 2 --int8 --out runs/bench-decoding-cpu

Measures, for resmlp_6 against transformer_wmt_en_de (random weights, a joint dictionary of --vocab entries):
- agreement: the fraction of hypotheses identical with graphs on and off, and the largest score difference;
- per-step latency at prefix length t (decoder step + log-softmax + a beam reorder, beam 4, batch 128);
- SequenceGenerator sentences/s for beams 1/4/5 and batches 1/32/128, every hypothesis forced to --out-len tokens
  so both models do the same number of steps;
- a torch.profiler summary of one beam-4, batch-128 generation (where the step's time goes).
Writes results.json and table.md into --out and prints the table.
"""

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Callable[[], object], device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


class _Task:
    def __init__(self, dictionary) -> None:
        self.source_dictionary = dictionary
        self.target_dictionary = dictionary


def make_dictionary(size: int):
    from fairseq.data import Dictionary

    d = Dictionary()
    for i in range(size - d.nspecial):
        d.add_symbol(f"w{i}")
    return d


def build(arch: str, dictionary, device: str, fp16: bool, **overrides) -> torch.nn.Module:
    """An architecture from fairseq's registry, built as fairseq-train would (shared embeddings)."""
    from fairseq.models import ARCH_MODEL_REGISTRY, ARCH_CONFIG_REGISTRY

    import fairseq_resmlp  # noqa: F401  (registers resmlp_*)

    cfg = argparse.Namespace(share_all_embeddings=True, **overrides)
    ARCH_CONFIG_REGISTRY[arch](cfg)
    torch.manual_seed(0)
    model = ARCH_MODEL_REGISTRY[arch].build_model(cfg, _Task(dictionary)).to(device).eval()
    return model.half() if fp16 else model


def random_sources(dictionary, n: int, device: str, seed: int, lengths: Sequence[int]) -> List[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = lengths[i % len(lengths)]
        row = torch.randint(dictionary.nspecial, len(dictionary), (length,), generator=g)
        row[-1] = dictionary.eos()
        out.append(row)
    return out


def collate(rows: List[torch.Tensor], dictionary, device: str) -> Dict:
    from fairseq.data import data_utils

    src = data_utils.collate_tokens(rows, dictionary.pad(), left_pad=True).to(device)
    return {"net_input": {"src_tokens": src, "src_lengths": torch.tensor([len(r) for r in rows], device=device)}}


def set_graphs(model, mode: Optional[str]) -> None:
    if mode is not None:
        model.decoder.static_decoding.mode = mode


def generator(model, dictionary, beam: int, out_len: int):
    from fairseq.sequence_generator import SequenceGenerator

    return SequenceGenerator([model], dictionary, beam_size=beam, max_len_a=0, max_len_b=out_len, min_len=out_len)


def agreement(model, dictionary, device: str, lengths: Sequence[int], sentences: int = 64) -> Dict[str, float]:
    """Hypotheses with the graph step against the incremental path (same model, beam 4, natural lengths)."""
    from fairseq.sequence_generator import SequenceGenerator

    gen = SequenceGenerator([model], dictionary, beam_size=4, max_len_a=0, max_len_b=40)
    rows = random_sources(dictionary, sentences, device, seed=11, lengths=lengths)
    results = {}
    for mode in ("off", "auto"):
        set_graphs(model, mode)
        hyps = []
        with torch.inference_mode():
            for i in range(0, sentences, 16):
                hyps += gen.forward(collate(rows[i : i + 16], dictionary, device))
        results[mode] = hyps
    same = sum(a[0]["tokens"].tolist() == b[0]["tokens"].tolist() for a, b in zip(results["off"], results["auto"]))
    diff = max(abs(float(a[0]["score"]) - float(b[0]["score"])) for a, b in zip(results["off"], results["auto"]))
    return {"identical_fraction": same / sentences, "max_score_difference": diff}


def step_latency(model, dictionary, device: str, lengths, ts: Sequence[int], batch: int = 128, beam: int = 4,
                 repeats: int = 3) -> Dict[int, float]:
    """Milliseconds per decoding step (decoder + log-softmax + beam reorder) at prefix length t."""
    max_t = min(max(ts), model.max_decoder_positions())
    rows = random_sources(dictionary, batch, device, seed=3, lengths=lengths)
    sample = collate(rows, dictionary, device)["net_input"]
    tokens = torch.randint(dictionary.nspecial, len(dictionary), (batch * beam, max_t), device=device)
    tokens[:, 0] = dictionary.eos()
    offsets = (torch.arange(batch, device=device) * beam).repeat_interleave(beam)
    per_step: List[List[float]] = [[] for _ in range(max_t)]
    with torch.inference_mode():
        for rep in range(repeats + 1):
            enc = model.encoder(sample["src_tokens"], src_lengths=sample["src_lengths"])
            expand = torch.arange(batch, device=device).repeat_interleave(beam)
            enc = model.encoder.reorder_encoder_out(enc, expand)
            state: Dict = {}
            for t in range(max_t):
                order = offsets + torch.randint(0, beam, (batch * beam,), device=device)

                def one_step() -> None:
                    out, _ = model.decoder(tokens[:, : t + 1], encoder_out=enc, incremental_state=state)
                    torch.log_softmax(out[:, -1].float(), dim=-1)
                    model.decoder.reorder_incremental_state_scripting(state, order)

                seconds = _timed(one_step, device)
                if rep > 0:
                    per_step[t].append(seconds)
    result = {}
    for t in ts:
        t_eff = min(t, max_t)
        window = [s for i in range(max(0, t_eff - 3), t_eff) for s in per_step[i]]
        result[t] = 1000 * statistics.median(window)
    return result


def sentences_per_second(model, dictionary, device: str, lengths, beam: int, batch: int, out_len: int,
                         repeats: int = 2) -> float:
    gen = generator(model, dictionary, beam, out_len)
    n_batches = 8 if batch == 1 else max(2, 256 // batch)
    rows = random_sources(dictionary, (n_batches + 1) * batch, device, seed=5, lengths=lengths)
    samples = [collate(rows[i * batch : (i + 1) * batch], dictionary, device) for i in range(n_batches + 1)]

    def run(batch_list) -> None:
        with torch.inference_mode():
            for s in batch_list:
                gen.forward(s)

    run(samples[:2])  # warm-up (and graph capture on the second use of each shape)
    rates = [n_batches * batch / _timed(lambda: run(samples[1:]), device) for _ in range(repeats)]
    return statistics.median(rates)


def profile_generation(model, dictionary, device: str, lengths, out_len: int, beam: int = 4, batch: int = 128) -> str:
    """Top operators of one generation: where a step's time goes."""
    from torch.profiler import ProfilerActivity, profile

    gen = generator(model, dictionary, beam, out_len)
    sample = collate(random_sources(dictionary, batch, device, seed=9, lengths=lengths), dictionary, device)
    with torch.inference_mode():
        gen.forward(sample)
        gen.forward(sample)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        with profile(activities=activities) as prof:
            gen.forward(sample)
            _sync(device)
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=25)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--out-len", type=int, default=28, help="forced output length (median WMT target)")
    p.add_argument("--beams", default="1,4,5")
    p.add_argument("--batches", default="1,32,128")
    p.add_argument("--steps", default="16,64,128,256")
    p.add_argument("--resmlp", default="resmlp_6")
    p.add_argument("--transformer", default="transformer_wmt_en_de")
    p.add_argument("--skip", default="", help="comma-separated parts to skip: agreement,latency,throughput,profile")
    p.add_argument("--out", type=Path, default=Path("runs/bench-decoding"))
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, a.skip.split(",")))
    lengths = [31, 24, 38, 19, 45, 28, 33, 12, 27, 52, 22, 30]  # source lengths typical of newstest (SentencePiece)
    dictionary = make_dictionary(a.vocab)
    resmlp = build(a.resmlp, dictionary, a.device, a.fp16)
    transformer = build(a.transformer, dictionary, a.device, a.fp16)
    variants = {"resmlp graphs": (resmlp, "auto"), "resmlp no graphs": (resmlp, "off"), "transformer": (transformer, None)}
    report: Dict = {"device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu", "torch": torch.__version__,
                    "fp16": a.fp16, "resmlp": a.resmlp, "transformer": a.transformer}

    def save() -> None:
        (a.out / "results.json").write_text(json.dumps(report, indent=1))

    if "agreement" not in skip and a.device == "cuda":
        report["agreement"] = agreement(resmlp, dictionary, a.device, lengths)
        print("graphs on vs off:", report["agreement"], flush=True)
        save()
    if "latency" not in skip:
        ts = [int(x) for x in a.steps.split(",")]
        report["step_ms"] = {}
        for name, (model, mode) in variants.items():
            set_graphs(model, mode)
            report["step_ms"][name] = step_latency(model, dictionary, a.device, lengths, ts)
            print("step ms", name, report["step_ms"][name], flush=True)
            save()
    if "throughput" not in skip:
        report["sent_per_s"] = {}
        for beam in [int(x) for x in a.beams.split(",")]:
            for batch in [int(x) for x in a.batches.split(",")]:
                row = {}
                for name, (model, mode) in variants.items():
                    set_graphs(model, mode)
                    row[name] = sentences_per_second(model, dictionary, a.device, lengths, beam, batch, a.out_len)
                report["sent_per_s"][f"beam{beam}_batch{batch}"] = row
                print(f"beam {beam} batch {batch}:", {k: round(v, 1) for k, v in row.items()}, flush=True)
                save()
    if "profile" not in skip:
        for name, (model, mode) in variants.items():
            set_graphs(model, mode)
            table = profile_generation(model, dictionary, a.device, lengths, a.out_len)
            (a.out / f"profile_{name.replace(' ', '_')}.txt").write_text(table)
    set_graphs(resmlp, "auto")
    if "captures" not in report:
        report["graph_captures"] = resmlp.decoder.static_decoding.captures
    save()
    print(format_table(report))
    (a.out / "table.md").write_text(format_table(report))
    return 0


def format_table(report: Dict) -> str:
    lines = [f"device: {report['device']} | torch {report['torch']} | fp16: {report['fp16']}",
             f"{report['resmlp']} vs {report['transformer']}", ""]
    names = ["resmlp graphs", "resmlp no graphs", "transformer"]
    head = f"{'metric':32}" + "".join(f"{n:>18}" for n in names) + f"{'graphs/transformer':>20}"
    lines += [head, "-" * len(head)]
    for t, _ in report.get("step_ms", {}).get("transformer", {}).items():
        vals = [report["step_ms"][n][t] for n in names]
        lines.append(f"{'step ms t=' + str(t):32}" + "".join(f"{v:18.3f}" for v in vals) + f"{vals[2] / vals[0]:19.2f}x")
    for key, row in report.get("sent_per_s", {}).items():
        vals = [row[n] for n in names]
        lines.append(f"{key + ' sent/s':32}" + "".join(f"{v:18.1f}" for v in vals) + f"{vals[0] / vals[2]:19.2f}x")
    if "agreement" in report:
        lines.append(f"graphs on vs off: {report['agreement']}")
    lines.append("ratio > 1 means ResMLP with graphs is faster")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
