import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

# Two cores are shared by every test process; one thread per process keeps timings sane.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real data (../shared/data or $RESMLP_DATA); skips the test when it is not there."""
    path = Path(os.environ.get("RESMLP_DATA", ROOT.parent / "shared" / "data"))
    if not (path / "README.md").exists():
        pytest.skip(f"shared data not found at {path} (set RESMLP_DATA to the folder with multi30k/, wmt14-mini/)")
    return path


# Fixtures that train a model or run fairseq commands (tens of seconds to minutes): tests using them are slow.
SLOW_FIXTURES = {"toy", "toy_data", "trained"}


def pytest_collection_modifyitems(config, items):
    """Mark by fixture: ``slow`` for the tests on a trained toy model, ``needs_data`` for those on shared_data."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)
        if "shared_data" in names:
            item.add_marker(pytest.mark.needs_data)


@pytest.fixture(scope="session")
def v1_data_dir(tmp_path_factory) -> Path:
    """A data directory holding the dictionaries of the 0.1.0 checkpoint fixture (tests/data/checkpoint_v1)."""
    import shutil

    from helpers import V1_CHECKPOINT_DIR

    data = tmp_path_factory.mktemp("v1-data")
    for name in ("dict.src.txt", "dict.tgt.txt"):
        shutil.copy(V1_CHECKPOINT_DIR / name, data / name)
    return data
