import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TOY_N_TEST = 21  # test sentences of the ``toy`` data: not a multiple of 8

# Two cores are shared by every test process; one thread per process keeps timings sane.
torch.set_num_threads(1)

# --compile-layers in-process: trace and differentiate as Inductor would, without generating C++ (tests/test_compiled.py).
import fairseq_resmlp.modules.compiled as _compiled  # noqa: E402

_compiled.COMPILE_BACKEND = "aot_eager"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real data (../shared/data or $RESMLP_DATA); skips the test when it is not there."""
    path = Path(os.environ.get("RESMLP_DATA", ROOT.parent / "shared" / "data"))
    if not (path / "README.md").exists():
        pytest.skip(f"shared data not found at {path} (set RESMLP_DATA to the folder with multi30k/, wmt14-mini/)")
    return path


# Fixtures that train a model or run fairseq commands (tens of seconds to minutes): tests using them are slow.
SLOW_FIXTURES = {"toy", "toy_data", "trained"}


@pytest.fixture(scope="session")
def spm_model(tmp_path_factory) -> Path:
    """A 40-piece SentencePiece model of made-up words, for the evaluation unit tests."""
    import sentencepiece as spm

    folder = tmp_path_factory.mktemp("spm")
    text = folder / "spm.txt"
    text.write_text("".join(f"word{i} other{i % 7} thing\n" for i in range(200)))
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(folder / "spm"), vocab_size=40, minloglevel=2, hard_vocab_limit=False
    )
    return folder / "spm.model"


@pytest.fixture(autouse=True)
def _no_logging_to_closed_streams():
    """A tool's logging.basicConfig (resmlp-interactive, fairseq_cli at import) binds the sys.stderr/stdout of the
    test that first ran it: pytest's capture stream, closed after that test. A later record then prints "--- Logging
    error ---" with a traceback into another test's output. Such handlers are dropped before every test (this
    matters when several pytest sessions share one process, as under mutmut)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        stream = getattr(handler, "stream", None)
        if stream is not None and getattr(stream, "closed", False):
            root.removeHandler(handler)
    yield


def pytest_collection_modifyitems(config, items):
    """Mark by fixture: ``slow`` for the tests on a trained toy model, ``needs_data`` for those on shared_data."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)
        if "shared_data" in names:
            item.add_marker(pytest.mark.needs_data)


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    """(data dir, save dir with checkpoint1.pt and checkpoint2.pt, training console log): the toy data in
    data_prep's layout and resmlp_tiny trained on it for two epochs (about 15 s), shared by the evaluation tests."""
    from helpers import tiny_train_args

    from fairseq_resmlp_tools.recipes.fairseq_args import label_smoothing
    from fairseq_resmlp_tools.toy_data import build_toy_data

    root = tmp_path_factory.mktemp("toy")
    data = build_toy_data(root / "data", n_train=2000, n_valid=20, n_test=TOY_N_TEST)
    save = root / "run"
    cmd = [
        str(Path(sys.executable).parent / "fairseq-train"),
        *tiny_train_args(data / "data-bin", "0.005"),
        *label_smoothing(0.1),
        "--max-tokens",
        "4096",
        "--max-update",
        "16",
        "--save-dir",
        str(save),
        "--cpu",
        "--log-format",
        "json",
        "--log-interval",
        "4",
        "--required-batch-size-multiple",
        "1",
        "--num-workers",
        "0",
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (save / "checkpoint1.pt").exists() and (save / "checkpoint2.pt").exists(), sorted(os.listdir(save))
    return data, save, proc.stdout


@pytest.fixture(scope="session")
def v1_data_dir(tmp_path_factory) -> Path:
    """A data directory holding the dictionaries of the 0.1.0 checkpoint fixture (tests/data/checkpoint_v1)."""
    import shutil

    from helpers import V1_CHECKPOINT_DIR

    data = tmp_path_factory.mktemp("v1-data")
    for name in ("dict.src.txt", "dict.tgt.txt"):
        shutil.copy(V1_CHECKPOINT_DIR / name, data / name)
    return data


@pytest.fixture
def export_calls(monkeypatch):
    """``export_model`` as the export command calls it, recorded instead of run (the model.json it would describe is
    returned, so the command's summary line is the real one). For the command's loading tests in test_export*.py."""
    import fairseq_resmlp.export as export_module

    calls = []

    def recording_export(model, out_dir):
        calls.append((model, out_dir))
        return export_module._describe(model)

    monkeypatch.setattr(export_module, "export_model", recording_export)
    return calls
