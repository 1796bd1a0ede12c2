"""CPU decoding speed of ResMLP (fp32, int8) against fairseq's Transformer and CTranslate2's int8 Transformer.

    PYTHONPATH=/tmp/ct2-site python -m fairseq_resmlp_tools.bench.ctranslate2_cpu --threads 2 --out runs/ct2-cpu
    python -m fairseq_resmlp_tools.bench.ctranslate2_cpu --preset tiny --no-ctranslate2 --out /tmp/ct2  # smoke test

CTranslate2 is what people deploy fairseq Transformers with today; this is the anchor of issue 9's CPU target.
The tool builds a joint dictionary and a fairseq data-bin dictionary folder, saves randomly initialised
checkpoints of ``resmlp_6`` and ``transformer_wmt_en_de`` (``--share-all-embeddings``) in fairseq's checkpoint
format, converts the Transformer with CTranslate2's fairseq converter to int8, and times beam search on
exactly the same source sentences with the same number of decoder steps for every system: fairseq's
``SequenceGenerator`` with ``min_len = max_len_b = L`` writes L tokens then the forced EOS (L + 1 steps);
CTranslate2 with ``min_decoding_length = max_decoding_length = N`` writes N tokens and stops there without an end
token (checked with CTranslate2 4.8), so it gets N = L + 1: also L + 1 steps. Every produced hypothesis is counted and checked. Timings are medians over repetitions after a
warm-up; systems are measured alternately, one repetition of each in turn, so that a change in the machine's load
hits them alike. Prints a table with the ratios to CTranslate2 int8 and writes ``results.json`` and ``table.txt``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence

import numpy as np

from fairseq_resmlp_tools._cli import ToolError, console_script
from fairseq_resmlp_tools.bench.decode import load_lengths, make_dictionary, random_batch

if TYPE_CHECKING:  # torch and fairseq are imported when the benchmark runs, not for --help
    import torch
    from fairseq.data import Dictionary

INSTALL_HINT = (
    "ctranslate2 is not importable: install it with `pip install ctranslate2` (or "
    "`pip install --target DIR ctranslate2` and PYTHONPATH=DIR), or leave it out with --no-ctranslate2"
)
SRC, TGT = "src", "tgt"
CT2_NAME = "CTranslate2 int8"


@dataclass
class Config:
    """What one run measures (filled from the command line)."""

    resmlp_arch: str
    transformer_arch: str
    vocab: int
    threads: int
    beam: int
    batch_sizes: List[int]
    sentences: int
    out_len: int
    repeats: int
    ctranslate2: bool
    out: Path


# ------------------------------------------------------------------------------------------- checkpoints


def write_data_dir(dictionary: Dictionary, folder: Path) -> Path:
    """A fairseq data-bin dictionary folder: the joint dictionary as dict.src.txt and dict.tgt.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    for lang in (SRC, TGT):
        dictionary.save(str(folder / f"dict.{lang}.txt"))
    return folder


