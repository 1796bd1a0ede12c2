"""Profile steady-state ``fairseq-train`` updates with ``torch.profiler`` and summarise where the time goes.

Runs fairseq's own train CLI in this process with the fairseq-train arguments given after ``--``, lets the first
``--wait`` + ``--warmup`` updates pass, records ``--active`` updates, then stops training and writes to ``--out``:

- ``summary.md`` / ``summary.json``: time by kernel class (GEMM, element-wise, normalisation, softmax/loss,
  optimizer, copies/casts, communication, other) with shares that add up to the total, the top kernels,
  wall time per update against device busy time (the gaps), host-side op time, data-loading time per update
  and the host synchronisations per update (by name, and by source line with ``--with-stack``);
- ``trace.json.gz``: the Chrome trace of the active updates, gzipped (https://ui.perfetto.dev opens it as is).

On a GPU the classes are CUDA kernels (device time); on a CPU-only machine they are the CPU ops' self time, so
the tool (and its test) also runs without CUDA. Two summaries side by side: ``--compare DIR_A DIR_B``.

``--host`` profiles the host instead: Python's ``cProfile`` over the ``--active`` updates (no torch profiler, whose
own overhead inflates host time), written to ``host_profile.txt``: the wall time per update, then the functions by
own time and by cumulative time, per update. It answers what the host does while the GPU waits.

    python -m fairseq_resmlp_tools.bench.profile_train --out prof/resmlp -- data-bin --user-dir fairseq_resmlp \\
        --arch resmlp_6 --fp16 --max-tokens 16384 --criterion label_smoothed_cross_entropy ... --no-save
    python -m fairseq_resmlp_tools.bench.profile_train --compare prof/resmlp prof/transformer
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

CLASSES = (
    "GEMM",
    "element-wise",
    "normalisation",
    "softmax/loss",
    "optimizer",
    "copies/casts",
    "communication",
    "other",
)

# Ranges this tool opens around fairseq's optimizer work (gradient scaling, clipping, the update itself);
# torch opens "Optimizer.step#<class>.step" around every torch optimizer's step.
OPTIMIZER_RANGE = "profile_train::optimizer"
STEP_RANGE = "profile_train::train_step"
DATA_RANGE = "profile_train::data_loading"
TRACE = "trace.json.gz"  # a real model's trace is hundreds of MB as plain JSON
HOST_PROFILE = "host_profile.txt"

# Ops that make the host wait for the device when their tensors live on it; nested ones are counted once.
SYNC_NAMES = frozenset(
    {
        "cudaStreamSynchronize",
        "cudaDeviceSynchronize",
        "cudaEventSynchronize",
        "cudaStreamWaitEvent_sync",
        "aten::item",
        "aten::_local_scalar_dense",
        "aten::is_nonzero",
        "aten::nonzero",
        "aten::masked_select",
        "aten::equal",
        "aten::allclose",
        "aten::unique",
        "aten::_unique2",
    }
)

_ELEMENTWISE_OPS = (
    "add sub rsub mul div neg exp log log1p pow sqrt rsqrt reciprocal relu gelu silu tanh sigmoid softplus erf "
    "dropout native_dropout bernoulli where masked_fill fill zero zeros zeros_like ones ones_like full empty_like "
    "ne eq lt gt le ge sum mean max min amax amin argmax argmin cumsum clamp clamp_min abs sign addcmul addcdiv "
    "lerp threshold threshold_backward gelu_backward sigmoid_backward tanh_backward floor ceil round "
    "bitwise_and bitwise_or bitwise_not logical_and logical_or logical_not any all rand rand_like uniform normal "
    "arange tril triu maximum minimum square mul_ exp_ sub_ masked_fill_ isfinite isinf isnan"
).split()

_RULES: Tuple[Tuple[str, "re.Pattern[str]"], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE))
    for name, pattern in (
        # Not a bare "lamb": templated kernel names are full of "{lambda()#1}" (GELU, bias-gradient reductions).
        ("optimizer", r"multi_tensor|_foreach_|fused_?adam|adam_|\blamb\b|lamb_|adagrad|optimizer\.step"),
        ("communication", r"nccl|c10d::|gloo|all_?reduce|all_?gather|reduce_?scatter|broadcast_|alltoall"),
        (
            "GEMM",
            r"gemm|gemv|cublas|cutlass|xmma|nvjet|matmul|flash|fmha|attention|sdpa|"
            r"aten::(mm|addmm|bmm|baddbmm|addbmm|linear|_scaled_mm|convolution|_convolution|mkldnn_\w+)$",
        ),
        ("softmax/loss", r"softmax|logsumexp|nll_loss|cross_entropy|label_smooth"),
        ("normalisation", r"layer_?norm|batch_?norm|group_?norm|rms_?norm|instance_?norm"),
        (
            "copies/casts",
            r"memcpy|memset|copy|aten::to$|aten::cat$|catarray|aten::clone$|contiguous|index|gather|scatter|"
            r"embedding|aten::stack$|aten::flip$|aten::roll$|constant_pad|aten::pad$",
        ),
        (
            "element-wise",
            r"elementwise|vectorized|reduce_kernel|unrolled|aten::(" + "|".join(_ELEMENTWISE_OPS) + r")_?$",
        ),
    )
)


# Views, allocation and metadata: no data moves, whatever the op around them does.
_METADATA = re.compile(
    r"^(aten::)?(empty|empty_strided|new_empty|view|_unsafe_view|as_strided|t|transpose|reshape|expand|permute|"
    r"unsqueeze|squeeze|select|slice|narrow|detach|alias|resize_|split|split_with_sizes|chunk|unbind|"
    r"lift_fresh|result_type|set_|_reshape_alias|expand_as|view_as)$"
)


def classify(name: str, context: Sequence[str] = ()) -> str:
    """The kernel class of a kernel or op ``name``; ``context`` names the ops and ranges around it, innermost first.

    Anything launched inside an optimizer range is optimizer work; otherwise the first rule matching the name,
    then the launching op's name (a CUDA kernel whose name says nothing is classed by its aten op), else "other".
    """
    if any(OPTIMIZER_RANGE in c or c.startswith("Optimizer.step#") for c in context):
        return "optimizer"
    if _METADATA.match(name):
        return "other"
    for candidate in (name, *context[:1]):
        for cls, pattern in _RULES:
            if pattern.search(candidate):
                return cls
    return "other"


@dataclass
class Kernel:
    """One timed piece of work: a device kernel (GPU) or an op's self time (CPU)."""

    name: str
    start_us: float
    duration_us: float
    context: Tuple[str, ...] = ()  # launching op and its ancestors, innermost first


