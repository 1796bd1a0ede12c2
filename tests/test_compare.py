"""resmlp-compare (equal-time comparison, choice on validation, finals tested once) and resmlp-carve (validation and
test sets carved out of one corpus, disjoint by source sentence)."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep import carve
from fairseq_resmlp_tools._cli import ToolError, run_cli
from fairseq_resmlp_tools.recipes import compare
from fairseq_resmlp_tools.toy_data import build_toy_data

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


# --- resmlp-carve -----------------------------------------------------------------------------------------


def write_corpus(folder: Path, pairs, gz: bool = False):
    opener = gzip.open if gz else open
    suffix = ".gz" if gz else ""
    paths = []
    for side, lang in ((0, "en"), (1, "de")):
        path = folder / f"corpus.{lang}{suffix}"
        with opener(path, "wt", encoding="utf-8") as f:
            f.write("".join(p[side] + "\n" for p in pairs))
        paths.append(path)
    return paths


@pytest.mark.parametrize("gz", [False, True])
def test_carve_keeps_every_pair_and_no_source_sentence_in_two_splits(tmp_path, gz):
    # 300 source sentences, one to three translations each (as Tatoeba lists them)
    pairs = [(f"sentence {i % 300} .", f"Satz {i} .") for i in range(600)]
    src, tgt = write_corpus(tmp_path, pairs, gz)
    argv = ["--src-file", str(src), "--tgt-file", str(tgt), "--src", "en", "--tgt", "de"]
    assert run_cli(carve.main, [*argv, "--valid", "50", "--test", "40", "--out", str(tmp_path / "a")]) == 0
    out = {}
    for split in carve.SPLITS:
        en = (tmp_path / "a" / f"{split}.en").read_text(encoding="utf-8").splitlines()
        de = (tmp_path / "a" / f"{split}.de").read_text(encoding="utf-8").splitlines()
        assert len(en) == len(de)
        out[split] = list(zip(en, de))
    assert sorted(sum(out.values(), [])) == sorted(pairs)  # nothing lost, nothing duplicated
    assert 50 <= len(out["valid"]) < 50 + 3 and 40 <= len(out["test"]) < 40 + 3  # whole groups, just enough
    sources = {split: {s for s, _ in v} for split, v in out.items()}
    assert not sources["train"] & sources["valid"] and not sources["train"] & sources["test"]
    assert not sources["valid"] & sources["test"]
    record = json.loads((tmp_path / "a" / "carve.json").read_text())
    assert record["counts"] == {split: len(v) for split, v in out.items()} and str(src) in record["inputs"]
    # Same seed, same split; another seed, another one.
    run_cli(carve.main, [*argv, "--valid", "50", "--test", "40", "--out", str(tmp_path / "b")])
    run_cli(carve.main, [*argv, "--valid", "50", "--test", "40", "--seed", "2", "--out", str(tmp_path / "c")])
    assert (tmp_path / "b" / "test.de").read_bytes() == (tmp_path / "a" / "test.de").read_bytes()
    assert (tmp_path / "c" / "test.de").read_bytes() != (tmp_path / "a" / "test.de").read_bytes()


def test_carve_bad_input_names_the_file(tmp_path, capsys):
    src, tgt = write_corpus(tmp_path, [("a", "b"), ("c", "d"), ("e", "f")])
    tgt.write_text("b\nd\n", encoding="utf-8")
    argv = ["--src-file", str(src), "--tgt-file", str(tgt), "--src", "en", "--tgt", "de", "--out", str(tmp_path / "o")]
    assert run_cli(carve.main, [*argv, "--valid", "1", "--test", "1"]) == 1
    assert f"{tgt} has 2 lines but {src} has 3" in capsys.readouterr().err
    tgt.write_text("b\nd\nf\n", encoding="utf-8")
    assert run_cli(carve.main, [*argv, "--valid", "2", "--test", "2"]) == 1
    assert "too few for --valid 2 and --test 2" in capsys.readouterr().err
    assert run_cli(carve.main, [*argv[:-2], "--out", str(tmp_path / "p"), "--src-file", str(tmp_path / "nope")]) == 1
    assert "nope: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.de"
    bad.write_bytes(b"b\n\xff\xfe\nf\n")
    assert run_cli(carve.main, [*argv[:2], "--tgt-file", str(bad), *argv[4:], "--valid", "1", "--test", "1"]) == 1
    assert f"{bad}: line 2: invalid UTF-8" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# --- resmlp-compare ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("noarch", "expected NAME=ARCH"),
        ("x=", "expected NAME=ARCH"),
        ("x=resmlp_huge", "unknown architecture 'resmlp_huge'"),
        ("a b=resmlp_tiny", "letters, digits"),
    ],
)
def test_config_errors(text, message):
    with pytest.raises(ToolError, match=message):
        compare.Config.parse(text)


def test_compare_end_to_end_on_the_cpu(tmp_path):
    """Two configurations x two seeds train at once; the choice is made on validation, both finals are tested once
    per seed with a paired bootstrap against the baseline, and the table, JSON and PNG are written."""
    data = build_toy_data(tmp_path / "data", n_train=600, n_valid=12, n_test=11)
    short = "--max-update 12 --lr 0.005 --warmup-updates 4 --num-workers 0 --max-tokens 1500"
    cmd = [
        sys.executable,
        "-m",
        "fairseq_resmlp_tools.recipes.compare",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "out"),
        "--minutes",
        "2",
        "--save-interval",
        "1",
        "--average-last",
        "1",
        "--bootstrap-samples",
        "50",
        "--config",
        f"base=resmlp_tiny {short}",
        "--config",
        f"toeplitz=resmlp_tiny --token-mixing-matrix toeplitz {short}",
        "--baseline",
        "base",
        "--train-args",
        "--cpu",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert record["best"] == "toeplitz" and record["finals"] == ["base", "toeplitz"]
    for name in ("base", "toeplitz"):
        assert len(record["validation"][name]["per_seed"]) == 2
        assert record["validation"][name]["updates_mean"] == 12
        assert len(record["test"][name]["per_seed"]) == 2
    assert len(record["test"]["toeplitz"]["paired_bootstrap"]) == 2
    for seed in (1, 2):  # each run scored the validation split, then the test split
        run = tmp_path / "out" / "runs" / f"toeplitz-s{seed}"
        assert json.loads((run / "eval" / "valid_avg.json").read_text())["split"] == "valid"
        assert json.loads((run / "eval" / "test_avg.json").read_text())["split"] == "test"
    assert (tmp_path / "out" / "compare.png").stat().st_size > 0
    assert "Best by validation: **toeplitz**" in (tmp_path / "out" / "compare.md").read_text()


def test_compare_names_a_failed_run_and_its_log(tmp_path):
    data = build_toy_data(tmp_path / "data", n_train=200, n_valid=8, n_test=8)
    proc = subprocess.run(
        [
            sys.executable, "-m", "fairseq_resmlp_tools.recipes.compare", "--data", str(data), "--out",
            str(tmp_path / "out"), "--seeds", "1", "--config", "a=resmlp_tiny --no-such-option",
            "--config", "b=resmlp_tiny --no-such-option", "--baseline", "a", "--train-args", "--cpu",
        ],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "failed: a-s1 (log: " in proc.stderr and "a-s1.valid.log" in proc.stderr
    assert "Traceback" not in proc.stderr