def save_random_checkpoint(arch: str, data_dir: Path, path: Path) -> Path:
    """A randomly initialised ``arch`` with --share-all-embeddings, saved as fairseq-train saves a checkpoint."""
    import torch
    from fairseq import checkpoint_utils, options, tasks

    from fairseq_resmlp_tools.fairseq_io import user_dir

    # fairseq's own parser fills every task and model option, so that any fairseq reader (fairseq-generate,
    # CTranslate2's converter, which rebuilds the model from checkpoint["args"]) finds what it expects.
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser,
        [
            str(data_dir),
            "--task",
            "translation",
            "-s",
            SRC,
            "-t",
            TGT,
            "--arch",
            arch,
            "--share-all-embeddings",
            "--user-dir",
            str(user_dir()),
            "--cpu",
            "--optimizer",
            "adam",
            "--lr",
            "1e-3",
            "--max-tokens",
            "4096",
        ],
    )
    task = tasks.setup_task(args)
    torch.manual_seed(0)
    model = task.build_model(args)
    state = {
        "args": args,
        "model": model.state_dict(),
        "optimizer_history": [
            {
                "criterion_name": "CrossEntropyCriterion",
                "optimizer_name": "FairseqAdam",
                "lr_scheduler_state": {"best": None},
                "num_updates": 0,
            }
        ],
        "extra_state": {"train_iterator": None},
        "last_optimizer_state": None,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint_utils.torch_persistent_save(state, str(path))
    return path


def load_checkpoint(path: Path, data_dir: Path) -> torch.nn.Module:
    """The model of a fairseq checkpoint, loaded as fairseq-generate loads it, in eval mode on the CPU."""
    from fairseq import checkpoint_utils
    from fairseq.utils import import_user_module

    from fairseq_resmlp_tools.fairseq_io import user_dir

    import_user_module(argparse.Namespace(user_dir=str(user_dir())))
    models, _ = checkpoint_utils.load_model_ensemble([str(path)], arg_overrides={"data": str(data_dir)})
    return models[0].eval()


def import_ctranslate2():
    """The ctranslate2 module, or a ToolError that says how to install it."""
    try:
        import ctranslate2
    except ImportError as e:
        raise ToolError(f"{INSTALL_HINT} ({e})") from None
    return ctranslate2


def convert_to_ctranslate2(checkpoint: Path, data_dir: Path, out: Path) -> Path:
    """The Transformer checkpoint in CTranslate2's format with int8 weights (its fairseq converter)."""
    ctranslate2 = import_ctranslate2()
    from fairseq_resmlp_tools.fairseq_io import user_dir

    # Our own checkpoint, pickled with an argparse.Namespace: trusted, so unsafe (non weights-only) loading is fine.
    converter = ctranslate2.converters.FairseqConverter(
        str(checkpoint),
        str(data_dir),
        source_lang=SRC,
        target_lang=TGT,
        user_dir=str(user_dir()),
        unsafe_deserialization=True,
    )
    return Path(converter.convert(str(out), quantization="int8", force=True))


# ------------------------------------------------------------------------------------------------ systems


class FairseqSystem:
    """A fairseq model decoded by fairseq's SequenceGenerator with every hypothesis forced to ``out_len`` tokens."""

    def __init__(self, name: str, model: torch.nn.Module, dictionary: Dictionary, cfg: Config) -> None:
        from fairseq.sequence_generator import SequenceGenerator

        self.name, self.dictionary = name, dictionary
        self.generator = SequenceGenerator(
            [model], dictionary, beam_size=cfg.beam, max_len_a=0, max_len_b=cfg.out_len, min_len=cfg.out_len
        )

    def decode(self, batch: Dict[str, object]) -> List[int]:
        """Decoder steps of each sentence's best hypothesis: its tokens, the final EOS included."""
        import torch

        with torch.inference_mode():
            hypos = self.generator.forward({"net_input": batch["net_input"]})
        lengths = []
        for h in hypos:
            tokens = h[0]["tokens"]
            if int(tokens[-1]) != self.dictionary.eos():
                raise ToolError(f"{self.name}: a hypothesis does not end in EOS")
            lengths.append(len(tokens))
        return lengths


class CTranslate2System:
    """CTranslate2's int8 Transformer, decoding token strings of the same dictionary for the same length."""

    def __init__(self, model_dir: Path, cfg: Config) -> None:
        ctranslate2 = import_ctranslate2()
        self.name, self.beam = CT2_NAME, cfg.beam
        self.translator = ctranslate2.Translator(
            str(model_dir), device="cpu", compute_type="int8", intra_threads=cfg.threads, inter_threads=1
        )
        # fairseq writes out_len tokens, then the forced EOS: out_len + 1 decoder steps. CTranslate2 with
        # min = max decoding length N writes N tokens and stops without an end token (N steps), so N = out_len + 1
        # is the same work; the end token is returned, so that one written anyway would be counted.
        self.length = cfg.out_len + 1

    def decode(self, batch: Dict[str, object]) -> List[int]:
        """Decoder steps of each sentence's best hypothesis (the end token, when written, included)."""
        results = self.translator.translate_batch(
            batch["tokens"],
            beam_size=self.beam,
            max_batch_size=0,
            min_decoding_length=self.length,
            max_decoding_length=self.length,
            return_end_token=True,
        )
        return [len(r.hypotheses[0]) for r in results]


def make_batches(cfg: Config, dictionary: Dictionary, batch_size: int, n_batches: int, seed: int) -> List[dict]:
    """Random source sentences of WMT-like lengths, as fairseq tensors and as CTranslate2 token strings."""
    lengths = load_lengths(None, tiny=False)
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(n_batches):
        src, src_len = random_batch(lengths[rng.integers(0, len(lengths), batch_size)], dictionary, "cpu", rng)
        # CTranslate2 appends the source EOS itself (add_source_eos from its fairseq converter): strip pad and EOS.
        tokens = [[dictionary[int(i)] for i in row[row.size(0) - int(n) : -1]] for row, n in zip(src, src_len)]
        batches.append({"net_input": {"src_tokens": src, "src_lengths": src_len}, "tokens": tokens})
    return batches


def timed_pass(decode: Callable[[dict], List[int]], batches: List[dict]) -> tuple:
    """Seconds to decode all ``batches`` and the decoder steps of every sentence."""
    start = time.perf_counter()
    steps = [n for batch in batches for n in decode(batch)]
    return time.perf_counter() - start, steps


# --------------------------------------------------------------------------------------------------- run


def build_systems(cfg: Config, work: Path) -> tuple:
    """The dictionary and the systems to time, in the order of the table."""
    from fairseq_resmlp import quantize_int8

    dictionary = make_dictionary(cfg.vocab)
    data_dir = write_data_dir(dictionary, work / "data-bin")
    resmlp_pt = save_random_checkpoint(cfg.resmlp_arch, data_dir, work / "resmlp" / "checkpoint.pt")
    transformer_pt = save_random_checkpoint(cfg.transformer_arch, data_dir, work / "transformer" / "checkpoint.pt")
    systems = [
        FairseqSystem(f"ResMLP fp32 ({cfg.resmlp_arch})", load_checkpoint(resmlp_pt, data_dir), dictionary, cfg),
        FairseqSystem(
            f"ResMLP int8 ({cfg.resmlp_arch})", quantize_int8(load_checkpoint(resmlp_pt, data_dir)), dictionary, cfg
        ),
        FairseqSystem(
            f"Transformer fp32 ({cfg.transformer_arch})", load_checkpoint(transformer_pt, data_dir), dictionary, cfg
        ),
    ]
    if cfg.ctranslate2:
        systems.append(CTranslate2System(convert_to_ctranslate2(transformer_pt, data_dir, work / "ct2-int8"), cfg))
    return dictionary, systems


def run(cfg: Config) -> Dict[str, object]:
    """Time every system at every batch size; the report that results.json holds."""
    import torch

    torch.set_num_threads(cfg.threads)
    dictionary, systems = build_systems(cfg, cfg.out / "work")
    report: Dict[str, object] = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in cfg.__dict__.items()},
        "torch_threads": torch.get_num_threads(),
        "load_average_start": os.getloadavg(),
        "systems": [s.name for s in systems],
        "results": {},
    }
    for bs in cfg.batch_sizes:
        n_batches = max(1, cfg.sentences // bs)
        warmup, batches = (
            make_batches(cfg, dictionary, bs, 1, seed=bs)[0],
            make_batches(cfg, dictionary, bs, n_batches, seed=1000 + bs),
        )
        per_system: Dict[str, Dict[str, object]] = {s.name: {"repetitions": []} for s in systems}
        for s in systems:
            s.decode(warmup)
        for _ in range(cfg.repeats):
            for s in systems:  # alternately: one repetition of each system in turn
                seconds, steps = timed_pass(s.decode, batches)
                expected = cfg.out_len + 1
                if any(n != expected for n in steps):
                    raise ToolError(
                        f"{s.name}: produced {sorted(set(steps))} decoder steps per sentence, "
                        f"expected {expected} for every sentence; the comparison would not be fair"
                    )
                per_system[s.name]["repetitions"].append(
                    {
                        "seconds": seconds,
                        "sentences": len(steps),
                        "sentences_per_s": len(steps) / seconds,
                        "load_average_1min": os.getloadavg()[0],
                    }
                )
        for entry in per_system.values():
            rates = [r["sentences_per_s"] for r in entry["repetitions"]]
            entry["sentences_per_s"] = statistics.median(rates)
            entry["ms_per_sentence"] = 1000.0 / entry["sentences_per_s"]
            entry["decoder_steps_per_sentence"] = cfg.out_len + 1
        report["results"][str(bs)] = per_system
    report["load_average_end"] = os.getloadavg()
    return report


def format_table(report: Dict[str, object]) -> str:
    """The printed table: sentences/s and ms/sentence per system and batch, ratios to CTranslate2 int8."""
    cfg = report["config"]
    sizes = list(report["results"])
    anchor = CT2_NAME if CT2_NAME in report["systems"] else None
    head = (
        "| system | "
        + " | ".join(f"batch {b}: sent/s | ms/sent" + (" | ÷ CT2" if anchor else "") for b in sizes)
        + " |"
    )
    lines = [
        f"CPU, {cfg['threads']} threads, beam {cfg['beam']}, {cfg['out_len']} output tokens + EOS for every "
        f"sentence, vocab {cfg['vocab']}, median of {cfg['repeats']} repetitions; load average "
        f"{', '.join(f'{x:.2f}' for x in report['load_average_start'])} at start, "
        f"{', '.join(f'{x:.2f}' for x in report['load_average_end'])} at end",
        "",
        head,
        "|" + "---|" * (1 + len(sizes) * (3 if anchor else 2)),
    ]
    for name in report["systems"]:
        cells = []
        for b in sizes:
            r = report["results"][b][name]
            cells += [f"{r['sentences_per_s']:.2f}", f"{r['ms_per_sentence']:.1f}"]
            if anchor:
                cells.append(f"{r['sentences_per_s'] / report['results'][b][anchor]['sentences_per_s']:.2f}x")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for b in sizes:
        res = report["results"][b]
        by = {n.split(" (")[0]: res[n]["sentences_per_s"] for n in report["systems"]}
        ratios = [
            f"ResMLP int8 / ResMLP fp32 = {by['ResMLP int8'] / by['ResMLP fp32']:.2f}x",
            f"ResMLP fp32 / Transformer fp32 = {by['ResMLP fp32'] / by['Transformer fp32']:.2f}x",
        ]
        if anchor:
            ratios.insert(0, f"ResMLP int8 / CTranslate2 int8 = {by['ResMLP int8'] / by[CT2_NAME]:.2f}x")
        lines.append(f"batch {b}: " + "; ".join(ratios))
    lines.append("")
    lines.append("repetitions (sentences/s, 1-min load average):")
    for b in sizes:
        for name in report["systems"]:
            reps = report["results"][b][name]["repetitions"]
            lines.append(
                f"  batch {b} {name}: "
                + ", ".join(f"{r['sentences_per_s']:.2f} (load {r['load_average_1min']:.2f})" for r in reps)
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m fairseq_resmlp_tools.bench.ctranslate2_cpu",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset",
        choices=["full", "tiny"],
        default="full",
        help="tiny: resmlp_tiny vs transformer_tiny, vocab 500, a few sentences (a smoke test)",
    )
    p.add_argument("--resmlp-arch", default=None, help="default resmlp_6 (tiny: resmlp_tiny)")
    p.add_argument("--transformer-arch", default=None, help="default transformer_wmt_en_de (tiny: transformer_tiny)")
    p.add_argument("--vocab", type=int, default=None, help="joint dictionary size, specials included (default 32000)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch and CTranslate2 (default 2)")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--batch-sizes", default="1,32", help="comma-separated batch sizes (default 1,32)")
    p.add_argument(
        "--sentences",
        type=int,
        default=None,
        help="sentences per measurement, at least one batch (default 32; tiny: 4)",
    )
    p.add_argument("--out-len", type=int, default=28, help="output tokens of every hypothesis, EOS not counted")
    p.add_argument("--repeats", type=int, default=None, help="repetitions of each system (median; default 3)")
    p.add_argument("--no-ctranslate2", action="store_true", help="leave CTranslate2 out (when it is not installed)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs/ctranslate2-cpu"),
        help="folder for results.json, table.txt and the work/ checkpoints",
    )
    return p


