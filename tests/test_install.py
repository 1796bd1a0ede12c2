"""A non-editable install works on its own: every console script answers --help and real commands run from it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"])


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(target folder, its bin/, the environment that makes the target importable) after ``pip install --target``."""
    target = tmp_path_factory.mktemp("install") / "site"
    # A copy of the source, so that the build leaves nothing (build/, *.egg-info) in the checkout.
    src = tmp_path_factory.mktemp("src")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-compile",
            "-q",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(_copy_sources(src)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return target, target / "bin", env


def _copy_sources(dest: Path) -> Path:
    """The files git knows (tracked or not ignored), copied to ``dest``."""
    import shutil

    names = (
        subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, names):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def run(installed, name, *args, cwd):
    _, bin_dir, env = installed
    return subprocess.run(
        [str(bin_dir / name), *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def test_every_console_script_is_installed_and_answers_help(installed, tmp_path):
    assert len(SCRIPTS) >= 12 and all(name.startswith("resmlp-") for name in SCRIPTS)
    for name in SCRIPTS:
        proc = run(installed, name, "--help", cwd=tmp_path)
        assert proc.returncode == 0 and "usage:" in proc.stdout, f"{name} --help:\n{proc.stderr[-2000:]}"


def test_user_dir_is_the_installed_plugin(installed, tmp_path):
    target, _, env = installed
    proc = run(installed, "resmlp-user-dir", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    user_dir = Path(proc.stdout.strip())
    assert user_dir == (target / "fairseq_resmlp").resolve() and (user_dir / "__init__.py").is_file()
    same = subprocess.run(
        [sys.executable, "-m", "fairseq_resmlp"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert Path(same.stdout.strip()).resolve() == user_dir


def test_installed_average_runs_on_tiny_checkpoints(installed, tmp_path):
    for i in range(2):
        torch.save(
            {"model": {"w": torch.full((3,), float(i))}, "cfg": {"model": {"_name": "resmlp"}}},
            tmp_path / f"checkpoint{i + 1}.pt",
        )
    proc = run(
        installed,
        "resmlp-average",
        "--inputs",
        tmp_path,
        "--num-epoch-checkpoints",
        "2",
        "--output",
        tmp_path / "avg.pt",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert torch.equal(torch.load(tmp_path / "avg.pt", weights_only=True)["model"]["w"], torch.full((3,), 0.5))
    missing = run(installed, "resmlp-evaluate", tmp_path / "nope.pt", "--data", tmp_path, cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.startswith("error: ")