@dataclass
class Profile:
    """What the summary is computed from, independent of torch.profiler's event classes (so it can be tested)."""

    device: str
    kernels: List[Kernel]
    steps: List[Tuple[float, float]]  # (start, end) of every active update, host clock, microseconds
    host_op_intervals: List[Tuple[float, float]]  # outermost CPU ops
    syncs: List[Tuple[str, str]]  # (name, where) of every outermost synchronising op
    data_loading_s: List[float] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)


def union_length(
    intervals: Iterable[Tuple[float, float]], lo: float = float("-inf"), hi: float = float("inf")
) -> float:
    """Length of the union of ``intervals`` clipped to [lo, hi]."""
    total, end = 0.0, float("-inf")
    for s, e in sorted((max(s, lo), min(e, hi)) for s, e in intervals):
        if e <= s:
            continue
        if s > end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


def summarise(profile: Profile, top: int = 20) -> Dict[str, Any]:
    """The summary (a JSON-able dict) of a profile: classes, top kernels, timeline, synchronisations."""
    n = max(len(profile.steps), 1)
    by_class: Dict[str, float] = dict.fromkeys(CLASSES, 0.0)
    by_name: Dict[str, List[Any]] = {}
    for k in profile.kernels:
        cls = classify(k.name, k.context)
        by_class[cls] += k.duration_us
        entry = by_name.setdefault(k.name, [cls, 0, 0.0])
        entry[1] += 1
        entry[2] += k.duration_us
    total = sum(by_class.values())

    def share(us: float) -> float:
        return us / total if total > 0 else 0.0

    classes = [
        {"class": c, "ms": us / 1e3, "ms_per_update": us / 1e3 / n, "share": share(us)} for c, us in by_class.items()
    ]
    ranked = sorted(by_name.items(), key=lambda item: -item[1][2])[:top]
    top_kernels = [
        {"name": name, "class": cls, "calls": calls, "ms": us / 1e3, "share": share(us)}
        for name, (cls, calls, us) in ranked
    ]

    lo = min((s for s, _ in profile.steps), default=0.0)
    hi = max((e for _, e in profile.steps), default=0.0)
    wall = hi - lo
    if profile.device == "cpu":
        busy = union_length(profile.host_op_intervals, lo, hi)
    else:
        busy = union_length(((k.start_us, k.start_us + k.duration_us) for k in profile.kernels), lo, hi)
    host_ops = union_length(profile.host_op_intervals, lo, hi)
    data = profile.data_loading_s
    timeline = {
        "wall_ms_per_update": wall / 1e3 / n,
        "device_busy_ms_per_update": busy / 1e3 / n,
        "device_idle_ms_per_update": max(wall - busy, 0.0) / 1e3 / n,
        "device_idle_share": max(wall - busy, 0.0) / wall if wall > 0 else 0.0,
        "host_ops_ms_per_update": host_ops / 1e3 / n,
        "host_outside_ops_ms_per_update": max(wall - host_ops, 0.0) / 1e3 / n,
        "data_loading_ms_per_update": (sum(data) / len(data) * 1e3) if data else None,
    }
    names = Counter(name for name, _ in profile.syncs)
    sources = Counter(where for _, where in profile.syncs)
    syncs = {
        "per_update": len(profile.syncs) / n,
        "total": len(profile.syncs),
        "by_name": dict(names.most_common()),
        "by_source": [{"where": w, "count": c, "per_update": c / n} for w, c in sources.most_common(15)],
    }
    return {
        "device": profile.device,
        "active_updates": len(profile.steps),
        "kernel_time": "CUDA kernel time" if profile.device != "cpu" else "CPU op self time",
        "total_ms": total / 1e3,
        "total_ms_per_update": total / 1e3 / n,
        "classes": classes,
        "top_kernels": top_kernels,
        "timeline": timeline,
        "host_syncs": syncs,
        **profile.extra,
    }


