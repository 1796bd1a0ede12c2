"""The training recipes: the commands they build (dry runs), and kill -9 then resume on the CPU with resmlp_tiny."""

import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fairseq_resmlp_tools._cli import run_cli
from fairseq_resmlp_tools.fairseq_io import last_update, user_dir
from fairseq_resmlp_tools.recipes import small as train_small
from fairseq_resmlp_tools.recipes import wmt14 as train_wmt14
from fairseq_resmlp_tools.recipes.checkpoints import is_intact_checkpoint, repair_last_checkpoint
from fairseq_resmlp_tools.toy_data import build_toy_data

ROOT = Path(__file__).resolve().parent.parent
# PYTHONPATH: the children test this checkout, whichever copy the environment has installed.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    return build_toy_data(tmp_path_factory.mktemp("recipes") / "data", n_train=1500, n_valid=16, n_test=13)


def dry_run(main, argv, capsys):
    assert run_cli(main, ["--dry-run"] + argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    commands = [shlex.split(line) for line in out.splitlines() if line and not line.startswith("#")]
    return out, commands


def option(cmd, name):
    """The value after ``name`` in a command (the last one: fairseq's argparse keeps the last)."""
    idx = [i for i, c in enumerate(cmd) if c == name]
    assert idx, f"{name} not in {shlex.join(cmd)}"
    return cmd[idx[-1] + 1]


# --- WMT14 -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pair, dropout", [("en-de", "0.15"), ("en-fr", "0.1")])
def test_wmt14_dry_run_builds_the_papers_recipe(tmp_path, capsys, pair, dropout):
    data = tmp_path / "wmt14"
    (data / "data-bin").mkdir(parents=True)
    src, tgt = pair.split("-")
    (data / "manifest.json").write_text(json.dumps({"languages": {"src": src, "tgt": tgt}}))
    save = tmp_path / "run"
    out, (train, average, evaluate, plot) = dry_run(
        train_wmt14.main,
        ["--pair", pair, "--arch", "resmlp_12", "--data", str(data), "--gpus", "2", "--save-dir", str(save)],
        capsys,
    )

    assert Path(train[0]).name == "fairseq-train" and Path(train[0]).parent == Path(sys.executable).parent
    assert option(train, "--user-dir") == str(user_dir()) and Path(option(train, "--user-dir")).is_absolute()
    assert option(train, "--arch") == "resmlp_12" and "--share-all-embeddings" in train
    assert (option(train, "--source-lang"), option(train, "--target-lang")) == (src, tgt)
    assert option(train, "--optimizer") == "adagrad" and option(train, "--lr") == "0.2"
    assert option(train, "--lr-scheduler") == "fixed" and option(train, "--warmup-updates") == "32000"
    assert (
        option(train, "--criterion") == "label_smoothed_cross_entropy" and option(train, "--label-smoothing") == "0.1"
    )
    assert option(train, "--dropout") == dropout and option(train, "--layerscale-init") == "0.2"
    # 458,752 tokens per update (3584 x 128 GPUs) from 8192 tokens x 2 GPUs: 28 accumulation steps.
    assert option(train, "--max-tokens") == "8192" and option(train, "--update-freq") == "28"
    assert option(train, "--distributed-world-size") == "2" and "--fp16" in train
    assert option(train, "--log-format") == "json" and "--eval-bleu" in train
    assert option(train, "--required-batch-size-multiple") == "1"

    assert option(average, "--num-update-checkpoints") == "10"
    assert option(average, "--output") == str(save / "checkpoint_avg10.pt")
    assert evaluate[1:3] == ["-m", "fairseq_resmlp_tools.evaluate"] and evaluate[3] == str(save / "checkpoint_avg10.pt")
    assert option(evaluate, "--beam") == "4" and option(evaluate, "--split") == "test" and "--fp16" in evaluate
    assert plot[1:3] == ["-m", "fairseq_resmlp_tools.plot"]
    assert "458,752 tokens per update" in out
    assert not save.exists()  # a dry run creates nothing


def test_wmt14_update_freq_reaches_the_batch_on_any_number_of_gpus():
    for gpus, expected in [(1, 56), (4, 14), (8, 7), (16, 4), (128, 1)]:
        freq = train_wmt14.update_freq(train_wmt14.OTT_BATCH_TOKENS, 8192, gpus)
        assert freq == expected and 8192 * gpus * freq >= train_wmt14.OTT_BATCH_TOKENS


def test_wmt14_refuses_a_data_directory_of_another_pair(tmp_path, capsys):
    data = tmp_path / "wmt14"
    (data / "data-bin").mkdir(parents=True)
    (data / "manifest.json").write_text(json.dumps({"languages": {"src": "en", "tgt": "de"}}))
    assert run_cli(train_wmt14.main, ["--pair", "en-fr", "--data", str(data), "--dry-run"]) == 1
    assert "error: --target-lang fr" in capsys.readouterr().err


# --- Multi30k --------------------------------------------------------------------------------------------


def test_small_dry_run_gives_both_architectures_the_same_recipe(toy_data, tmp_path, capsys):
    commands = {}
    for arch in ("resmlp_small", "transformer_iwslt_de_en"):
        _, cmds = dry_run(
            train_small.main,
            [
                "--arch",
                arch,
                "--data",
                str(toy_data),
                "--time-budget-minutes",
                "6",
                "--cpu",
                "--save-dir",
                str(tmp_path / arch),
            ],
            capsys,
        )
        commands[arch] = cmds
    train_r, train_t = commands["resmlp_small"][0], commands["transformer_iwslt_de_en"][0]
    assert option(train_r, "--arch") == "resmlp_small" and option(train_t, "--arch") == "transformer_iwslt_de_en"
    # The same recipe but for the peak learning rate: each model at its better measured value.
    assert option(train_r, "--lr") == "0.002" and option(train_t, "--lr") == "0.001"
    same = lambda cmd: [  # noqa: E731
        c for c in cmd if c not in ("resmlp_small", "transformer_iwslt_de_en", "0.002", "0.001") and "/" not in c
    ]
    assert same(train_r) == same(train_t)
    assert option(train_r, "--stop-time-hours") == "0.1" and "--cpu" in train_r and "--fp16" not in train_r
    assert option(train_r, "--optimizer") == "fused_adam"
    assert option(train_r, "--user-dir") == str(user_dir())
    evaluate = commands["resmlp_small"][2]
    assert option(evaluate, "--split") == "test" and option(evaluate, "--beam") == "4"
    assert option(commands["resmlp_small"][1], "--num-epoch-checkpoints") == "5"


@pytest.mark.parametrize(
    "arch, given, expected",
    [
        ("resmlp_small", None, "0.002"),
        ("resmlp_small_e12d2", None, "0.002"),
        ("transformer_iwslt_de_en", None, "0.001"),
        ("resmlp_mini", None, "0.001"),
        ("resmlp_small", "0.0007", "0.0007"),
        ("transformer_iwslt_de_en", "0.0007", "0.0007"),
    ],
)
def test_small_peak_learning_rate_depends_on_the_architecture_unless_given(toy_data, arch, given, expected):
    argv = ["--arch", arch, "--data", str(toy_data), *(["--lr", given] if given else [])]
    args = train_small.build_parser().parse_args(argv)
    cmd = train_small.train_command(args, "src", "tgt", use_gpu=False)
    assert option(cmd, "--lr") == expected and cmd.count("--lr") == 1


def test_small_passes_extra_fairseq_options_last(toy_data, tmp_path, capsys):
    _, cmds = dry_run(
        train_small.main,
        [
            "--arch",
            "resmlp_small",
            "--data",
            str(toy_data),
            "--cpu",
            "--save-dir",
            str(tmp_path),
            "--",
            "--lr",
            "0.0005",
            "--max-update",
            "7",
        ],
        capsys,
    )
    assert cmds[0][-4:] == ["--lr", "0.0005", "--max-update", "7"] and option(cmds[0], "--lr") == "0.0005"


def test_small_recipe_on_a_gpu_trains_fp16_with_fused_adam(toy_data, tmp_path):
    # fused_adam keeps fp32 masters itself, so the recipe skips FP16Optimizer with --memory-efficient-fp16.
    args = train_small.build_parser().parse_args(["--arch", "resmlp_small", "--data", str(toy_data)])
    args.save_dir = tmp_path
    cmd = train_small.train_command(args, "src", "tgt", use_gpu=True)
    assert option(cmd, "--optimizer") == "fused_adam"
    assert "--fp16" in cmd and "--memory-efficient-fp16" in cmd and option(cmd, "--distributed-world-size") == "1"
    assert "--memory-efficient-fp16" not in train_small.train_command(args, "src", "tgt", use_gpu=False)


def test_small_recipe_on_a_gpu_trains_without_cudnn_attention_unless_asked(toy_data, tmp_path):
    # Equal time must mean equal time: cuDNN attention re-plans every batch shape of fairseq's Transformer.
    parse = train_small.build_parser().parse_args
    args = parse(["--arch", "transformer_iwslt_de_en", "--data", str(toy_data), "--", "--max-update", "3"])
    args.save_dir = tmp_path
    gpu = train_small.train_command(args, "src", "tgt", use_gpu=True)
    assert gpu[:3] == [sys.executable, "-m", "fairseq_resmlp_tools.bench.train_no_cudnn_attention"]
    assert gpu[3] == str(toy_data / "data-bin") and gpu[-2:] == ["--max-update", "3"]
    assert Path(train_small.train_command(args, "src", "tgt", use_gpu=False)[0]).name == "fairseq-train"
    args.cudnn_attention = True
    kept = train_small.train_command(args, "src", "tgt", use_gpu=True)
    assert Path(kept[0]).name == "fairseq-train" and kept[1:] == gpu[3:]


def test_device_args():
    from fairseq_resmlp_tools.recipes.fairseq_args import device_args

    assert device_args(0) == device_args(0, memory_efficient=True) == ["--cpu"]
    assert device_args(2) == ["--fp16", "--distributed-world-size", "2"]
    assert device_args(1, memory_efficient=True) == [
        "--fp16",
        "--memory-efficient-fp16",
        "--distributed-world-size",
        "1",
    ]


def test_a_second_run_in_the_same_directory_is_refused(toy_data, tmp_path, capsys):
    (tmp_path / ".recipe").mkdir()
    fd = os.open(tmp_path / ".recipe" / "lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        code = run_cli(
            train_small.main, ["--arch", "resmlp_tiny", "--data", str(toy_data), "--cpu", "--save-dir", str(tmp_path)]
        )
    finally:
        os.close(fd)
    assert code == 1 and "another run of this recipe" in capsys.readouterr().err


def test_a_truncated_checkpoint_last_is_restored_from_the_newest_intact_checkpoint(tmp_path):
    import torch

    torch.save({"model": {"w": torch.ones(3)}}, tmp_path / "checkpoint_1_10.pt")
    time.sleep(0.01)
    torch.save({"model": {"w": torch.zeros(3)}}, tmp_path / "checkpoint2.pt")
    full = (tmp_path / "checkpoint2.pt").read_bytes()
    (tmp_path / "checkpoint_last.pt").write_bytes(full[: len(full) // 2])  # a copy cut short by kill -9
    assert not is_intact_checkpoint(tmp_path / "checkpoint_last.pt")
    assert "restored it from checkpoint2.pt" in repair_last_checkpoint(tmp_path)
    assert (tmp_path / "checkpoint_last.pt").read_bytes() == full
    assert repair_last_checkpoint(tmp_path) is None  # intact now: nothing to do


def _children(pid: int):
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc to find the trainer process")
def test_recipe_killed_with_sigkill_resumes_and_completes(toy_data, tmp_path):
    save = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "fairseq_resmlp_tools.recipes.small",
        "--arch",
        "resmlp_tiny",
        "--data",
        str(toy_data),
        "--cpu",
        "--save-dir",
        str(save),
        "--time-budget-minutes",
        "5",
        "--average-last",
        "2",
        "--log-interval",
        "5",
        "--",
        "--max-update",
        "60",
        "--save-interval-updates",
        "10",
        "--lr",
        "0.005",
        "--warmup-updates",
        "10",
        "--max-tokens",
        "1500",
        "--num-workers",
        "0",
    ]
    log = save / "train.log"
    first = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, cwd=ROOT, start_new_session=True
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not ((save / "checkpoint_last.pt").exists() and last_update(log) >= 25):
            assert first.poll() is None, "the recipe ended before it could be killed"
            time.sleep(0.02)  # a fast host runs many updates per poll: kill close to update 25
        assert last_update(log) >= 25, "training did not get going"
        trainers = _children(first.pid)
        assert trainers, "the recipe has no child process"
        first.send_signal(signal.SIGKILL)  # kill -9 of the recipe alone: its trainer must not outlive it
        first.wait(timeout=10)
        for pid in trainers:
            for _ in range(50):
                if not _alive(pid):
                    break
                time.sleep(0.1)
            assert not _alive(pid), "fairseq-train kept running after the recipe was killed"
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    killed_at = last_update(log)
    assert killed_at < 60 and not (save / "eval").exists()

    second = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    if second.returncode != 0 and "WeightsUnpickler" in second.stdout:
        pytest.fail(
            "resuming failed: torch.load(weights_only=True) refused checkpoint_last.pt, which holds the numpy "
            "arrays of --eval-bleu; fairseq_resmlp must allow-list them at import (torch.serialization."
            "add_safe_globals), with fairseq_resmlp._compat.fairseq_checkpoint_globals():\n" + second.stdout[-1500:]
        )
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-2000:]
    text = log.read_text(encoding="utf-8")
    assert re.search(r"Loaded checkpoint \S+checkpoint_last\.pt \(epoch \d+ @ [1-9]\d* updates\)", text), (
        "the re-run did not resume from checkpoint_last.pt"
    )
    assert "done training" in text and last_update(log) == 60
    result = json.loads((save / "eval" / "test_avg.json").read_text(encoding="utf-8"))
    assert result["counts"] == {"references": 13, "hypotheses": 13}
    assert (save / "training.png").exists()
    leftovers = [
        p.name for p in save.rglob("*") if p.name.startswith(".") and (".tmp" in p.name or p.name.endswith(".repair"))
    ]
    assert not leftovers

    # Once complete, the same command changes nothing.
    stamp = (save / "eval" / "test_avg.json").stat().st_mtime_ns
    third = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert third.returncode == 0 and third.stdout.count("done already, skipped") == 4
    assert (save / "eval" / "test_avg.json").stat().st_mtime_ns == stamp
