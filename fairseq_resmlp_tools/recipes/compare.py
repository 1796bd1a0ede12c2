"""Compare model configurations at equal GPU time: train them concurrently, choose on validation, test once.

    resmlp-compare --data prepared/multi30k-en-de --out runs/compare-en-de --minutes 5 --seeds 1 2 \
        --config "transformer=transformer_iwslt_de_en" \
        --config "resmlp_small=resmlp_small" \
        --config "paper_block=resmlp_small --norm-type affine --positional-embeddings none --token-mixing-gate none" \
        --config "full_matrix=resmlp_small --token-mixing-matrix full" \
        --baseline transformer --final paper_block --lenpens 1.0 1.5

Every configuration x seed is one ``resmlp-train-small`` run (same recipe but the architecture's peak learning rate,
same ``--minutes`` of training), all started at once on the same machine, so each gets the same share of it: equal
time means equal GPU time. A configuration is ``NAME=ARCH [fairseq-train options]``. Each run averages its last
checkpoints and scores the **validation** split (``resmlp-evaluate``, beam 4). The choice is made there: the
configuration with the best mean validation BLEU (the baseline excluded) is a final candidate, with the baseline and
every ``--final``.
Only the final candidates are then scored on the test split, once per seed, and each is compared with the
baseline by sacreBLEU's paired bootstrap resampling (seed i against seed i).

Decoding is tuned on validation too: ``--lenpens 1.0 1.3 1.6`` scores every run's averaged checkpoint with each
length penalty (beam search's ``--lenpen``), and every configuration is tested with the one that gave its best mean
validation BLEU (one value per configuration, the same for its seeds; the first of equals). ``--validation-only``
stops after the validation table (for tuning rounds: the test split is then not scored at all).

Outputs in ``--out``: ``runs/NAME-sSEED/`` (each run, with its log), ``compare.json`` (every number),
``compare.md`` (the tables, with the validation hypotheses' length against the references' per bucket of source
length: where a model's translations fall short) and ``compare.png`` (validation BLEU per configuration, each seed a dot, and the
finals' test BLEU). A re-run resumes: finished runs and scores are kept (the runs are resumable recipes).

With many runs on one GPU, all of them evaluate at about the same time: give ``--train-args --eval-max-tokens
2000`` (or less) so that the decoders fit in memory together. On a large corpus where the time budget covers fewer
epochs than ``--save-interval`` x ``--average-last``, give ``--save-interval 1`` or ``--average-last 0`` (evaluate
the last checkpoint).

Every run averages its last ``--average-last`` *saved* epochs, so the window depends on how many epochs a run
reached in the time: with checkpoints every 4 epochs, a model that reached epoch 15 averaged epochs 4, 8 and 12
while one that reached 21 averaged 12, 16 and 20 (the slower model lost 5 BLEU on Multi30k validation to that
alone, docs/benchmarks.md, session 7). The default interval is therefore 2: the window ends at most one epoch before
the last and spans 4 epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from fairseq_resmlp_tools._cli import ToolError, console_script
from fairseq_resmlp_tools._fs import write_json_atomic, write_text_atomic
from fairseq_resmlp_tools.average import last_checkpoints
from fairseq_resmlp_tools.evaluate import published_text, read_lines  # as resmlp-evaluate reads references
from fairseq_resmlp_tools.fairseq_io import die_with_parent, read_json_log
from fairseq_resmlp_tools.recipes import small, steps


@dataclass(frozen=True)
class Config:
    name: str
    arch: str
    options: List[str]

    @classmethod
    def parse(cls, text: str) -> "Config":
        name, sep, rest = text.partition("=")
        words = shlex.split(rest)
        if not sep or not name or not words:
            raise ToolError(f"--config {text!r}: expected NAME=ARCH [fairseq-train options]")
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ToolError(f"--config {text!r}: the name may hold letters, digits, '-' and '_' only")
        if words[0] not in small.ARCHS:
            raise ToolError(f"--config {text!r}: unknown architecture {words[0]!r} (choose from {small.ARCHS})")
        return cls(name, words[0], words[1:])


def run_dir(out: Path, config: Config, seed: int) -> Path:
    return out / "runs" / f"{config.name}-s{seed}"


def train_command(args: argparse.Namespace, config: Config, seed: int, split: str, lenpen: float = 1.0) -> List[str]:
    """The resmlp-train-small command of one run, evaluating ``split`` of the averaged checkpoint with length
    penalty ``lenpen`` (a re-run with another value only evaluates again: the recipe skips finished steps)."""
    return [
        *steps.tool("recipes.small"),
        "--arch",
        config.arch,
        "--data",
        str(args.data),
        "--time-budget-minutes",
        f"{args.minutes:g}",
        "--save-dir",
        str(run_dir(args.out, config, seed)),
        "--seed",
        str(seed),
        "--split",
        split,
        "--save-interval",
        str(args.save_interval),
        "--average-last",
        str(args.average_last),
        "--no-valid-bleu",
        "--lenpen",
        f"{lenpen:g}",
        *args.train_args,
        "--",
        *config.options,
    ]


def run_all(commands: Dict[str, List[str]], logs: Dict[str, Path]) -> None:
    """Run every command at once, each in its own process group; stop all if one fails or on interrupt."""
    procs: Dict[str, subprocess.Popen] = {}
    try:
        for name, cmd in commands.items():
            logs[name].parent.mkdir(parents=True, exist_ok=True)
            with open(logs[name], "ab") as log:
                # Own process group (ended as a whole on failure); killed with us even by kill -9.
                procs[name] = subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent
                )
        failed = [name for name, proc in procs.items() if proc.wait() != 0]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()
    if failed:
        raise ToolError("failed: " + ", ".join(f"{name} (log: {logs[name]})" for name in failed))


def lenpen_score_file(run: Path, split: str, lenpen: float) -> Path:
    """Where the score of one length penalty is kept (the recipe's own result is overwritten by the next one)."""
    return run / "eval" / f"{split}_avg.lenpen{lenpen:g}.json"


def lenpen_hypotheses_file(run: Path, split: str, lenpen: float) -> Path:
    """Where the hypotheses of one length penalty are kept, beside its score."""
    return lenpen_score_file(run, split, lenpen).with_suffix(".hyp")


def keep_lenpen_score(run: Path, split: str, lenpen: float) -> None:
    """Copy the recipe's result and hypotheses for ``lenpen`` aside, after checking that they were decoded with that
    value; the kept result names the kept hypotheses."""
    result = run / "eval" / f"{split}_avg.json"
    try:
        record = json.loads(result.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ToolError(f"{result}: no readable evaluation result ({e})") from None
    used = record.get("generation", {}).get("lenpen")
    if used is None or abs(float(used) - lenpen) > 1e-9:
        raise ToolError(f"{result}: decoded with --lenpen {used}, expected {lenpen:g}")
    hypotheses = Path(record.get("files", {}).get("hypotheses", ""))
    try:
        text = hypotheses.read_text(encoding="utf-8")
    except (OSError, ValueError) as e:
        raise ToolError(f"{result}: its hypotheses {hypotheses} cannot be read ({e})") from None
    kept = lenpen_hypotheses_file(run, split, lenpen)
    write_text_atomic(kept, text)
    record["files"]["hypotheses"] = str(kept)
    write_json_atomic(lenpen_score_file(run, split, lenpen), record)


def read_text_lines(path: Path, what: str) -> List[str]:
    """``read_lines``, with an unreadable file refused by name."""
    try:
        return read_lines(path)
    except (OSError, UnicodeDecodeError) as e:
        raise ToolError(f"{path}: {what} cannot be read ({e})") from None


# Source-length buckets: the sources split at these quantiles of their length in words, so the last bucket holds the
# longest 10% on their own (session 10: ResMLP's shortfall was in the longest Multi30k sentences).
LENGTH_QUANTILES = (0.25, 0.5, 0.75, 0.9)


def source_buckets(sources: Sequence[str]) -> List[List[int]]:
    """Ranges [first, last] of source lengths in words, split at LENGTH_QUANTILES (equal cuts merged)."""
    counts = sorted(len(line.split()) for line in sources)
    if not counts:
        return []
    starts = sorted({counts[0], *(counts[int(q * len(counts))] for q in LENGTH_QUANTILES)})
    return [[lo, hi - 1] for lo, hi in zip(starts, starts[1:])] + [[starts[-1], counts[-1]]]


def bleu_tokens(lines: Sequence[str]) -> List[List[str]]:
    """Each line split into the tokens sacreBLEU's BLEU counts (13a)."""
    from sacrebleu.metrics import BLEU

    tokenize = BLEU().tokenizer
    return [tokenize(line.strip()).split() for line in lines]


def token_counts(lines: Sequence[str]) -> List[int]:
    """Each line's length in ``bleu_tokens``."""
    return [len(tokens) for tokens in bleu_tokens(lines)]


def length_by_source(
    sources: Sequence[str], ref_tokens: Sequence[int], hyp_tokens: Sequence[int], buckets: Sequence[Sequence[int]]
) -> List[Optional[float]]:
    """Hypothesis / reference length per source-length bucket, from each sentence's ``token_counts``; None for a
    bucket whose references are empty."""
    ratios: List[Optional[float]] = []
    for first, last in buckets:
        rows = [i for i, line in enumerate(sources) if first <= len(line.split()) <= last]
        ref = sum(ref_tokens[i] for i in rows)
        ratios.append(sum(hyp_tokens[i] for i in rows) / ref if ref else None)
    return ratios


# A runaway hypothesis: more than twice its reference's length and at least 10 tokens longer (13a tokens). Session 12
# found the Transformer's beam search repeating a word up to the length limit in 0-4 of Multi30k's 1014 En-De
# validation sentences per run, adding up to 1.2 points to its corpus length ratio, and ResMLP's in 0-1: the corpus
# ratio alone overstates how much shorter ResMLP's translations are.
RUNAWAY_FACTOR = 2.0
RUNAWAY_MIN_EXTRA = 10


def is_runaway(ref_tokens: int, hyp_tokens: int) -> bool:
    return hyp_tokens > RUNAWAY_FACTOR * ref_tokens and hyp_tokens - ref_tokens >= RUNAWAY_MIN_EXTRA


def runaway_hypotheses(ref_tokens: Sequence[int], hyp_tokens: Sequence[int]) -> Dict[str, Any]:
    """From each sentence's ``token_counts``: ``count``, the runaway hypotheses; ``ratio_without``, hypothesis /
    reference length over the other sentences (None if their references are empty)."""
    runaway = [is_runaway(r, h) for r, h in zip(ref_tokens, hyp_tokens)]
    ref = sum(r for r, out in zip(ref_tokens, runaway) if not out)
    hyp = sum(h for h, out in zip(hyp_tokens, runaway) if not out)
    return {"count": sum(runaway), "ratio_without": hyp / ref if ref else None}


def validation_lengths(
    args: argparse.Namespace, configs: Dict[str, "Config"], validation: Dict[str, Any], src: str
) -> List[Dict[str, Any]]:
    """Adds ``length_by_source`` (mean over the seeds, at the chosen length penalty) to every configuration of
    ``validation``; returns the buckets. A run whose hypotheses were not kept (scored by an older resmlp-compare) gets
    None, shown as '-'."""
    source_file = published_text(args.data, args.valid_split, src)  # where resmlp-evaluate finds references
    sources = read_text_lines(source_file, "the validation sources")
    buckets = source_buckets(sources)
    for name, config in configs.items():
        lenpen = validation[name]["lenpen"]
        per_seed, runaways = [], []
        for seed in args.seeds:
            run = run_dir(args.out, config, seed)
            kept = lenpen_hypotheses_file(run, args.valid_split, lenpen)
            if not kept.is_file():
                per_seed = []
                break
            reference_file = load_score(lenpen_score_file(run, args.valid_split, lenpen))["references"]
            references = read_text_lines(reference_file, "the validation references")
            hypotheses = read_text_lines(kept, "kept hypotheses")
            if not len(sources) == len(references) == len(hypotheses):
                raise ToolError(
                    f"{source_file} has {len(sources)} lines, {reference_file} {len(references)} and {kept} "
                    f"{len(hypotheses)}: they must be the same sentences"
                )
            ref_tokens, hyp_tokens = token_counts(references), token_counts(hypotheses)  # once for both
            per_seed.append(length_by_source(sources, ref_tokens, hyp_tokens, buckets))
            runaways.append(runaway_hypotheses(ref_tokens, hyp_tokens))
        validation[name]["length_by_source"] = (
            [None if None in col else statistics.fmean(col) for col in zip(*per_seed)] if per_seed else None
        )
        without = [r["ratio_without"] for r in runaways if r["ratio_without"] is not None]
        validation[name]["runaways"] = [r["count"] for r in runaways] if runaways else None
        validation[name]["length_ratio_without_runaways"] = (
            statistics.fmean(without) if runaways and len(without) == len(runaways) else None
        )
    return [{"words": b, "sentences": sum(b[0] <= len(s.split()) <= b[1] for s in sources)} for b in buckets]


def choose_lenpen(per_lenpen: Dict[float, List[float]]) -> float:
    """The length penalty with the best mean validation BLEU over the seeds; the first of equals (dict order)."""
    return max(per_lenpen, key=lambda lp: statistics.fmean(per_lenpen[lp]))


def bleu_without_brevity_penalty(bleu: float, brevity_penalty: Optional[float]) -> Optional[float]:
    """BLEU / BP: the n-gram precisions' part of BLEU alone. Two systems that differ in BLEU but not here differ in
    length, not in word choice (sessions 8 and 12 computed it by hand to find that ResMLP's En-De gap was length).
    None where the penalty is unknown (older results) or 0 (no hypothesis words, BLEU 0 whatever the precisions)."""
    if brevity_penalty is None or float(brevity_penalty) <= 0.0:
        return None
    return bleu / float(brevity_penalty)


def load_score(path: Path) -> Dict[str, Any]:
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        sacrebleu = result["metrics"]["sacrebleu"]
        bleu = float(sacrebleu["score"])
        ratio = sacrebleu.get("length_ratio")  # absent in results of older resmlp-evaluate
        return {
            "bleu": bleu,
            "length_ratio": None if ratio is None else float(ratio),
            "bleu_without_bp": bleu_without_brevity_penalty(bleu, sacrebleu.get("brevity_penalty")),  # likewise
            "hypotheses": Path(result["files"]["hypotheses"]),
            "references": Path(result["references"]),
        }
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ToolError(f"{path}: no readable evaluation result ({e})") from None


def training_summary(log: Path) -> Dict[str, Any]:
    """Updates made and the last validation loss, from the run's fairseq-train log."""
    updates, valid_loss = 0, None
    for tag, record in read_json_log(log):
        if tag == "train_inner" and "num_updates" in record:
            updates = int(float(record["num_updates"]))
        elif tag == "valid" and "valid_loss" in record:
            valid_loss = float(record["valid_loss"])
            updates = max(updates, int(float(record.get("valid_num_updates", 0))))
    return {"updates": updates, "valid_loss": valid_loss}


def averaged_epochs(run: Path, average_last: int) -> List[int]:
    """The epochs the run's average was made of, chosen as the recipe's averaging step chose them (the last
    ``--average-last`` epoch checkpoints; the recipe keeps no others); [] for ``--average-last 0`` or none found."""
    if average_last < 1:
        return []
    try:
        paths = last_checkpoints(run, average_last, by="epoch", allow_fewer=True)
    except ToolError:
        return []
    return [int(p.stem[len("checkpoint") :]) for p in paths]


def epoch_window(epochs: Sequence[int]) -> str:
    return f"{epochs[0]}-{epochs[-1]}" if len(epochs) > 1 else (str(epochs[0]) if epochs else "-")


def mean_spread(values: Sequence[float]) -> Dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def paired_bootstrap(references: List[str], baseline: List[str], system: List[str], samples: int) -> Dict[str, Any]:
    """sacreBLEU's paired bootstrap resampling (``--paired-bs``): system against baseline, p-value and 95% CI."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    test = PairedTest(
        [("baseline", baseline), ("system", system)],
        metrics={"BLEU": BLEU(references=[references])},
        references=None,
        test_type="bs",
        n_samples=samples,
    )
    _, scores = test()
    result = scores["BLEU"][1]
    return {"p_value": result.p_value, "score": result.score, "mean": result.mean, "ci": result.ci}


def format_tables(record: Dict[str, Any]) -> str:
    lines = [
        f"# {record['title']}",
        "",
        "## Validation (the choice is made here)",
        "",
        "| configuration | seeds | valid BLEU mean | min-max | per seed | lenpen | length ratio | BLEU / BP | valid loss "
        "| updates | averaged epochs |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, c in record["validation"].items():
        b = c["bleu"]
        per_seed = ", ".join(f"{x:.2f}" for x in c["per_seed"])
        loss, ratio, without_bp = c["valid_loss_mean"], c.get("length_ratio"), c.get("bleu_without_bp")
        lines.append(
            f"| {name}{' (baseline)' if name == record['baseline'] else ''} | {len(c['per_seed'])} | {b['mean']:.2f} "
            f"| {b['min']:.2f}-{b['max']:.2f} | {per_seed} | {c['lenpen']:g} | {'-' if ratio is None else f'{ratio:.3f}'} "
            f"| {'-' if without_bp is None else f'{without_bp:.2f}'} "
            f"| {'-' if loss is None else f'{loss:.3f}'} "
            f"| {c['updates_mean']:.0f} | {', '.join(epoch_window(e) for e in c.get('averaged_epochs', []))} |"
        )
    lines += [
        "",
        "BLEU / BP: BLEU without its brevity penalty, the n-gram precisions' part alone (mean over the seeds); a gap in "
        "BLEU that is not a gap here is one of length, not of word choice.",
    ]
    windows = {tuple(e) for c in record["validation"].values() for e in c.get("averaged_epochs", [])}
    if len(windows) > 1:
        lines += [
            "",
            "The runs averaged different epochs: a configuration that reached fewer epochs in the same time averages "
            "earlier checkpoints (a smaller --save-interval narrows the difference).",
        ]
    buckets = record.get("source_buckets")
    if buckets:
        lines += [
            "",
            "Validation hypothesis / reference length (sacreBLEU's 13a tokens) by source length in words (sentences), "
            "mean over the seeds, at each configuration's length penalty; the last bucket is the longest 10%. "
            f"Runaways: hypotheses more than {RUNAWAY_FACTOR:g}x their reference's length and at least "
            f"{RUNAWAY_MIN_EXTRA} tokens longer (per seed; a beam search repeating itself), and the length ratio of "
            "all the other sentences:",
            "",
            "| configuration | "
            + " | ".join(f"{b['words'][0]}-{b['words'][1]} ({b['sentences']})" for b in buckets)
            + " | runaways | ratio without them |",
            "|---|" + "---:|" * len(buckets) + "---:|---:|",
        ]
        missing = False
        for name, c in record["validation"].items():
            ratios = c.get("length_by_source") or [None] * len(buckets)
            runaways, without = c.get("runaways"), c.get("length_ratio_without_runaways")
            missing = missing or None in ratios or runaways is None or without is None
            lines.append(
                f"| {name} | "
                + " | ".join("-" if r is None else f"{r:.3f}" for r in ratios)
                + f" | {'-' if runaways is None else ', '.join(str(n) for n in runaways)}"
                + f" | {'-' if without is None else f'{without:.3f}'} |"
            )
        if missing:
            lines += [
                "",
                "'-': no length (runs scored by a resmlp-compare older than this table kept no hypotheses per length "
                "penalty, or the bucket's references are empty).",
            ]
    if len(record["lenpens"]) > 1:
        lines += [
            "",
            "Mean validation BLEU per length penalty (each configuration is tested with its best):",
            "",
            "| configuration | " + " | ".join(f"lenpen {lp:g}" for lp in record["lenpens"]) + " |",
            "|---|" + "---:|" * len(record["lenpens"]),
        ]
        for name, c in record["validation"].items():
            row = " | ".join(f"{c['per_lenpen'][f'{lp:g}']['mean']:.2f}" for lp in record["lenpens"])
            lines.append(f"| {name} | {row} |")
    if record["test_split"] is None:
        lines += ["", f"{best_line(record)} The test split was not scored (--validation-only)."]
        return "\n".join(lines) + "\n"
    if not record["test"]:
        lines += [
            "",
            f"{best_line(record)} Final candidates: {', '.join(record['finals'])}. The test "
            "phase has not finished (it failed or was interrupted): the same command resumes it.",
        ]
        return "\n".join(lines) + "\n"
    lines += [
        "",
        f"{best_line(record)} Final candidates: {', '.join(record['finals'])}.",
        "",
        f"## Test ({record['test_split']}, scored once per final candidate and seed)",
        "",
        "| configuration | test BLEU mean | per seed | paired bootstrap vs baseline (per seed: delta, p) |",
        "|---|---:|---|---|",
    ]
    for name, t in record["test"].items():
        per_seed = ", ".join(f"{x:.2f}" for x in t["per_seed"])
        pbs = "; ".join(f"{p['delta']:+.2f} (p={p['p_value']:.3f})" for p in t.get("paired_bootstrap", []))
        lines.append(f"| {name} | {t['bleu']['mean']:.2f} | {per_seed} | {pbs or '-'} |")
    return "\n".join(lines) + "\n"


def best_line(record: Dict[str, Any]) -> str:
    """The best configuration other than the baseline, and where it stands against the baseline: "best" alone
    read as a win when every configuration trailed the baseline (session 13)."""
    best, baseline = record["best"], record["baseline"]
    ours, theirs = (record["validation"][n]["bleu"]["mean"] for n in (best, baseline))
    return (
        f"Best by validation, the baseline excluded: **{best}**, {ours:.2f} against the baseline {baseline}'s "
        f"{theirs:.2f} ({ours - theirs:+.2f})."
    )


def plot(record: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(record["validation"])
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names)), 4))
    for i, name in enumerate(names):
        c = record["validation"][name]
        ax.bar(i, c["bleu"]["mean"], color="tab:gray" if name == record["baseline"] else "tab:blue", alpha=0.6)
        ax.plot([i] * len(c["per_seed"]), c["per_seed"], "k.", label="validation, one seed" if i == 0 else None)
        if name in record["test"]:
            t = record["test"][name]["per_seed"]
            ax.plot([i + 0.25] * len(t), t, "r^", label="test, one seed" if name == record["baseline"] else None)
    low = min(min(c["per_seed"]) for c in record["validation"].values())
    ax.set_ylim(bottom=max(0.0, low - 3))
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_ylabel("sacreBLEU")
    ax.set_title(record["title"], fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(args: argparse.Namespace) -> Dict[str, Any]:
    configs = {c.name: c for c in map(Config.parse, args.config)}
    if len(configs) != len(args.config):
        raise ToolError("--config names must be unique")
    if args.baseline not in configs:
        raise ToolError(f"--baseline {args.baseline!r} is not one of the --config names {sorted(configs)}")
    for name in args.final:
        if name not in configs:
            raise ToolError(f"--final {name!r} is not one of the --config names {sorted(configs)}")
    if len(configs) < 2:
        raise ToolError("give at least two --config")
    src, tgt = steps.recipe_languages(args.data, None, None)

    def runs(names: Sequence[str]) -> Dict[str, List[str]]:
        return {f"{n}-s{s}": [n, str(s)] for n in names for s in args.seeds}

    # 1. Train every configuration x seed at once; each run scores its averaged checkpoint on validation, once per
    # length penalty (the first pass trains; the later ones only decode again).
    all_runs = runs(configs)
    logs = {key: args.out / "runs" / f"{key}.valid.log" for key in all_runs}
    for lenpen in args.lenpens:
        valid_cmds = {
            key: train_command(args, configs[n], int(s), args.valid_split, lenpen) for key, (n, s) in all_runs.items()
        }
        if args.dry_run:
            for cmd in valid_cmds.values():
                print(shlex.join(cmd))
            continue
        dirs = {key: run_dir(args.out, configs[n], int(s)) for key, (n, s) in all_runs.items()}
        if all(lenpen_score_file(d, args.valid_split, lenpen).is_file() for d in dirs.values()):
            continue  # a resumed comparison: this length penalty is scored already
        run_all(valid_cmds, logs)
        for d in dirs.values():
            keep_lenpen_score(d, args.valid_split, lenpen)
    if args.dry_run:
        return {}

    validation: Dict[str, Any] = {}
    for name, config in configs.items():
        per_lenpen: Dict[float, List[float]] = {}
        ratios: Dict[float, List[Optional[float]]] = {}
        without_bp: Dict[float, List[Optional[float]]] = {}
        summaries = []
        for seed in args.seeds:
            d = run_dir(args.out, config, seed)
            for lenpen in args.lenpens:
                scored = load_score(lenpen_score_file(d, args.valid_split, lenpen))
                per_lenpen.setdefault(lenpen, []).append(scored["bleu"])
                ratios.setdefault(lenpen, []).append(scored["length_ratio"])
                without_bp.setdefault(lenpen, []).append(scored["bleu_without_bp"])
            summaries.append({**training_summary(d / "train.log"), "epochs": averaged_epochs(d, args.average_last)})
        chosen = choose_lenpen(per_lenpen)
        losses = [s["valid_loss"] for s in summaries if s["valid_loss"] is not None]
        validation[name] = {
            "arch": config.arch,
            "options": config.options,
            "lenpen": chosen,
            "per_lenpen": {f"{lp:g}": mean_spread(v) for lp, v in per_lenpen.items()},
            "per_seed": per_lenpen[chosen],
            "bleu": mean_spread(per_lenpen[chosen]),
            # hypothesis / reference length (sacreBLEU's ratio), mean over the seeds: below 1, BLEU pays a brevity
            # penalty (session 8: ResMLP's n-gram precisions matched the Transformer's, its length did not).
            "length_ratio": None if None in ratios[chosen] else statistics.fmean(ratios[chosen]),
            "bleu_without_bp": None if None in without_bp[chosen] else statistics.fmean(without_bp[chosen]),
            "valid_loss_mean": statistics.fmean(losses) if losses else None,
            "updates_mean": statistics.fmean(s["updates"] for s in summaries),
            "averaged_epochs": [s["epochs"] for s in summaries],
        }
    buckets = validation_lengths(args, configs, validation, src)
    best = max((n for n in configs if n != args.baseline), key=lambda n: validation[n]["bleu"]["mean"])
    finals = [args.baseline, best] + [n for n in args.final if n not in (args.baseline, best)]
    record = {
        "title": f"{args.data.name} {src}->{tgt}: {args.minutes:g} min of concurrent training per run, "
        f"seeds {', '.join(map(str, args.seeds))}",
        "baseline": args.baseline,
        "best": best,
        "finals": [] if args.validation_only else finals,
        "lenpens": args.lenpens,
        "valid_split": args.valid_split,
        "test_split": None if args.validation_only else args.test_split,
        "validation": validation,
        "source_buckets": buckets,
        "test": {},
        "command": sys.argv,
    }
    # Written before the test phase too: a failed or interrupted test phase leaves the validation table.
    write_record(args.out, record)
    if args.validation_only:
        return record

    # 2. The final candidates on the test split, once per seed, each with its configuration's length penalty
    # (re-running a recipe only adds its evaluation).
    test_cmds = {
        key: train_command(args, configs[n], int(s), args.test_split, validation[n]["lenpen"])
        for key, (n, s) in runs(finals).items()
    }
    run_all(test_cmds, {key: args.out / "runs" / f"{key}.test.log" for key in test_cmds})
    test: Dict[str, Any] = {}
    hyps: Dict[str, List[List[str]]] = {}
    reference_files = set()
    for name in finals:
        results = [
            load_score(run_dir(args.out, configs[name], s) / "eval" / f"{args.test_split}_avg.json") for s in args.seeds
        ]
        hyps[name] = [read_text_lines(r["hypotheses"], "test hypotheses") for r in results]
        reference_files.update(r["references"] for r in results)
        test[name] = {"per_seed": [r["bleu"] for r in results], "bleu": mean_spread([r["bleu"] for r in results])}
    if len(reference_files) != 1:
        raise ToolError(f"the final runs were scored against different references: {sorted(reference_files)}")
    references = read_text_lines(reference_files.pop(), "the test references")
    for name in finals:
        if name == args.baseline:
            continue
        test[name]["paired_bootstrap"] = []
        for base, system, b, s in zip(
            hyps[args.baseline], hyps[name], test[args.baseline]["per_seed"], test[name]["per_seed"]
        ):
            if len(base) != len(references) or len(system) != len(references):
                raise ToolError(f"{args.test_split}: hypothesis and reference counts differ")
            pbs = paired_bootstrap(references, base, system, args.bootstrap_samples)
            test[name]["paired_bootstrap"].append({"delta": s - b, **pbs})

    record["test"] = test
    return write_record(args.out, record)


def write_record(out: Path, record: Dict[str, Any]) -> Dict[str, Any]:
    write_json_atomic(out / "compare.json", record)
    write_text_atomic(out / "compare.md", format_tables(record))
    plot(record, out / "compare.png")
    return record


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="resmlp-compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, required=True, help="data_prep output directory")
    p.add_argument("--out", type=Path, required=True, help="output directory (re-runs resume)")
    p.add_argument("--config", action="append", required=True, help="NAME=ARCH [fairseq-train options]; repeat")
    p.add_argument("--baseline", required=True, help="the configuration the others are compared with")
    p.add_argument("--final", nargs="*", default=[], help="configurations tested in any case, besides the best")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="seeds of every configuration (default 1 2)")
    p.add_argument("--minutes", type=float, default=10.0, help="training time of every run (default %(default)s)")
    p.add_argument(
        "--save-interval",
        type=int,
        default=2,
        help="epochs between checkpoints; the averaged window spans (average-last - 1) x this (default %(default)s)",
    )
    p.add_argument("--average-last", type=int, default=3, help="checkpoints averaged (default %(default)s)")
    p.add_argument("--valid-split", default="valid", help="the split choices are made on (default %(default)s)")
    p.add_argument("--test-split", default="test", help="the split finals are scored on (default %(default)s)")
    p.add_argument("--bootstrap-samples", type=int, default=1000, help="paired bootstrap samples (default 1000)")
    p.add_argument(
        "--lenpens",
        type=float,
        nargs="+",
        default=[1.0],
        help="length penalties tried on validation; each configuration is tested with its best (default 1.0)",
    )
    p.add_argument(
        "--validation-only", action="store_true", help="choose on validation and stop: the test split is not scored"
    )
    p.add_argument("--dry-run", action="store_true", help="print the training commands and exit")
    p.add_argument(
        "--train-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="last: more resmlp-train-small options for every run (e.g. --max-tokens 4096 --cpu)",
    )
    return p


@console_script
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.minutes <= 0:
        raise ToolError("--minutes must be positive")
    if len(set(args.seeds)) != len(args.seeds):
        raise ToolError("--seeds must be distinct")
    if len(set(args.lenpens)) != len(args.lenpens):
        raise ToolError("--lenpens must be distinct")
    record = compare(args)
    if record:
        print(format_tables(record), end="")
        print(f"result: {args.out / 'compare.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