# From torch.profiler events to a Profile.


def _ancestors(evt) -> Tuple[str, ...]:
    """Names of the ops and ranges around ``evt``, innermost first (Python frames left out)."""
    return tuple(a.name for a in _ancestor_events(evt))


def _ancestor_events(evt, python: bool = False):
    parent = evt.cpu_parent
    while parent is not None:
        if python or not getattr(parent, "is_python_function", False):
            yield parent
        parent = parent.cpu_parent


def _activity(evt) -> Optional[str]:
    """Kineto's activity type ("cpu_op", "kernel", "cuda_runtime", "user_annotation", ...), where torch says."""
    kind = getattr(evt, "activity_type", None)
    return kind if isinstance(kind, str) else None


def _is_range(evt) -> bool:
    """A record_function range (ProfilerStep, this tool's, the optimizer's), on the host or the device timeline."""
    return (
        bool(getattr(evt, "is_user_annotation", False))
        or (_activity(evt) or "").endswith("user_annotation")
        or evt.name.startswith(("ProfilerStep", "profile_train::"))
    )


def _is_op(evt) -> bool:
    """A host-side PyTorch op (aten, autograd node), not a range, a Python frame or a CUDA runtime call."""
    kind = _activity(evt)
    if kind is not None:
        return kind == "cpu_op" and not _is_range(evt)
    return not _is_range(evt) and not getattr(evt, "is_python_function", False)


def _is_device_work(evt) -> bool:
    """A kernel, memcpy or memset on the device (not a device-side range or a synchronisation marker)."""
    kind = _activity(evt)
    if kind is not None:
        return kind in ("kernel", "gpu_memcpy", "gpu_memset")
    return not _is_range(evt)


