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

tokens = compare.token_counts  # sacreBLEU's 13a tokens per line, as the tool counts them

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
    """Two configurations x two seeds train at once; the choice is made on validation (configuration and length
    penalty), first with --validation-only (no test score exists afterwards), then resumed without it: nothing
    trains or is decoded again, both finals are tested once per seed with their length penalty and a paired
    bootstrap against the baseline, and the table, JSON and PNG are written."""
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
        "--lenpens",
        "1.0",
        "3.0",
        "--train-args",
        "--cpu",
    ]
    out = tmp_path / "out"
    proc = subprocess.run([*cmd[:-2], "--validation-only", *cmd[-2:]], capture_output=True, text=True, env=ENV,
                          cwd=ROOT, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "The test split was not scored (--validation-only)" in proc.stdout
    assert not list(out.glob("runs/*/eval/test_avg*")) and json.loads((out / "compare.json").read_text())["test"] == {}
    scored = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/eval/valid_avg.lenpen*.json")}
    assert len(scored) == 2 * 2 * 2  # configurations x seeds x length penalties
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/eval/valid_avg.lenpen*.json")} == scored
    record = json.loads((out / "compare.json").read_text())
    assert record["best"] == "toeplitz" and record["finals"] == ["base", "toeplitz"]
    for name in ("base", "toeplitz"):
        v = record["validation"][name]
        assert len(v["per_seed"]) == 2 and v["updates_mean"] == 12
        # --average-last 1: each run's one kept (and averaged) epoch checkpoint, shown in the table
        for seed, epochs in zip((1, 2), v["averaged_epochs"]):
            kept = sorted(p.name for p in (out / "runs" / f"{name}-s{seed}").glob("checkpoint[0-9]*.pt"))
            assert kept == [f"checkpoint{e}.pt" for e in epochs] and len(epochs) == 1
        assert sorted(v["per_lenpen"]) == ["1", "3"] and v["lenpen"] in (1.0, 3.0)
        assert v["bleu"] == v["per_lenpen"][f"{v['lenpen']:g}"]  # the chosen one is the best mean
        assert v["bleu"]["mean"] == max(m["mean"] for m in v["per_lenpen"].values())
        assert v["bleu_without_bp"] >= v["bleu"]["mean"]  # resmlp-evaluate records the brevity penalty, at most 1
        assert len(record["test"][name]["per_seed"]) == 2
        for seed in (1, 2):  # each run scored the validation split per length penalty, then the test split once
            ev = out / "runs" / f"{name}-s{seed}" / "eval"
            for lp in ("1", "3"):
                result = json.loads((ev / f"valid_avg.lenpen{lp}.json").read_text())
                assert result["split"] == "valid" and result["generation"]["lenpen"] == float(lp)
            test = json.loads((ev / "test_avg.json").read_text())
            assert test["split"] == "test" and test["generation"]["lenpen"] == v["lenpen"]
    assert len(record["test"]["toeplitz"]["paired_bootstrap"]) == 2
    assert (out / "compare.png").stat().st_size > 0
    table = (out / "compare.md").read_text()
    assert "| configuration | lenpen 1 | lenpen 3 |" in table
    assert "Best by validation, the baseline excluded: **toeplitz**, " in table
    # Each length penalty's hypotheses kept beside its score, and the length table made from the chosen ones.
    assert len(list(out.glob("runs/*/eval/valid_avg.lenpen*.hyp"))) == 2 * 2 * 2
    assert sum(b["sentences"] for b in record["source_buckets"]) == 12
    for name in ("base", "toeplitz"):
        assert len(record["validation"][name]["length_by_source"]) == len(record["source_buckets"])
        # Runaways per seed, from that seed's hypotheses at the chosen length penalty (a barely trained toy model
        # often decodes to the length limit, so most of them may be runaways).
        lenpen, references = record["validation"][name]["lenpen"], (data / "raw" / "valid.de").read_text().splitlines()
        expected = [
            compare.runaway_hypotheses(tokens(references), tokens(hyp.read_text().splitlines()))["count"]
            for hyp in (
                out / "runs" / f"{name}-s{seed}" / "eval" / f"valid_avg.lenpen{lenpen:g}.hyp" for seed in (1, 2)
            )
        ]
        assert record["validation"][name]["runaways"] == expected
    assert "by source length in words (sentences)" in table


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


def test_a_failed_test_phase_leaves_the_validation_table(tmp_path, monkeypatch):
    """The validation record is written before the test phase: a run that fails there (in session 6 a GPU out of
    memory in one test evaluation) leaves the choice and every validation number, and says the test phase is
    unfinished. The runs are faked: each 'validation run' writes the result the recipe would."""
    data = tmp_path / "data"
    (data / "data-bin").mkdir(parents=True)
    (data / "manifest.json").write_text(json.dumps({"languages": {"src": "en", "tgt": "de"}}))
    (data / "ref").mkdir()
    (data / "ref" / "valid.en").write_text("one two\none two three four five six\n")
    (data / "ref" / "valid.de").write_text("a b\na b c d e\n")
    bleu = {"base": 30.0, "mlp": 31.0}
    phases = []

    def fake_run_all(commands, logs):
        split = commands[next(iter(commands))][commands[next(iter(commands))].index("--split") + 1]
        phases.append(split)
        if split == "test":
            raise ToolError("failed: mlp-s1 (log: x)")
        for key, cmd in commands.items():
            run = Path(cmd[cmd.index("--save-dir") + 1])
            lenpen = float(cmd[cmd.index("--lenpen") + 1])
            (run / "eval").mkdir(parents=True, exist_ok=True)
            (run / "train.log").write_text('x | INFO | valid | {"valid_loss": "4.5", "valid_num_updates": "100"}\n')
            score = bleu[key.split("-")[0]] + lenpen
            sacrebleu = {"score": score, "length_ratio": lenpen - 0.1, "brevity_penalty": lenpen - 0.2}
            result = {
                "generation": {"lenpen": lenpen},
                "metrics": {"sacrebleu": sacrebleu},
                "files": {"hypotheses": str(run / "h")},
                "references": str(data / "ref" / "valid.de"),
            }
            (run / "eval" / "valid_avg.json").write_text(json.dumps(result))
            # Hypotheses one word shorter than the references at lenpen 0.5, as long at 1.0.
            (run / "h").write_text("a b\n" + ("a b c d e\n" if lenpen == 1.0 else "a b c d\n"))

    monkeypatch.setattr(compare, "run_all", fake_run_all)
    monkeypatch.setattr(compare, "plot", lambda record, path: path.write_bytes(b"png"))
    argv = ["--data", str(data), "--out", str(tmp_path / "out"), "--config", "base=resmlp_tiny", "--config",
            "mlp=resmlp_tiny --token-mixing-matrix full", "--baseline", "base", "--lenpens", "1.0", "0.5"]  # fmt: skip
    with pytest.raises(ToolError, match="failed: mlp-s1"):
        compare.compare(compare.build_parser().parse_args(argv))
    assert phases == ["valid", "valid", "test"]
    record = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert record["best"] == "mlp" and record["test"] == {} and record["finals"] == ["base", "mlp"]
    assert record["validation"]["mlp"]["lenpen"] == 1.0 and record["validation"]["mlp"]["per_seed"] == [32.0, 32.0]
    assert record["validation"]["base"]["per_lenpen"]["0.5"]["mean"] == 30.5
    assert record["validation"]["mlp"]["length_ratio"] == pytest.approx(0.9)  # the chosen lenpen's, not 0.5's
    assert record["validation"]["mlp"]["bleu_without_bp"] == pytest.approx(32.0 / 0.8)  # likewise
    table = (tmp_path / "out" / "compare.md").read_text()
    assert "| mlp | 2 | 32.00 |" in table and "The test phase has not finished" in table
    assert "| 1 | 0.900 | 40.00 | 4.500 |" in table  # lenpen, length ratio, BLEU / BP, valid loss
    assert record["validation"]["mlp"]["averaged_epochs"] == [[], []]  # faked runs: no checkpoints
    # The length table uses the chosen length penalty's kept hypotheses (mlp: 1.0, base: 1.0 as well).
    assert record["source_buckets"] == [{"words": [2, 5], "sentences": 1}, {"words": [6, 6], "sentences": 1}]
    assert record["validation"]["mlp"]["length_by_source"] == [1.0, 1.0]
    assert record["validation"]["mlp"]["runaways"] == [0, 0]
    assert record["validation"]["mlp"]["length_ratio_without_runaways"] == 1.0
    assert "| configuration | 2-5 (1) | 6-6 (1) |" in table and "| mlp | 1.000 | 1.000 | 0, 0 | 1.000 |" in table


def test_length_by_source_counts_sacrebleus_tokens_per_bucket():
    sources = ["a b", "a b c", "a b c d e f g h"]
    references = ["Ein Hund.", "Zwei Hunde laufen.", "Drei Hunde laufen schnell über die Wiese."]
    hypotheses = ["Ein Hund.", "Zwei Hunde.", "Drei Hunde laufen schnell."]
    # 13a tokens: "Hund." is 2 (the period split off): 3/3, 3/4 for the first bucket together, then 5/8.
    ratios = compare.length_by_source(sources, tokens(references), tokens(hypotheses), [[1, 3], [4, 9]])
    assert ratios == [pytest.approx(6 / 7), pytest.approx(5 / 8)]
    assert compare.length_by_source(sources, tokens(["", "", "x"]), tokens(hypotheses), [[1, 3], [8, 8]]) == [
        None,
        pytest.approx(5),
    ]


def test_runaway_hypotheses_are_over_twice_their_reference_and_10_tokens_longer():
    references = ["Ein Hund läuft.", "Zwei Hunde.", "a b c d e f g h i j k l", "x"]
    hypotheses = [
        "Ein Hund läuft " + "nur " * 20 + ".",  # 4 reference tokens, 24: a runaway
        "Zwei Hunde laufen über die Wiese .",  # 3 against 7: over twice, but only 4 tokens longer
        "a b c d e f g h i j k l " * 2 + "m",  # 12 against 25: twice + 1, 13 longer: a runaway
        "x",
    ]
    found = compare.runaway_hypotheses(tokens(references), tokens(hypotheses))
    assert found == {"count": 2, "ratio_without": pytest.approx((7 + 1) / (3 + 1))}
    # 2x exactly (and 10 longer) is not a runaway; an empty reference with a long hypothesis is.
    assert (
        compare.runaway_hypotheses(tokens(["a b c d e f g h i j"]), tokens(["a b c d e f g h i j " * 2]))["count"] == 0
    )
    assert compare.runaway_hypotheses(tokens([""]), tokens(["w " * 10])) == {"count": 1, "ratio_without": None}


def test_validation_lengths_per_configuration_from_the_kept_hypotheses(tmp_path):
    """Length by source, runaways and the ratio without them, from each seed's kept hypotheses at the chosen length
    penalty; '-' material (None) for older runs, for a seed whose other references are empty; bad files by name."""
    import argparse

    data, out = tmp_path / "data", tmp_path / "out"
    (data / "ref").mkdir(parents=True)
    (data / "ref" / "valid.en").write_text("one two\none two three\none two three four five six\n")
    refs = data / "ref" / "valid.de"
    refs.write_text("a b\na b c\na b c d e f\n")
    empty_refs = tmp_path / "empty.de"
    empty_refs.write_text("\n\n\n")
    args = argparse.Namespace(data=data, out=out, valid_split="valid", seeds=[1, 2])

    def kept(name, seed, lenpen, hypotheses, references=refs):
        run = out / "runs" / f"{name}-s{seed}"
        result = {
            "metrics": {"sacrebleu": {"score": 30.0}},
            "files": {"hypotheses": "h"},
            "references": str(references),
        }
        compare.lenpen_score_file(run, "valid", lenpen).parent.mkdir(parents=True, exist_ok=True)
        compare.lenpen_score_file(run, "valid", lenpen).write_text(json.dumps(result))
        compare.lenpen_hypotheses_file(run, "valid", lenpen).write_text(hypotheses)

    configs = {n: compare.Config(n, "resmlp_tiny", []) for n in ("a", "old", "empty")}
    kept("a", 1, 1.5, "a b\n" + "a " * 20 + "\na b c d e f\n")  # the second a runaway (20 against 3)
    kept("a", 2, 1.5, "a\na b c\na b c\n")
    kept("a", 1, 1.0, "a b\na b c\na b c d e f\n")  # another length penalty: not the chosen one
    kept("a", 2, 1.0, "a b\na b c\na b c d e f\n")
    kept("empty", 1, 1.0, "x " * 12 + "\n\n\n", references=empty_refs)  # no reference words but the runaway's
    kept("empty", 2, 1.0, "a b\na b c\na b c d e f\n")
    validation = {"a": {"lenpen": 1.5}, "old": {"lenpen": 1.0}, "empty": {"lenpen": 1.0}}  # "old": nothing kept
    buckets = compare.validation_lengths(args, configs, validation, "en")
    assert buckets == [{"words": [2, 2], "sentences": 1}, {"words": [3, 5], "sentences": 1},
                       {"words": [6, 6], "sentences": 1}]  # fmt: skip
    a = validation["a"]
    assert a["length_by_source"] == [pytest.approx(0.75), pytest.approx((20 / 3 + 3 / 3) / 2), pytest.approx(0.75)]
    assert a["runaways"] == [1, 0]
    assert a["length_ratio_without_runaways"] == pytest.approx((8 / 8 + 7 / 11) / 2)
    assert validation["old"]["length_by_source"] is None and validation["old"]["runaways"] is None
    assert validation["old"]["length_ratio_without_runaways"] is None
    assert validation["empty"]["runaways"] == [1, 0]
    assert validation["empty"]["length_ratio_without_runaways"] is None  # seed 1 has no other reference words

    kept("a", 2, 1.5, "a\na b c\n")  # a line short
    with pytest.raises(
        ToolError, match=r"valid.en has 3 lines, .*valid.de 3 and .*lenpen1.5.hyp 2: they must be the same"
    ):
        compare.validation_lengths(args, {"a": configs["a"]}, {"a": {"lenpen": 1.5}}, "en")
    kept("a", 2, 1.5, "a\na b c\na b c\n", references=tmp_path)  # a folder: unreadable
    with pytest.raises(ToolError, match="the validation references cannot be read"):
        compare.validation_lengths(args, {"a": configs["a"]}, {"a": {"lenpen": 1.5}}, "en")
    kept("a", 2, 1.5, "a\na b c\na b c\n")
    compare.lenpen_hypotheses_file(out / "runs" / "a-s2", "valid", 1.5).write_bytes(b"\xff\xfe\n")
    with pytest.raises(ToolError, match="kept hypotheses cannot be read"):
        compare.validation_lengths(args, {"a": configs["a"]}, {"a": {"lenpen": 1.5}}, "en")


def test_source_buckets_cut_at_quartiles_and_keep_the_longest_tenth_apart():
    sources = [" ".join("w" * n) for n in range(1, 101)]  # 1 to 100 words, once each
    assert compare.source_buckets(sources) == [[1, 25], [26, 50], [51, 75], [76, 90], [91, 100]]
    # Equal cuts merge: every source 3 words long but one of 9.
    assert compare.source_buckets(["w w w"] * 9 + [" ".join("w" * 9)]) == [[3, 8], [9, 9]]
    assert compare.source_buckets(["w"] * 4) == [[1, 1]]
    assert compare.source_buckets([]) == []


def test_length_table_shows_older_runs_without_kept_hypotheses_as_dashes():
    spread = {"mean": 30.0, "min": 30.0, "max": 30.0, "std": 0.0}
    row = {"bleu": spread, "per_seed": [30.0], "lenpen": 1.0, "valid_loss_mean": 4.0, "updates_mean": 100}
    record = {"title": "t", "baseline": "a", "best": "b", "lenpens": [1.0], "test_split": None,
              "source_buckets": [{"words": [1, 9], "sentences": 5}, {"words": [10, 30], "sentences": 2}],
              "validation": {"a": {**row, "length_by_source": [0.9876, None], "runaways": [3, 0],
                                   "length_ratio_without_runaways": 0.9712},
                             "b": {**row, "length_by_source": None}}}  # fmt: skip
    table = compare.format_tables(record)
    header = "| configuration | 1-9 (5) | 10-30 (2) | runaways | ratio without them |\n|---|---:|---:|---:|---:|\n"
    assert header + "| a | 0.988 | - | 3, 0 | 0.971 |\n| b | - | - | - | - |" in table
    assert "more than 2x their reference's length and at least 10 tokens longer" in table
    assert "'-': no length (runs scored by a resmlp-compare older than this table" in table  # said, not left to guess
    full = {"length_by_source": [0.9, 1.0], "runaways": [0], "length_ratio_without_runaways": 0.95}
    record["validation"] = {"a": {**row, **full}, "b": {**row, **full}}
    assert "'-'" not in compare.format_tables(record)
    record["validation"]["b"] = {**row, **full, "length_ratio_without_runaways": None}  # empty references
    assert "'-'" in compare.format_tables(record)
    del record["source_buckets"]  # a record written before the table existed
    assert "by source length" not in compare.format_tables(record)


def test_table_shows_the_averaged_epochs_and_says_when_they_differ():
    def config(epochs):
        spread = {"mean": 30.0, "min": 30.0, "max": 30.0, "std": 0.0}
        return {"bleu": spread, "per_seed": [30.0], "lenpen": 1.0, "valid_loss_mean": 4.0, "updates_mean": 100,
                "averaged_epochs": epochs, "length_ratio": 0.9734, "bleu_without_bp": 30.8271}  # fmt: skip

    record = {"title": "t", "baseline": "a", "best": "b", "lenpens": [1.0], "test_split": None,
              "validation": {"a": config([[4, 8, 12], [6, 8, 10]]), "b": config([[12, 16, 20]])}}  # fmt: skip
    table = compare.format_tables(record)
    assert "| a (baseline) | 1 | 30.00 | 30.00-30.00 | 30.00 | 1 | 0.973 | 30.83 | 4.000 | 100 | 4-12, 6-10 |" in table
    assert "| b | 1 | 30.00 | 30.00-30.00 | 30.00 | 1 | 0.973 | 30.83 | 4.000 | 100 | 12-20 |" in table
    assert "| length ratio | BLEU / BP | valid loss |" in table
    assert "BLEU / BP: BLEU without its brevity penalty" in table
    assert "The runs averaged different epochs" in table
    older = {**config([[12, 16, 20]]), "length_ratio": None}
    del older["bleu_without_bp"]  # a record written before the column existed
    record["validation"] = {"a": config([[12, 16, 20]]), "b": older}
    table = compare.format_tables(record)
    assert "The runs averaged different epochs" not in table
    assert "| b | 1 | 30.00 | 30.00-30.00 | 30.00 | 1 | - | - | 4.000 | 100 | 12-20 |" in table  # older results


def test_best_line_says_where_the_best_stands_against_the_baseline():
    def record(base, best):
        spread = lambda m: {"bleu": {"mean": m}}  # noqa: E731
        return {
            "baseline": "transformer",
            "best": "mlp",
            "validation": {"transformer": spread(base), "mlp": spread(best)},
        }

    assert compare.best_line(record(40.01, 38.45)) == (
        "Best by validation, the baseline excluded: **mlp**, 38.45 against the baseline transformer's 40.01 (-1.56)."
    )
    assert compare.best_line(record(39.29, 39.5)).endswith("39.50 against the baseline transformer's 39.29 (+0.21).")
    assert compare.best_line(record(30.0, 30.0)).endswith("(+0.00).")


def test_bleu_without_brevity_penalty_divides_by_a_known_positive_penalty_only():
    assert compare.bleu_without_brevity_penalty(38.56, 0.946) == pytest.approx(40.7611, abs=1e-4)
    assert compare.bleu_without_brevity_penalty(40.0, 1.0) == 40.0
    assert compare.bleu_without_brevity_penalty(30.0, None) is None  # older resmlp-evaluate results
    assert compare.bleu_without_brevity_penalty(0.0, 0.0) is None  # empty hypotheses: BLEU 0, no precision part


def test_load_score_reads_the_brevity_penalty_and_tolerates_older_results(tmp_path):
    def write(sacrebleu):
        path = tmp_path / "valid_avg.json"
        result = {"metrics": {"sacrebleu": sacrebleu}, "files": {"hypotheses": "h"}, "references": "r"}
        path.write_text(json.dumps(result))
        return path

    scored = compare.load_score(write({"score": 38.0, "length_ratio": 0.95, "brevity_penalty": 0.95}))
    assert scored["bleu"] == 38.0 and scored["length_ratio"] == 0.95
    assert scored["bleu_without_bp"] == pytest.approx(40.0)
    scored = compare.load_score(write({"score": 38.0}))
    assert scored["length_ratio"] is None and scored["bleu_without_bp"] is None
    with pytest.raises(ToolError, match="valid_avg.json: no readable evaluation result"):
        compare.load_score(write({"length_ratio": 0.95}))


def test_choose_lenpen_takes_the_best_mean_and_the_first_of_equals():
    assert compare.choose_lenpen({1.0: [30.0, 32.0], 1.3: [31.5, 31.0], 1.6: [29.0, 35.0]}) == 1.6
    assert compare.choose_lenpen({1.0: [30.0, 32.0], 1.3: [32.0, 30.0]}) == 1.0


def test_keep_lenpen_score_refuses_a_result_decoded_with_another_lenpen(tmp_path):
    (tmp_path / "eval").mkdir()
    hyp = tmp_path / "eval" / "valid_avg.hyp"
    result = {"generation": {"lenpen": 1.0}, "files": {"hypotheses": str(hyp)}}
    (tmp_path / "eval" / "valid_avg.json").write_text(json.dumps(result))
    with pytest.raises(ToolError, match="decoded with --lenpen 1.0, expected 1.3"):
        compare.keep_lenpen_score(tmp_path, "valid", 1.3)
    with pytest.raises(ToolError, match=f"its hypotheses {hyp} cannot be read"):
        compare.keep_lenpen_score(tmp_path, "valid", 1.0)
    assert not (tmp_path / "eval" / "valid_avg.lenpen1.json").exists()
    hyp.write_text("Ein Hund.\n", encoding="utf-8")
    compare.keep_lenpen_score(tmp_path, "valid", 1.0)
    kept = json.loads((tmp_path / "eval" / "valid_avg.lenpen1.json").read_text())
    assert kept["generation"]["lenpen"] == 1.0
    # The hypotheses are kept too (the next length penalty overwrites valid_avg.hyp), and the kept result names them.
    assert kept["files"]["hypotheses"] == str(tmp_path / "eval" / "valid_avg.lenpen1.hyp")
    hyp.write_text("Eine Katze.\n", encoding="utf-8")
    assert (tmp_path / "eval" / "valid_avg.lenpen1.hyp").read_text(encoding="utf-8") == "Ein Hund.\n"
    with pytest.raises(ToolError, match="no readable evaluation result"):
        compare.keep_lenpen_score(tmp_path, "test", 1.0)


def test_a_missing_source_file_is_named(tmp_path):
    args = compare.build_parser().parse_args(
        ["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--config", "a=resmlp_tiny", "--baseline", "a"]
    )
    with pytest.raises(ToolError, match=r"raw/valid\.en: the validation sources cannot be read"):
        compare.validation_lengths(args, {}, {}, "en")


def test_repeated_lenpens_are_refused(capsys):
    argv = ["--data", "d", "--out", "o", "--config", "a=resmlp_tiny", "--baseline", "a", "--lenpens", "1", "1"]
    assert run_cli(compare.main, argv) == 1
    assert "--lenpens must be distinct" in capsys.readouterr().err
