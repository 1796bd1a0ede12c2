"""Plot training loss, validation loss and validation BLEU against updates and wall time, for one or more runs.

    resmlp-plot runs/resmlp/train.log runs/transformer/train.log -o curves.png
    resmlp-plot runs/*/train.log --labels ResMLP Transformer --loss nll_loss -o curves.png

Reads fairseq-train's ``--log-format json`` output: either its console output saved to a file (lines like
``2024-01-01 10:00:00 | INFO | train_inner | {"loss": ...}``; the recipes save it as ``SAVE_DIR/train.log``)
or the file written by ``--log-file`` (bare JSON lines). Validation BLEU appears when training ran with
``--eval-bleu``. A log that spans a resumed run may repeat some updates; the later values are kept, since
those led to the final model. fairseq does not log wall time with validation results, so a validation point
is placed at the wall time interpolated from the neighbouring training records.

Prints a summary (updates, hours, last training loss, best validation loss and BLEU) for every run.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from fairseq_resmlp_tools._cli import ToolError, console_script
from fairseq_resmlp_tools._fs import atomic_path
from fairseq_resmlp_tools.fairseq_io import read_json_log


@dataclass
class RunLog:
    """The records of one run, by update: ``train`` (every --log-interval updates) and ``epochs`` (end-of-epoch
    averages) map to (wall seconds, stats); ``valid`` maps to stats."""

    label: str
    train: Dict[int, Tuple[float, Dict[str, float]]] = field(default_factory=dict)
    epochs: Dict[int, Tuple[float, Dict[str, float]]] = field(default_factory=dict)
    valid: Dict[int, Dict[str, float]] = field(default_factory=dict)

    def series(self, what: str, key: str) -> Tuple[List[int], List[float], List[float]]:
        """(updates, wall seconds, values) of ``key`` in the training or validation records, by update.

        Training values come from the frequent records; the epoch averages are used only for a run that has
        none (a log interval longer than an epoch), since mixing the two makes a saw-tooth of the curve."""
        if what == "train":
            records = self.train if any(key in s for _, s in self.train.values()) else self.epochs
            ups = sorted(u for u, (_, s) in records.items() if key in s)
            return ups, [records[u][0] for u in ups], [records[u][1][key] for u in ups]
        ups = sorted(u for u, s in self.valid.items() if key in s)
        return ups, [self.wall_at(u) for u in ups], [self.valid[u][key] for u in ups]

    def wall_at(self, update: int) -> float:
        """Wall time at ``update``, interpolated linearly between the training records around it."""
        timed = {**self.epochs, **self.train}
        points = sorted((u, w) for u, (w, _) in timed.items() if not math.isnan(w))
        if not points:
            return math.nan
        for (u0, w0), (u1, w1) in zip(points, points[1:]):
            if u0 <= update <= u1:
                return w0 if u1 == u0 else w0 + (w1 - w0) * (update - u0) / (u1 - u0)
        return points[0][1] if update < points[0][0] else points[-1][1]


def _number(value) -> Optional[float]:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def parse_log(path: Path, label: Optional[str] = None) -> RunLog:
    """Read one fairseq JSON log; later records for the same update replace earlier ones (resumed runs)."""
    if not path.is_file():
        raise ToolError(f"log file {path} does not exist")
    run = RunLog(label or path.parent.name or path.stem)
    for tag, record in read_json_log(path):
        stats = {k: v for k, v in ((k, _number(v)) for k, v in record.items()) if v is not None}
        if tag == "valid":
            update = stats.get("valid_num_updates")
            if update is not None:
                run.valid[int(update)] = {k[len("valid_") :]: v for k, v in stats.items() if k.startswith("valid_")}
        elif tag == "train":  # end-of-epoch summary: keys are prefixed with train_
            update = stats.get("train_num_updates")
            if update is not None:
                epoch = {k[len("train_") :]: v for k, v in stats.items() if k.startswith("train_")}
                run.epochs[int(update)] = (stats.get("train_wall", math.nan), epoch)
        else:
            update = stats.get("num_updates")
            if update is not None:
                run.train[int(update)] = (stats.get("wall", math.nan), stats)
    if not run.train and not run.epochs and not run.valid:
        raise ToolError(f"{path} has no fairseq JSON records (was training run with --log-format json?)")
    return run


def summary_table(runs: Sequence[RunLog]) -> str:
    rows = [("run", "updates", "hours", "train loss", "best valid loss", "best valid BLEU")]
    for run in runs:
        records = run.train or run.epochs
        ups = sorted(records)
        last = records[ups[-1]] if ups else (math.nan, {})
        valid_losses = [s["loss"] for s in run.valid.values() if "loss" in s]
        bleus = [s["bleu"] for s in run.valid.values() if "bleu" in s]
        rows.append(
            (
                run.label,
                str(max(list(run.train) + list(run.epochs) + list(run.valid))),
                f"{last[0] / 3600:.2f}" if not math.isnan(last[0]) else "-",
                f"{last[1]['loss']:.3f}" if "loss" in last[1] else "-",
                f"{min(valid_losses):.3f}" if valid_losses else "-",
                f"{max(bleus):.2f}" if bleus else "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _time_unit(runs: Sequence[RunLog], unit: str) -> Tuple[float, str]:
    if unit == "auto":
        longest = max((w for r in runs for w, _ in {**r.epochs, **r.train}.values() if not math.isnan(w)), default=0.0)
        unit = "h" if longest > 3 * 3600 else "min" if longest > 180 else "s"
    return {"s": (1.0, "s"), "min": (60.0, "min"), "h": (3600.0, "h")}[unit]


def plot(
    runs: Sequence[RunLog], output: Path, loss_key: str = "loss", time_unit: str = "auto", title: Optional[str] = None
) -> None:
    """Write the figure: rows training loss, validation loss (and BLEU when logged); columns updates, time."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must be chosen before pyplot is imported
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    has_bleu = any("bleu" in s for r in runs for s in r.valid.values())
    rows = [
        ("train", loss_key, f"training {loss_key} (base 2)"),
        ("valid", loss_key, f"validation {loss_key} (base 2)"),
    ]
    if has_bleu:
        rows.append(("valid", "bleu", "validation BLEU (fairseq --eval-bleu)"))
    scale, unit = _time_unit(runs, time_unit)
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 3.2 * len(rows)), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (what, key, ylabel) in enumerate(rows):
        for j, run in enumerate(runs):
            ups, walls, values = run.series(what, key)
            if not ups:
                continue
            style = dict(
                color=colors[j % len(colors)],
                label=run.label,
                marker="o" if what == "valid" else None,
                markersize=3,
                linewidth=1.2,
            )
            axes[i][0].plot(ups, values, **style)
            axes[i][1].plot([w / scale for w in walls], values, **style)
        axes[i][0].set_ylabel(ylabel)
        for ax in axes[i]:
            ax.grid(True, alpha=0.3, which="both")
            if key != "bleu" and ax.lines:
                ax.set_yscale("log")  # early losses are an order of magnitude above the final ones
                plain = FuncFormatter(lambda v, _: f"{v:g}")
                ax.yaxis.set_major_formatter(plain)
                ax.yaxis.set_minor_formatter(plain)
    axes[-1][0].set_xlabel("updates")
    axes[-1][1].set_xlabel(f"wall time ({unit})")
    axes[0][0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format=output.suffix.lstrip(".") or "png", dpi=110)
    plt.close(fig)