_FRAME = re.compile(r"\.py\(\d+\): ")
_NOT_THE_CALLER = ("torch/", "contextlib.py", "profile_train.py", "<built-in")


def _where(evt) -> str:
    """Who issued a synchronising op: the innermost Python frame outside torch (with --with-stack), else its ops."""
    frames = list(getattr(evt, "stack", None) or []) + [a.name for a in _ancestor_events(evt, python=True)]
    for frame in frames:
        if _FRAME.search(frame) and not any(x in frame for x in _NOT_THE_CALLER):
            return f"{frame} ({evt.name})"
    ops = [a for a in _ancestors(evt) if not a.startswith("ProfilerStep")][:3]
    return " < ".join([evt.name, *ops])


def profile_from_events(events, device: str, data_loading_s: Sequence[float]) -> Profile:
    """A Profile from ``torch.profiler.profile.events()`` of the active updates."""
    from torch.autograd import DeviceType

    cpu = [e for e in events if e.device_type == DeviceType.CPU and not e.is_async]
    steps = [(e.time_range.start, e.time_range.end) for e in cpu if e.name.startswith("ProfilerStep")]
    ops = [e for e in cpu if _is_op(e)]
    outermost = [e for e in ops if not any(_is_op(a) for a in _ancestor_events(e))]
    host_op_intervals = [(e.time_range.start, e.time_range.end) for e in outermost]
    # CUDA runtime calls (cudaStreamSynchronize) are neither ops nor ranges; look at every host event.
    syncs = [
        (e.name, _where(e))
        for e in cpu
        if e.name in SYNC_NAMES and not any(a.name in SYNC_NAMES for a in _ancestor_events(e))
    ]
    if device == "cpu":
        kernels = [
            Kernel(e.name, e.time_range.start, e.self_cpu_time_total, _ancestors(e))
            for e in ops
            if e.self_cpu_time_total > 0
        ]
    else:
        # A kernel names the op that launched it by that op's correlation id. Should two ops share an id, take the
        # last one that started before the kernel did (a kernel never runs before its launch), else the first.
        launchers: Dict[int, List[Any]] = {}
        for e in ops:
            if getattr(e, "linked_correlation_id", 0) == 0:
                launchers.setdefault(e.id, []).append(e)
        for same_id in launchers.values():
            same_id.sort(key=lambda op: op.time_range.start)
        kernels = []
        for e in events:
            if e.device_type == DeviceType.CPU or not _is_device_work(e):
                continue
            candidates = launchers.get(getattr(e, "linked_correlation_id", -1), [])
            started = [op for op in candidates if op.time_range.start <= e.time_range.start]
            op = started[-1] if started else (candidates[0] if candidates else None)
            context = (op.name, *_ancestors(op)) if op is not None else ()
            kernels.append(Kernel(e.name, e.time_range.start, e.time_range.elapsed_us(), context))
    return Profile(device, kernels, sorted(steps), host_op_intervals, syncs, list(data_loading_s))


# Running fairseq-train under the profiler.


class ProfileDone(Exception):
    """Raised out of fairseq's training loop once the active updates are recorded."""


class ProfileTrainError(RuntimeError):
    """A profiling run that could not produce a summary (the message says why and what to change)."""


@dataclass
class _Patch:
    owner: Any
    name: str
    original: Any


