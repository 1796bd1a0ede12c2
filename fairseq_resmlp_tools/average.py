"""Average the parameters of several fairseq checkpoints into one (Vaswani et al. 2017, Ott et al. 2018).

Pick the checkpoints by name or let the script find the last N in a directory:

    resmlp-average --inputs runs/x/checkpoint_3_9000.pt runs/x/checkpoint_3_10000.pt \\
        --output runs/x/checkpoint_avg.pt
    resmlp-average --inputs runs/x --num-update-checkpoints 10 --output runs/x/avg10.pt
    resmlp-average --inputs runs/x --num-epoch-checkpoints 5 --output runs/x/avg5.pt

``--num-update-checkpoints`` picks ``checkpoint_E_U.pt`` files (saved with ``--save-interval-updates``) by
update U; ``--num-epoch-checkpoints`` picks ``checkpointE.pt`` files by epoch E. Floating-point parameters
are averaged in float64 and stored in their original dtype; other tensors must be equal in every input.

Checkpoints are read with ``torch.load(weights_only=True)`` (the default of torch >= 2.6), which runs no code
from the file. Besides tensors, fairseq checkpoints may hold numpy arrays (the metrics of ``--eval-bleu``) and,
for models configured the old argparse way such as ``transformer_iwslt_de_en``, an ``argparse.Namespace``:
both are plain data and are allowed. The output keeps the first input's configuration and drops the optimizer
state and the training metrics (they belong to none of the averaged models): it loads in fairseq-generate,
fairseq-interactive and the hub interface, but cannot be used to resume training. It is written to a
temporary name and renamed, so it is never half-written.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from fairseq_resmlp_tools._cli import ToolError, console_script
from fairseq_resmlp_tools._fs import atomic_path, check_writable
from fairseq_resmlp_tools.fairseq_io import load_checkpoint_checked

_BY_UPDATE = re.compile(r"^checkpoint_(\d+)_(\d+)\.pt$")
_BY_EPOCH = re.compile(r"^checkpoint(\d+)\.pt$")


def last_checkpoints(
    directory: Path, n: int, by: str = "update", upper_bound: Optional[int] = None, allow_fewer: bool = False
) -> List[Path]:
    """The last ``n`` checkpoints of ``directory``, oldest first, by update (``checkpoint_E_U.pt``) or epoch
    (``checkpointE.pt``); ``upper_bound`` ignores those after that update or epoch; ``allow_fewer`` takes
    all there are when there are fewer than ``n`` (at least one)."""
    if by not in ("update", "epoch"):
        raise ValueError(f"by must be 'update' or 'epoch', not {by!r}")
    if not directory.is_dir():
        raise ToolError(f"{directory} is not a directory")
    pattern = _BY_UPDATE if by == "update" else _BY_EPOCH
    found = []
    for path in directory.iterdir():
        m = pattern.match(path.name)
        if m:
            key = int(m.group(m.lastindex))  # the update for checkpoint_E_U.pt, the epoch for checkpointE.pt
            if upper_bound is None or key <= upper_bound:
                found.append((key, path))
    found.sort()
    if len(found) < n and not (allow_fewer and found):
        example = "checkpoint_E_U.pt (--save-interval-updates)" if by == "update" else "checkpointE.pt"
        raise ToolError(
            f"{directory} has {len(found)} checkpoint(s) named like {example}"
            f"{'' if upper_bound is None else f' up to {upper_bound}'}, but {n} were asked for"
        )
    return [p for _, p in found[max(0, len(found) - n) :]]


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """A fairseq checkpoint as a dict, loaded on the CPU without unpickling arbitrary objects; a ToolError naming
    the file if it is missing, damaged or not a fairseq checkpoint."""
    return load_checkpoint_checked(path)


def average_state_dicts(
    states: Sequence[Dict[str, torch.Tensor]], names: Sequence[str]
) -> "OrderedDict[str, torch.Tensor]":
    """Element-wise mean of floating-point tensors; other tensors (counters, masks) must agree."""
    first = states[0]
    for state, name in zip(states[1:], names[1:]):
        if set(state) != set(first):
            missing = sorted(set(first) - set(state))[:3]
            extra = sorted(set(state) - set(first))[:3]
            raise ToolError(
                f"{name} has different parameters from {names[0]} (missing {missing}, extra {extra}): "
                "only checkpoints of the same model can be averaged"
            )
    averaged: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, ref in first.items():
        for state, name in zip(states[1:], names[1:]):
            if state[key].shape != ref.shape:
                raise ToolError(
                    f"{key} has shape {tuple(state[key].shape)} in {name} but {tuple(ref.shape)} in {names[0]}"
                )
        if ref.is_floating_point():
            # Summing in float64 keeps the mean exact to the original precision however many inputs there are.
            total = torch.zeros(ref.shape, dtype=torch.float64)
            for state in states:
                total += state[key].to(torch.float64)
            averaged[key] = (total / len(states)).to(ref.dtype)
        else:
            for state, name in zip(states[1:], names[1:]):
                if not torch.equal(state[key], ref):
                    raise ToolError(f"non-floating-point tensor {key} differs between {names[0]} and {name}")
            averaged[key] = ref.clone()
    return averaged


# Options that change how a model is trained or run, not what its weights mean: they may differ between averaged
# checkpoints. Every other model option must agree (positions or normalisation can differ with equal shapes).
RUNTIME_ONLY_OPTIONS = frozenset(
    {
        "dropout",
        "attention_dropout",
        "activation_dropout",
        "token_mixing_dropout",
        "drop_path",
        "compile_layers",
        "no_cuda_graphs",
        "int8",
    }
)


def model_options(state: Dict[str, Any]) -> Dict[str, Any]:
    """The model options a checkpoint was trained with (dataclass config or the older argparse Namespace)."""
    cfg = state.get("cfg")
    model = cfg.get("model") if isinstance(cfg, dict) else getattr(cfg, "model", None) if cfg is not None else None
    if model is None and state.get("args") is not None:
        model = vars(state["args"])
    if model is None:
        return {}
    if isinstance(model, argparse.Namespace):
        # fairseq's architectures registered with argparse (transformer_iwslt_de_en ...) keep a Namespace here.
        return vars(model)
    return dict(model) if not isinstance(model, dict) else model


def check_same_model_options(states: Sequence[Dict[str, Any]], names: Sequence[str]) -> None:
    """Refuse checkpoints trained with different model options, naming the first option that differs."""
    first = model_options(states[0])
    for state, name in zip(states[1:], names[1:]):
        other = model_options(state)
        for key in sorted((set(first) | set(other)) - RUNTIME_ONLY_OPTIONS):
            if str(first.get(key)) != str(other.get(key)):
                option = "--" + key.replace("_", "-") if not key.startswith("_") else key
                raise ToolError(
                    f"{name} was trained with {option} {other.get(key)!r} but {names[0]} with {first.get(key)!r}: "
                    "only checkpoints of the same model can be averaged"
                )


def average_checkpoints(paths: Sequence[Path]) -> Dict[str, Any]:
    """A checkpoint dict whose model is the mean of the models of ``paths`` (configuration of the first)."""
    if not paths:
        raise ToolError("no checkpoints to average")
    if len(set(Path(p).resolve() for p in paths)) != len(paths):
        raise ToolError("the same checkpoint is listed twice")
    states = [load_checkpoint(Path(p)) for p in paths]
    check_same_model_options(states, [str(p) for p in paths])
    models = [state["model"] for state in states]
    result = dict(states[0])
    result["model"] = average_state_dicts(models, [str(p) for p in paths])
    # The optimizer state belongs to none of the averaged models; dropping it also makes the file much smaller.
    result["last_optimizer_state"] = None
    # Training metrics describe none of the averaged models either; with --eval-bleu they hold numpy arrays,
    # which torch.load(weights_only=True) in fairseq-generate would refuse.
    extra = dict(result.get("extra_state") or {})
    extra.pop("metrics", None)
    result["extra_state"] = extra
    result["averaged_from"] = [str(p) for p in paths]
    return result


def save_checkpoint(state: Dict[str, Any], output: Path) -> None:
    """Write with a temporary name and rename: a killed run never leaves a truncated checkpoint."""
    with atomic_path(output) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as e:  # torch's zip writer reports a full disk as "file write failed"
            raise ToolError(f"cannot write {output}: {' '.join(str(e).split())[:200]}") from None


def resolve_inputs(
    inputs: Sequence[Path],
    num_update: Optional[int],
    num_epoch: Optional[int],
    upper_bound: Optional[int] = None,
    allow_fewer: bool = False,
) -> List[Path]:
    if num_update is not None or num_epoch is not None:
        if len(inputs) != 1 or not inputs[0].is_dir():
            raise ToolError("--num-update-checkpoints/--num-epoch-checkpoints need --inputs to be one directory")
        n, by = (num_update, "update") if num_update is not None else (num_epoch, "epoch")
        if n < 1:
            raise ToolError(f"the number of checkpoints to average must be at least 1, not {n}")
        return last_checkpoints(inputs[0], n, by, upper_bound, allow_fewer)
    for p in inputs:
        if p.is_dir():
            raise ToolError(f"{p} is a directory: give --num-update-checkpoints N or --num-epoch-checkpoints N")
    return list(inputs)


@console_script
def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="resmlp-average", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--inputs",
        type=Path,
        nargs="+",
        required=True,
        help="checkpoint files, or one directory with --num-*-checkpoints",
    )
    p.add_argument("--output", type=Path, required=True, help="where to write the averaged checkpoint")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--num-update-checkpoints", type=int, metavar="N", help="average the last N checkpoint_E_U.pt of the directory"
    )
    group.add_argument(
        "--num-epoch-checkpoints", type=int, metavar="N", help="average the last N checkpointE.pt of the directory"
    )
    p.add_argument(
        "--checkpoint-upper-bound", type=int, metavar="K", help="ignore checkpoints after update (or epoch) K"
    )
    p.add_argument(
        "--allow-fewer",
        action="store_true",
        help="with --num-*-checkpoints N: average all there are if there are fewer than N (at least one)",
    )
    args = p.parse_args(argv)
    if (
        args.checkpoint_upper_bound is not None
        and args.num_update_checkpoints is None
        and args.num_epoch_checkpoints is None
    ):
        raise ToolError(
            "--checkpoint-upper-bound only applies with --num-update-checkpoints or --num-epoch-checkpoints"
        )
    paths = resolve_inputs(
        args.inputs,
        args.num_update_checkpoints,
        args.num_epoch_checkpoints,
        args.checkpoint_upper_bound,
        args.allow_fewer,
    )
    print(f"averaging {len(paths)} checkpoint(s):", file=sys.stderr)
    for path in paths:
        print(f"  {path}", file=sys.stderr)
    if args.output.resolve() in {q.resolve() for q in paths}:
        raise ToolError(f"--output {args.output} is one of the inputs")
    check_writable(args.output)  # before reading the inputs, which can take a while
    save_checkpoint(average_checkpoints(paths), args.output)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