@console_script
def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="plot_training.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("logs", type=Path, nargs="+", help="fairseq-train JSON logs, one per run")
    p.add_argument(
        "-o", "--output", type=Path, default=Path("training.png"), help="image to write (default %(default)s)"
    )
    p.add_argument("--labels", nargs="+", help="one legend label per log (default: each log's directory name)")
    p.add_argument(
        "--loss",
        choices=("loss", "nll_loss"),
        default="loss",
        help="loss to plot: label-smoothed 'loss' or 'nll_loss' (default %(default)s)",
    )
    p.add_argument("--time-unit", choices=("auto", "s", "min", "h"), default="auto", help="unit of the wall-time axis")
    p.add_argument("--title", help="figure title")
    args = p.parse_args(argv)
    if args.labels and len(args.labels) != len(args.logs):
        raise ToolError(f"--labels has {len(args.labels)} names for {len(args.logs)} logs")
    labels = args.labels or [None] * len(args.logs)
    runs = [parse_log(path, label) for path, label in zip(args.logs, labels)]
    if len({r.label for r in runs}) < len(runs):  # same directory names: fall back to the paths
        for run, path in zip(runs, args.logs):
            run.label = str(path) if not args.labels else run.label
    plot(runs, args.output, args.loss, args.time_unit, args.title)
    print(summary_table(runs))
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