class TrainProfiler:
    """Wraps fairseq's Trainer.train_step, optimizer work and batch iterator while fairseq-train runs."""

    def __init__(self, out: Path, wait: int, warmup: int, active: int, with_stack: bool, top: int) -> None:
        import torch

        self.out, self.top = out, top
        self.wait, self.warmup, self.active = wait, warmup, active
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        activities = [torch.profiler.ProfilerActivity.CPU]
        if self.device == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.profiler = torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(wait=wait, warmup=warmup, active=active, repeat=1),
            on_trace_ready=self._on_trace_ready,
            with_stack=with_stack,
        )
        self.updates = 0
        self.started = False
        self.data_loading_s: Dict[int, float] = {}
        self.update_wall_s: List[float] = []
        self.summary: Optional[Dict[str, Any]] = None
        self._patches: List[_Patch] = []
        self._last_update_end: Optional[float] = None

    # Patching fairseq

    def _wrap(self, owner: Any, name: str, make: Callable[[Callable], Callable]) -> None:
        original = owner.__dict__[name] if name in owner.__dict__ else getattr(owner, name)
        self._patches.append(_Patch(owner, name, owner.__dict__.get(name)))
        setattr(owner, name, make(original))

    def _ranged(self, range_name: str) -> Callable[[Callable], Callable]:
        from torch.profiler import record_function

        def make(original):
            def wrapper(*args, **kwargs):
                with record_function(range_name):
                    return original(*args, **kwargs)

            return wrapper

        return make

    def __enter__(self) -> "TrainProfiler":
        from fairseq.data.iterators import CountingIterator, GroupedIterator
        from fairseq.optim import fp16_optimizer
        from fairseq.optim.fairseq_optimizer import FairseqOptimizer
        from fairseq.tasks import FairseqTask
        from fairseq.trainer import Trainer

        self._wrap(Trainer, "train_step", self._train_step)
        self._wrap(GroupedIterator, "__next__", lambda _: self._next_batch(CountingIterator.__next__))
        self._wrap(FairseqTask, "optimizer_step", self._ranged(OPTIMIZER_RANGE))
        self._wrap(Trainer, "clip_grad_norm", self._ranged(OPTIMIZER_RANGE))
        for owner in (
            FairseqOptimizer,
            fp16_optimizer._FP16OptimizerMixin,
            fp16_optimizer._MemoryEfficientFP16OptimizerMixin,
        ):
            self._wrap(owner, "multiply_grads", self._ranged(OPTIMIZER_RANGE))
        return self

    def __exit__(self, *exc: Any) -> None:
        for patch in reversed(self._patches):
            if patch.original is None:
                delattr(patch.owner, patch.name)
            else:
                setattr(patch.owner, patch.name, patch.original)
        self._patches.clear()
        if self.started:
            self.profiler.stop()

    def _next_batch(self, original: Callable) -> Callable:
        from torch.profiler import record_function

        def wrapper(itr):
            start = time.perf_counter()
            with record_function(DATA_RANGE):
                batch = original(itr)
            self.data_loading_s[self.updates] = time.perf_counter() - start
            return batch

        return wrapper

    def _train_step(self, original: Callable) -> Callable:
        from torch.profiler import record_function

        def wrapper(trainer, samples, *args, **kwargs):
            if not self.started:
                self.profiler.start()
                self.started = True
            with record_function(STEP_RANGE):
                result = original(trainer, samples, *args, **kwargs)
            now = time.perf_counter()
            if self._last_update_end is not None:
                self.update_wall_s.append(now - self._last_update_end)
            self._last_update_end = now
            self.updates += 1
            self.profiler.step()
            if self.updates == self.wait + self.warmup + self.active:
                raise ProfileDone()
            return result

        return wrapper

    def _on_trace_ready(self, prof) -> None:
        import torch

        self.out.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(self.out / TRACE))
        first = self.wait + self.warmup
        data = [self.data_loading_s[i] for i in range(first, first + self.active) if i in self.data_loading_s]
        profile = profile_from_events(prof.events(), self.device, data)
        profile.extra = {
            "updates": {"wait": self.wait, "warmup": self.warmup, "active": self.active},
            "device_name": torch.cuda.get_device_name() if self.device == "cuda" else "cpu",
            "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if self.device == "cuda" else None,
            "trace": TRACE,
        }
        self.summary = summarise(profile, top=self.top)


