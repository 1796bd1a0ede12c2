import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

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


def _export_cache_folder(model) -> Optional[Path]:
    """Where ``export_or_reuse`` may keep ``model``'s export, or None when it must export: only with
    $RESMLP_EXPORT_CACHE set (scripts/mutation.sh sets it; the normal suite and CI never do), and only while the code
    that makes the export runs unmutated. Under mutmut every mutant of a file lives in the same source file, chosen at
    run time by $MUTANT_UNDER_TEST: a mutant of export.py or of the model does not change the key, so the cache is
    used only with no mutant ("" or unset) or a mutant of export_runtime.py (which reads exports, never makes them).
    Not in mutmut's "stats" run either, so that the tests stay associated with the export code they run."""
    root = os.environ.get("RESMLP_EXPORT_CACHE")
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    if not root or (mutant and not mutant.startswith("fairseq_resmlp.export_runtime.")):
        return None
    import fairseq

    import fairseq_resmlp

    # Keyed by what makes the export (the plugin's sources but export_runtime.py, torch, fairseq, the model's
    # options, dictionaries and weights), never by export_runtime.py: its mutants must all reuse one export.
    key = hashlib.sha256()
    package = Path(fairseq_resmlp.__file__).parent
    for path in sorted(package.rglob("*.py")):
        if path.name != "export_runtime.py":
            key.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    key.update(f"{torch.__version__} {fairseq.__version__} {model.cfg!r}".encode())
    for dictionary in (model.encoder.dictionary, model.decoder.dictionary):
        key.update("\0".join(dictionary.symbols).encode())
    for name, tensor in model.state_dict().items():
        key.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return Path(root) / key.hexdigest()[:32]


def _export_or_reuse(model, out_dir) -> dict:
    """``export_model(model, out_dir)`` (a torch.export of about 5 s), or, where ``_export_cache_folder`` allows it, a
    copy of the same export made earlier: mutation testing of export_runtime.py runs every test once per mutant, each
    in a fresh pytest session, so only a cache on disk spares the export (docs/testing.md)."""
    from fairseq_resmlp.export import export_model

    cached = _export_cache_folder(model)
    if cached is None:
        return export_model(model, out_dir)
    if not (cached / "model.json").is_file():
        staging = Path(f"{cached}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        export_model(model, staging)
        try:
            staging.rename(cached)  # whole folders only: model.json written last, the rename is atomic
        except OSError:  # another process cached it meanwhile
            shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(cached, out_dir, dirs_exist_ok=True)
    return json.loads((Path(out_dir) / "model.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def export_or_reuse():
    """``_export_or_reuse``: for the tests that export a model only to translate with it (and check what it wrote)."""
    return _export_or_reuse
