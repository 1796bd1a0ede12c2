"""The CPU comparison with CTranslate2 (fairseq_resmlp_tools.bench.ctranslate2_cpu) on tiny models: checkpoints in
fairseq's format, equal output lengths, the table and results.json; the CTranslate2 part only where it is installed."""

import importlib.util
import json

import pytest
import torch

from fairseq_resmlp_tools.bench import ctranslate2_cpu

HAS_CT2 = importlib.util.find_spec("ctranslate2") is not None
TINY = ["--preset", "tiny", "--threads", "1", "--sentences", "2", "--batch-sizes", "1,2"]


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_fairseq_systems_and_report(tmp_path, capsys):
    assert ctranslate2_cpu.main([*TINY, "--no-ctranslate2", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["systems"] == [
        "ResMLP fp32 (resmlp_tiny)",
        "ResMLP int8 (resmlp_tiny)",
        "Transformer fp32 (transformer_tiny)",
    ]
    for bs in ("1", "2"):
        for entry in report["results"][bs].values():
            assert entry["decoder_steps_per_sentence"] == 29  # 28 tokens + EOS, checked for every sentence
            assert entry["sentences_per_s"] > 0 and len(entry["repetitions"]) == 1
    printed = capsys.readouterr().out
    assert "ResMLP int8 / ResMLP fp32" in printed and "CTranslate2" not in printed.split("repetitions")[0]
    # The checkpoints are fairseq's format: fairseq's own loader reads them back.
    work = tmp_path / "work"
    model = ctranslate2_cpu.load_checkpoint(work / "resmlp" / "checkpoint.pt", work / "data-bin")
    assert type(model).__name__ == "ResMLPModel"


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    assert ctranslate2_cpu.main(["--batch-sizes", "1,x", "--no-ctranslate2", "--out", str(tmp_path)]) == 1
    assert "error: --batch-sizes" in capsys.readouterr().err
    assert ctranslate2_cpu.main(["--resmlp-arch", "nope", "--no-ctranslate2", "--out", str(tmp_path)]) == 1
    assert "error: --resmlp-arch nope" in capsys.readouterr().err


@pytest.mark.skipif(HAS_CT2, reason="checks the message shown when ctranslate2 is missing")
def test_missing_ctranslate2_says_how_to_install(tmp_path, capsys):
    assert ctranslate2_cpu.main([*TINY, "--out", str(tmp_path)]) == 1
    assert "pip install ctranslate2" in capsys.readouterr().err


@pytest.mark.skipif(
    not HAS_CT2, reason="ctranslate2 is not installed (CI does not install it; pip install ctranslate2)"
)
def test_ctranslate2_int8_same_lengths(tmp_path, capsys):
    assert ctranslate2_cpu.main([*TINY, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["systems"][-1] == ctranslate2_cpu.CT2_NAME
    assert (tmp_path / "work" / "ct2-int8" / "model.bin").exists()
    assert "ResMLP int8 / CTranslate2 int8" in capsys.readouterr().out