class HostProfiler:
    """cProfile over updates wait+1 .. wait+active of Trainer.train_step (each update's whole host work: the forward,
    backward and optimizer calls it makes, and fairseq's logging inside it), plus the batch iterator between them."""

    def __init__(self, wait: int, active: int) -> None:
        import cProfile

        self.wait, self.active = wait, active
        self.profile = cProfile.Profile()
        self.updates = 0
        self.first_start: Optional[float] = None
        self.wall_s: Optional[float] = None
        self._patch: Optional[_Patch] = None

    def __enter__(self) -> "HostProfiler":
        from fairseq.trainer import Trainer

        original = Trainer.train_step
        self._patch = _Patch(Trainer, "train_step", Trainer.__dict__.get("train_step"))

        def wrapper(trainer, samples, *args, **kwargs):
            if self.updates == self.wait:
                self.first_start = time.perf_counter()
                self.profile.enable()
            result = original(trainer, samples, *args, **kwargs)
            self.updates += 1
            if self.updates == self.wait + self.active:
                self.profile.disable()
                self.wall_s = time.perf_counter() - (self.first_start or 0.0)
                raise ProfileDone()
            return result

        Trainer.train_step = wrapper
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._patch is not None:
            setattr(self._patch.owner, self._patch.name, self._patch.original)
            self._patch = None
        self.profile.disable()

    def report(self, top: int) -> str:
        import io
        import pstats

        lines = [
            f"# Host profile: {self.active} updates after {self.wait} (cProfile; times per update)",
            "",
            f"wall per update (profiled): {1e3 * (self.wall_s or 0.0) / self.active:.2f} ms",
            "",
        ]
        for key, title in (("tottime", "own time"), ("cumulative", "cumulative time")):
            stream = io.StringIO()
            stats = pstats.Stats(self.profile, stream=stream)
            stats.sort_stats(key)
            rows = []
            for func in stats.fcn_list[:top]:  # type: ignore[attr-defined]
                calls, _, own, cum, _ = stats.stats[func]  # type: ignore[attr-defined]
                where = f"{Path(func[0]).name}:{func[1]}({func[2]})" if func[0] != "~" else func[2]
                rows.append(
                    f"| `{where}` | {calls / self.active:.1f} | {1e3 * own / self.active:.2f} | "
                    f"{1e3 * cum / self.active:.2f} |"
                )
            lines += [f"## By {title}", "", "| function | calls | own ms | cumulative ms |", "|---|---:|---:|---:|"]
            lines += rows + [""]
        return "\n".join(lines)


def run_host(train_args: Sequence[str], out: Path, wait: int = 5, active: int = 20, top: int = 40) -> str:
    """cProfile ``active`` updates of fairseq-train after ``wait``; write ``host_profile.txt`` to ``out``."""
    if wait < 0 or active < 1:
        raise ProfileTrainError(f"need --wait >= 0 and --active >= 1 (got {wait}, {active})")
    train_args = _one_process(train_args)
    profiler = HostProfiler(wait, active)
    _train_until_done(train_args, profiler)
    if profiler.updates < wait + active:
        raise ProfileTrainError(
            f"fairseq-train stopped after {profiler.updates} updates, before the {wait + active} that "
            "--wait + --active need: raise --max-update/--max-epoch or lower those"
        )
    text = profiler.report(top)
    out.mkdir(parents=True, exist_ok=True)
    (out / HOST_PROFILE).write_text(text + "\n", encoding="utf-8")
    return text


def _train_until_done(train_args: Sequence[str], profiler: Any) -> None:
    """fairseq's own training entry point in this process, inside ``profiler``, until it raises ProfileDone."""
    from fairseq_cli import train as fairseq_train

    argv = sys.argv
    sys.argv = ["fairseq-train", *train_args]
    try:
        with profiler:
            fairseq_train.cli_main()
    except ProfileDone:
        pass
    finally:
        sys.argv = argv


def _one_process(train_args: Sequence[str]) -> List[str]:
    train_args = list(train_args)
    if "--distributed-world-size" not in train_args:
        # Spawned workers would not carry this process's wrappers: profile one GPU's training.
        train_args += ["--distributed-world-size", "1"]
    elif train_args[train_args.index("--distributed-world-size") + 1] != "1":
        raise ProfileTrainError("profile_train profiles one process: use --distributed-world-size 1")
    return train_args