def config_from_args(a: argparse.Namespace) -> Config:
    """Check the options and fill in the preset's defaults."""
    tiny = a.preset == "tiny"
    try:
        batch_sizes = [int(x) for x in a.batch_sizes.split(",") if x]
    except ValueError:
        raise ToolError(f"--batch-sizes {a.batch_sizes!r}: expected comma-separated integers such as 1,32") from None
    for option, value in (
        ("--threads", a.threads),
        ("--beam", a.beam),
        ("--out-len", a.out_len),
        ("--sentences", a.sentences),
        ("--repeats", a.repeats),
        ("--vocab", a.vocab),
    ):
        if value is not None and value < 1:
            raise ToolError(f"{option} {value}: must be at least 1")
    if not batch_sizes or min(batch_sizes) < 1:
        raise ToolError(f"--batch-sizes {a.batch_sizes!r}: expected positive integers")
    if not a.no_ctranslate2:
        import_ctranslate2()  # fail now, with the install hint, rather than after building the models
    cfg = Config(
        resmlp_arch=a.resmlp_arch or ("resmlp_tiny" if tiny else "resmlp_6"),
        transformer_arch=a.transformer_arch or ("transformer_tiny" if tiny else "transformer_wmt_en_de"),
        vocab=a.vocab or (500 if tiny else 32000),
        threads=a.threads,
        beam=a.beam,
        batch_sizes=batch_sizes,
        sentences=a.sentences or (4 if tiny else 32),
        out_len=a.out_len,
        repeats=a.repeats or (1 if tiny else 3),
        ctranslate2=not a.no_ctranslate2,
        out=a.out,
    )
    from fairseq.models import ARCH_MODEL_REGISTRY

    import fairseq_resmlp  # noqa: F401  (registers the resmlp architectures)

    for option, arch in (("--resmlp-arch", cfg.resmlp_arch), ("--transformer-arch", cfg.transformer_arch)):
        if arch not in ARCH_MODEL_REGISTRY:
            raise ToolError(f"{option} {arch}: not a registered fairseq architecture")
    if cfg.vocab < 8:
        raise ToolError(f"--vocab {cfg.vocab}: too small for the 4 special symbols and random sentences")
    return cfg


@console_script
def main(argv: Optional[Sequence[str]] = None) -> int:
    for name in ("fairseq", "hydra"):  # the model-loading chatter would bury the table
        logging.getLogger(name).setLevel(logging.WARNING)
    cfg = config_from_args(build_parser().parse_args(argv))
    cfg.out.mkdir(parents=True, exist_ok=True)
    report = run(cfg)
    table = format_table(report)
    print(table)
    (cfg.out / "results.json").write_text(json.dumps(report, indent=2))
    (cfg.out / "table.txt").write_text(table + "\n")
    print(f"wrote {cfg.out / 'results.json'} and {cfg.out / 'table.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
