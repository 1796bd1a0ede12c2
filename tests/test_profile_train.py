"""profile_train: a real (CPU) profile of a few fairseq-train updates, and its analysis on hand-made GPU events."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import tiny_train_args
from torch.autograd import DeviceType

from fairseq_resmlp_tools.bench import profile_train as pt
from fairseq_resmlp_tools.recipes.fairseq_args import label_smoothing

ROOT = Path(__file__).resolve().parent.parent


def profile_cmd(data: Path, out: Path, *extra: str, max_update: int = 50) -> list:
    return [
        sys.executable,
        "-m",
        "fairseq_resmlp_tools.bench.profile_train",
        "--out",
        str(out),
        "--wait",
        "2",
        "--warmup",
        "1",
        "--active",
        "2",
        *extra,
        "--",
        *tiny_train_args(data, "0.001", ROOT / "fairseq_resmlp"),
        *label_smoothing(0.1),
        "--max-tokens",
        "200",
        "--max-update",
        str(max_update),
        "--no-save",
        "--cpu",
        "--num-workers",
        "0",
        "--required-batch-size-multiple",
        "1",
        "--log-format",
        "simple",
    ]


def run(cmd: list) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from fairseq_resmlp_tools.toy_data import build_toy_data

    return build_toy_data(tmp_path_factory.mktemp("profile") / "data", n_train=300, n_valid=8, n_test=4) / "data-bin"


@pytest.fixture(scope="module")
def profiled(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("profile") / "out"
    proc = run(profile_cmd(data, out, "--with-stack"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "# fairseq-train profile (cpu, 2 active updates)" in proc.stdout
    return out


def test_cpu_profile_writes_summary_trace_and_classes_that_add_up(profiled):
    summary = json.loads((profiled / "summary.json").read_text())
    assert summary["device"] == "cpu" and summary["active_updates"] == 2
    assert [c["class"] for c in summary["classes"]] == list(pt.CLASSES)
    assert sum(c["ms"] for c in summary["classes"]) == pytest.approx(summary["total_ms"], rel=1e-9)
    assert sum(c["share"] for c in summary["classes"]) == pytest.approx(1.0)
    ms = {c["class"]: c["ms"] for c in summary["classes"]}
    for cls in ("GEMM", "element-wise", "optimizer", "softmax/loss", "copies/casts"):
        assert ms[cls] > 0, cls
    assert 0 < len(summary["top_kernels"]) <= 20
    assert all(k["class"] in pt.CLASSES and k["calls"] > 0 for k in summary["top_kernels"])
    t = summary["timeline"]
    assert t["wall_ms_per_update"] > 0 and t["data_loading_ms_per_update"] >= 0
    assert t["device_busy_ms_per_update"] <= t["wall_ms_per_update"] + 1e-9
    assert t["wall_ms_per_update_unprofiled"] > 0
    # fairseq's logging and the model's padding checks read tensors on the host every update.
    syncs = summary["host_syncs"]
    assert syncs["per_update"] > 0 and set(syncs["by_name"]) <= pt.SYNC_NAMES
    assert any(".py(" in s["where"] for s in syncs["by_source"])  # --with-stack: source lines
    trace = json.loads(gzip.decompress((profiled / pt.TRACE).read_bytes()))
    assert any(e.get("name", "").startswith("ProfilerStep") for e in trace["traceEvents"])
    md = (profiled / "summary.md").read_text()
    assert "| class | ms / update | share |" in md and "Host synchronisations" in md and "Top " in md


def test_compare_prints_both_summaries_side_by_side(profiled, capsys):
    assert pt.main(["--compare", str(profiled), str(profiled / "summary.json"), "--labels", "resmlp", "tf"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].startswith("| | resmlp ms | resmlp share | tf ms | tf share | tf / resmlp |")
    for cls in pt.CLASSES:
        assert f"| {cls} |" in table
    assert "| **kernel total** |" in table and "| host syncs per update |" in table


def test_too_few_updates_is_a_clear_error(data, tmp_path):
    proc = run(profile_cmd(data, tmp_path / "out", max_update=3))
    assert proc.returncode == 2
    assert "stopped after 3 updates, before the 5 that --wait + --warmup + --active need" in proc.stderr


def test_host_profile_reports_train_step_per_update(data, tmp_path):
    out = tmp_path / "host"
    cmd = profile_cmd(data, out, "--host")
    proc = run(cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (out / pt.HOST_PROFILE).read_text()
    assert text.strip() in proc.stdout and f"written: {out / pt.HOST_PROFILE}" in proc.stdout
    assert text.startswith("# Host profile: 2 updates after 2 (cProfile; times per update)")
    assert "## By own time" in text and "## By cumulative time" in text
    rows = {line.split("`")[1]: line.split("|")[2:5] for line in text.splitlines() if line.startswith("| `")}
    # fairseq's Trainer.train_step runs once per profiled update, and holds the forward and backward passes.
    step = [cells for name, cells in rows.items() if name.startswith("trainer.py:") and name.endswith("(train_step)")]
    assert step and float(step[0][0]) == 1.0
    wall = float(text.split("wall per update (profiled): ")[1].split(" ms")[0])
    assert 0 < float(step[0][2]) <= wall
    assert not (out / "summary.json").exists()  # the torch profiler did not run


def test_host_profile_with_too_few_updates_is_a_clear_error(data, tmp_path):
    proc = run(profile_cmd(data, tmp_path / "out", "--host", max_update=3))
    assert proc.returncode == 2
    assert "stopped after 3 updates, before the 4 that --wait + --active need" in proc.stderr


def test_missing_summary_is_a_clear_error(tmp_path, capsys):
    assert pt.main(["--compare", str(tmp_path), str(tmp_path)]) == 2
    assert "no summary.json" in capsys.readouterr().err


# The GPU path of the analysis, on events shaped like torch.profiler's (no GPU here).


def event(name, start, end, device=DeviceType.CPU, activity="cpu_op", parent=None, id=0, link=0, **kw):
    evt = SimpleNamespace(
        name=name,
        device_type=device,
        is_async=False,
        activity_type=activity,
        cpu_parent=parent,
        id=id,
        linked_correlation_id=link,
        is_user_annotation=activity.endswith("user_annotation"),
        stack=[],
        is_python_function=activity == "python_function",
        time_range=SimpleNamespace(start=start, end=end, elapsed_us=lambda: end - start),
        **kw,
    )
    return evt


def test_gpu_events_are_classified_and_timed():
    step1 = event("ProfilerStep#5", 0, 1000, activity="user_annotation")
    step2 = event("ProfilerStep#6", 1000, 2000, activity="user_annotation")
    mm = event("aten::mm", 10, 20, parent=step1, id=1)
    cast = event("aten::_to_copy", 20, 30, parent=step1, id=2)
    opt = event("Optimizer.step#Adam.step", 900, 990, activity="user_annotation", parent=step1)
    add = event("aten::add_", 910, 920, parent=opt, id=3)
    item = event("aten::item", 1500, 1600, parent=step2, id=4)
    dense = event("aten::_local_scalar_dense", 1510, 1600, parent=item, id=5)
    sync = event("cudaStreamSynchronize", 1520, 1600, activity="cuda_runtime", parent=dense, id=99, link=5)
    gpu = DeviceType.CUDA
    kernels = [
        event("nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_NNT", 100, 400, device=gpu, activity="kernel", link=1),
        event("void at::native::unrolled_elementwise_kernel<direct_copy...>", 400, 450, gpu, "kernel", link=2),
        event("void at::native::vectorized_elementwise_kernel<4, CUDAFunctor_add>", 950, 1000, gpu, "kernel", link=3),
        event("Memcpy DtoH (Device -> Pageable)", 1590, 1600, gpu, "gpu_memcpy", link=5),
        event("ProfilerStep#5", 100, 1000, gpu, "gpu_user_annotation"),  # a range, not work
    ]
    events = [step1, step2, mm, cast, opt, add, item, dense, sync, *kernels]
    profile = pt.profile_from_events(events, "cuda", [0.001, 0.003])
    s = pt.summarise(profile)
    ms = {c["class"]: c["ms"] for c in s["classes"]}
    assert ms == pytest.approx(
        {
            "GEMM": 0.3,
            "element-wise": 0.0,
            "normalisation": 0.0,
            "softmax/loss": 0.0,
            "optimizer": 0.05,
            "copies/casts": 0.06,
            "communication": 0.0,
            "other": 0.0,
        }
    )
    assert s["total_ms"] == pytest.approx(0.41) and s["active_updates"] == 2
    t = s["timeline"]
    assert t["wall_ms_per_update"] == pytest.approx(1.0)
    assert t["device_busy_ms_per_update"] == pytest.approx(0.41 / 2)
    assert t["device_idle_ms_per_update"] == pytest.approx((2.0 - 0.41) / 2)
    assert t["data_loading_ms_per_update"] == pytest.approx(2.0)
    # item -> _local_scalar_dense -> cudaStreamSynchronize is one synchronisation.
    assert s["host_syncs"]["by_name"] == {"aten::item": 1} and s["host_syncs"]["per_update"] == 0.5


def test_kernels_of_ops_sharing_a_correlation_id_go_to_the_op_that_launched_them():
    # Should two ops share a correlation id, a forward GELU kernel must not be classed by a later optimizer op.
    step = event("ProfilerStep#5", 0, 1000, activity="user_annotation")
    gelu = event("aten::gelu", 10, 20, parent=step, id=7)
    opt = event("Optimizer.step#Adam.step", 900, 990, activity="user_annotation", parent=step)
    mul = event("aten::mul_", 910, 920, parent=opt, id=7)
    gpu = DeviceType.CUDA
    kernels = [
        event("void at::native::vectorized_elementwise_kernel<8, GeluCUDAKernelImpl>", 30, 130, gpu, "kernel", link=7),
        event("void at::native::vectorized_elementwise_kernel<4, mul>", 930, 950, gpu, "kernel", link=7),
        event("void at::native::vectorized_elementwise_kernel<4, orphan>", 5, 8, gpu, "kernel", link=7),
    ]
    s = pt.summarise(pt.profile_from_events([step, gelu, opt, mul, *kernels], "cuda", []))
    ms = {c["class"]: c["ms"] for c in s["classes"]}
    assert ms["element-wise"] == pytest.approx(0.103) and ms["optimizer"] == pytest.approx(0.02)


@pytest.mark.parametrize(
    "name, context, cls",
    [
        ("sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize128x128x64", (), "GEMM"),
        ("void pytorch_flash::flash_fwd_kernel<...>", (), "GEMM"),
        ("void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::Half, float>", (), "normalisation"),
        ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float>", (), "softmax/loss"),
        ("void at::native::reduce_kernel<512, 1, ...>", ("aten::sum",), "element-wise"),
        ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>", (), "element-wise"),
        ("void multi_tensor_apply_kernel<...>", (), "optimizer"),
        (
            "void at::native::vectorized_elementwise_kernel<4, mul>",
            ("aten::mul_", "Optimizer.step#Adam.step"),
            "optimizer",
        ),
        ("ncclDevKernel_AllReduce_Sum_f16_RING_LL(ncclDevComm*, unsigned long, ncclWork*)", (), "communication"),
        ("Memset (Device)", (), "copies/casts"),
        ("void at::native::indexSelectLargeIndex<float, long>", (), "copies/casts"),
        ("some_custom_kernel", ("aten::native_layer_norm",), "normalisation"),
        # "{lambda()#1}" in a templated name is not the LAMB optimizer (it classed GELU and bias-gradient sums as
        # optimizer work: 14.75 ms of a 30.37 ms update on an H100).
        (
            "void at::native::vectorized_elementwise_kernel<8, at::native::GeluCUDAKernelImpl(at::TensorIteratorBase&, "
            "at::native::GeluType)::{lambda()#2}::operator()() const::{lambda(c10::Half)#1}>",
            ("aten::gelu",),
            "element-wise",
        ),
        (
            "void at::native::reduce_kernel<128, 4, at::native::ReduceOp<c10::Half, at::native::func_wrapper_t<c10::Half, "
            "at::native::sum_functor<c10::Half, float, c10::Half>::operator()(at::TensorIterator&)::{lambda(float, float)#1}>",
            ("aten::sum",),
            "element-wise",
        ),
        ("void lamb_stage1_kernel<float>", (), "optimizer"),
        ("aten::view", ("aten::_to_copy",), "other"),
        ("aten::empty_strided", (), "other"),
        ("some_custom_kernel", (), "other"),
    ],
)
def test_classify(name, context, cls):
    assert pt.classify(name, context) == cls


def test_union_length_merges_overlaps_and_clips():
    assert pt.union_length([(0, 10), (5, 15), (20, 30)]) == 25
    assert pt.union_length([(0, 10), (5, 15), (20, 30)], lo=8, hi=25) == 12