def run(
    train_args: Sequence[str],
    out: Path,
    wait: int = 5,
    warmup: int = 3,
    active: int = 5,
    with_stack: bool = False,
    top: int = 20,
) -> Dict[str, Any]:
    """Profile fairseq-train with ``train_args``; write summary.md, summary.json and the trace to ``out``."""
    if wait < 0 or warmup < 0 or active < 1:
        raise ProfileTrainError(f"need --wait >= 0, --warmup >= 0, --active >= 1 (got {wait}, {warmup}, {active})")
    train_args = _one_process(train_args)
    profiler = TrainProfiler(out, wait, warmup, active, with_stack, top)
    _train_until_done(train_args, profiler)
    if profiler.updates < wait + warmup + active or profiler.summary is None:
        raise ProfileTrainError(
            f"fairseq-train stopped after {profiler.updates} updates, before the {wait + warmup + active} that "
            "--wait + --warmup + --active need: raise --max-update/--max-epoch or lower those"
        )
    summary = {**profiler.summary, "fairseq_train_args": train_args}
    # Updates 1 .. wait-1 ran before the profiler recorded anything: their wall time shows its overhead.
    walls = profiler.update_wall_s[: max(wait - 1, 0)]
    summary["timeline"]["wall_ms_per_update_unprofiled"] = 1e3 * sum(walls) / len(walls) if walls else None
    write_summary(summary, out)
    return summary


# Output


def _ms(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def to_markdown(s: Dict[str, Any]) -> str:
    """summary.md's text."""
    t, syncs = s["timeline"], s["host_syncs"]
    lines = [
        f"# fairseq-train profile ({s.get('device_name', s['device'])}, {s['active_updates']} active updates)",
        "",
        f"Kernel time ({s['kernel_time']}): {s['total_ms_per_update']:.2f} ms per update.",
        "",
        "| class | ms / update | share |",
        "|---|---:|---:|",
    ]
    lines += [f"| {c['class']} | {c['ms_per_update']:.2f} | {100 * c['share']:.1f}% |" for c in s["classes"]]
    lines += [f"| **total** | **{s['total_ms_per_update']:.2f}** | 100% |", "", "## Timeline per update", ""]
    lines += [
        "| | ms |",
        "|---|---:|",
        f"| wall (host, profiled) | {_ms(t['wall_ms_per_update'])} |",
        f"| wall before profiling (updates 2..wait) | {_ms(t.get('wall_ms_per_update_unprofiled'))} |",
        f"| device busy | {_ms(t['device_busy_ms_per_update'])} |",
        f"| device idle (gaps) | {_ms(t['device_idle_ms_per_update'])} ({100 * t['device_idle_share']:.1f}%) |",
        f"| host in PyTorch ops | {_ms(t['host_ops_ms_per_update'])} |",
        f"| host outside ops (Python, fairseq, data) | {_ms(t['host_outside_ops_ms_per_update'])} |",
        f"| waiting for the next batch | {_ms(t['data_loading_ms_per_update'])} |",
    ]
    if s.get("peak_memory_mib") is not None:
        lines.append(f"| peak GPU memory (MiB) | {s['peak_memory_mib']:.0f} |")
    lines += ["", f"## Host synchronisations: {syncs['per_update']:.1f} per update", ""]
    lines += ["| op | count |", "|---|---:|"] + [f"| `{k}` | {v} |" for k, v in syncs["by_name"].items()]
    if syncs["by_source"]:
        lines += ["", "| where | per update |", "|---|---:|"]
        lines += [f"| `{x['where']}` | {x['per_update']:.1f} |" for x in syncs["by_source"]]
    lines += ["", f"## Top {len(s['top_kernels'])} kernels", "", "| kernel | class | calls | ms | share |"]
    lines.append("|---|---|---:|---:|---:|")
    for k in s["top_kernels"]:
        name = k["name"] if len(k["name"]) <= 90 else k["name"][:87] + "..."
        lines.append(f"| `{name}` | {k['class']} | {k['calls']} | {k['ms']:.2f} | {100 * k['share']:.1f}% |")
    lines += ["", f"Trace: `{s.get('trace', TRACE)}`.", ""]
    return "\n".join(lines)


def write_summary(summary: Dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(to_markdown(summary), encoding="utf-8")


def load_summary(path: Path) -> Dict[str, Any]:
    """A summary.json, given the file or the --out folder that holds it."""
    path = path / "summary.json" if path.is_dir() else path
    if not path.exists():
        raise ProfileTrainError(f"{path}: no summary.json (run profile_train with --out first)")
    return json.loads(path.read_text(encoding="utf-8"))


def _percent(cls: Dict[str, Any]) -> str:
    return f"{100 * cls['share']:.1f}%" if cls else ""


def compare(a: Dict[str, Any], b: Dict[str, Any], labels: Tuple[str, str] = ("A", "B")) -> str:
    """Two summaries side by side (ms per update and shares), as a markdown table."""
    la, lb = labels
    rows = [f"| | {la} ms | {la} share | {lb} ms | {lb} share | {lb} / {la} |", "|---|---:|---:|---:|---:|---:|"]

    def row(name: str, x: Optional[float], y: Optional[float], sx: str = "", sy: str = "") -> str:
        ratio = f"{y / x:.2f}" if x and y is not None else "n/a"
        return f"| {name} | {_ms(x)} | {sx} | {_ms(y)} | {sy} | {ratio} |"

    ca = {c["class"]: c for c in a["classes"]}
    cb = {c["class"]: c for c in b["classes"]}
    for cls in CLASSES:
        x, y = ca.get(cls, {}), cb.get(cls, {})
        rows.append(row(cls, x.get("ms_per_update"), y.get("ms_per_update"), _percent(x), _percent(y)))
    rows.append(row("**kernel total**", a["total_ms_per_update"], b["total_ms_per_update"], "100%", "100%"))
    for key, name in (
        ("wall_ms_per_update", "wall per update"),
        ("device_idle_ms_per_update", "device idle (gaps)"),
        ("host_ops_ms_per_update", "host in ops"),
        ("data_loading_ms_per_update", "waiting for data"),
    ):
        rows.append(row(name, a["timeline"].get(key), b["timeline"].get(key)))
    rows.append(row("host syncs per update", a["host_syncs"]["per_update"], b["host_syncs"]["per_update"]))
    return "\n".join(rows) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args: List[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, train_args = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(
        prog="python -m fairseq_resmlp_tools.bench.profile_train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, help=f"folder for summary.md, summary.json and {TRACE}")
    p.add_argument("--wait", type=int, default=5, help="updates before recording starts (default %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="profiler warm-up updates, not recorded (default %(default)s)")
    p.add_argument("--active", type=int, default=5, help="recorded updates (default %(default)s)")
    p.add_argument("--top", type=int, default=20, help="kernels listed (default %(default)s)")
    p.add_argument("--with-stack", action="store_true", help="record Python stacks: synchronisations by source line")
    p.add_argument(
        "--host",
        action="store_true",
        help=f"profile the host with cProfile instead (writes {HOST_PROFILE}; --warmup is not used)",
    )
    p.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="print two summaries side by side")
    p.add_argument("--labels", nargs=2, default=None, metavar=("A", "B"), help="column names for --compare")
    args = p.parse_args(argv)
    try:
        if args.compare:
            labels = tuple(args.labels or (x.name for x in args.compare))
            print(compare(load_summary(args.compare[0]), load_summary(args.compare[1]), labels), end="")
            return 0
        if args.out is None or not train_args:
            p.error("give --out DIR and the fairseq-train arguments after --")
        if args.host:
            print(run_host(train_args, args.out, args.wait, args.active, max(args.top, 40)))
            print(f"written: {args.out / HOST_PROFILE}")
            return 0
        summary = run(train_args, args.out, args.wait, args.warmup, args.active, args.with_stack, args.top)
    except ProfileTrainError as e:
        print(f"profile_train: error: {e}", file=sys.stderr)
        return 2
    print(to_markdown(summary))
    print(f"written: {args.out / 'summary.md'}, {args.out / 'summary.json'}, {args.out / TRACE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
