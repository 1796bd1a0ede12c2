"""resmlp-evaluate, resmlp-average and resmlp-plot (fairseq_resmlp_tools.evaluate, .average, .plot).

The session fixture ``toy`` (conftest.py) builds a toy data directory in data_prep's layout (21 test sentences:
not a multiple of 8) and trains resmlp_tiny for two epochs on the CPU (about 15 s); the rest reuses it.
"""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sacrebleu.metrics import BLEU, CHRF

from fairseq_resmlp_tools import average as average_checkpoints
from fairseq_resmlp_tools import evaluate, tokenized_bleu
from fairseq_resmlp_tools import plot as plot_training
from fairseq_resmlp_tools._cli import ToolError, run_cli

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
N_TEST = 21
# PYTHONPATH: the children test this checkout, whichever copy the environment has installed.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def run_script(name: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    """Run a tool as its console script does (``python -m fairseq_resmlp_tools.NAME``)."""
    proc = subprocess.run(
        [sys.executable, "-m", f"fairseq_resmlp_tools.{name}", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


# --- metrics ---------------------------------------------------------------------------------------------


def test_compound_split_matches_the_perl_rule():
    # perl -ple 's{(\S)-(\S)}{$1 ##AT##-##AT## $2}g' scans without overlaps: the second hyphen of a-b-c stays.
    assert tokenized_bleu.compound_split("rot-weißes T-Shirt") == "rot ##AT##-##AT## weißes T ##AT##-##AT## Shirt"
    assert tokenized_bleu.compound_split("a-b-c") == "a ##AT##-##AT## b-c"
    assert tokenized_bleu.compound_split("E-Mail-Postfach") == "E ##AT##-##AT## Mail ##AT##-##AT## Postfach"
    assert tokenized_bleu.compound_split("x - y, -z, z-") == "x - y, -z, z-"


def test_score_reports_length_ratio_and_brevity_penalty_as_numbers():
    # 2 of 5 reference tokens (13a): ratio 0.4, BP exp(1 - 1/0.4); a longer hypothesis has no penalty.
    short = evaluate.score(["Der Hund"], ["Der Hund läuft schnell ."], "de", "13a")["sacrebleu"]
    assert short["length_ratio"] == pytest.approx(0.4) and short["brevity_penalty"] == pytest.approx(math.exp(-1.5))
    long = evaluate.score(["Der Hund läuft sehr schnell ."], ["Der Hund läuft ."], "de", "13a")["sacrebleu"]
    assert long["length_ratio"] == pytest.approx(1.5) and long["brevity_penalty"] == 1.0


def test_scores_equal_sacrebleu_api_on_fixed_files():
    hyps = (DATA / "scoring.hyp.de").read_text(encoding="utf-8").splitlines()
    refs = (DATA / "scoring.ref.de").read_text(encoding="utf-8").splitlines()
    result = evaluate.score(hyps, refs, "de", "13a")

    bleu = BLEU()
    expected = bleu.corpus_score(hyps, [refs])
    assert result["sacrebleu"]["score"] == expected.score
    assert result["sacrebleu"]["brevity_penalty"] == expected.bp
    assert result["sacrebleu"]["length_ratio"] == expected.sys_len / expected.ref_len
    assert result["sacrebleu"]["signature"] == str(bleu.get_signature())
    assert "tok:13a" in result["sacrebleu"]["signature"] and "case:mixed" in result["sacrebleu"]["signature"]
    chrf = CHRF()
    assert result["chrf"]["score"] == chrf.corpus_score(hyps, [refs]).score

    # Tokenized + compound-split BLEU: the text as the old Moses + compound_split_bleu.sh pipeline sees it,
    # written out by hand for the lines with compounds, then plain BLEU on the tokens.
    tokenized = {
        2: (
            "Die Frau trägt ein rot ##AT##-##AT## weißes Shirt und eine Sonnenbrille .",
            "Die Frau trägt ein rot ##AT##-##AT## weißes T ##AT##-##AT## Shirt und eine Sonnenbrille .",
        ),
        7: ("Ein Mann im E ##AT##-##AT## Mail ##AT##-##AT## Postfach : 5,5 % mehr Nachrichten .",) * 2,
    }
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tok = Tokenizer13a()
    tok_hyps = [tokenized[i][0] if i in tokenized else tok(h) for i, h in enumerate(hyps)]
    tok_refs = [tokenized[i][1] if i in tokenized else tok(r) for i, r in enumerate(refs)]
    expected = BLEU(tokenize="none", force=True).corpus_score(tok_hyps, [tok_refs]).score
    assert result["tokenized_bleu"]["score"] == pytest.approx(expected, abs=1e-9)
    assert result["tokenized_bleu"]["score"] != result["sacrebleu"]["score"]
    assert result["tokenized_bleu"]["label"] == "tokenized BLEU (sacreBLEU 13a, Moses-like, compound split)"


def test_identical_text_scores_100():
    refs = (DATA / "scoring.ref.de").read_text(encoding="utf-8").splitlines()
    result = evaluate.score(refs, refs, "de")
    assert result["sacrebleu"]["score"] == pytest.approx(100.0)
    assert result["tokenized_bleu"]["score"] == pytest.approx(100.0)


# --- counts ----------------------------------------------------------------------------------------------


def test_order_hypotheses_sorts_by_id_and_refuses_wrong_counts():
    assert evaluate.order_hypotheses([(2, "c"), (0, "a"), (1, "b")], 3, "x") == ["a", "b", "c"]
    with pytest.raises(ToolError, match=r"no hypothesis for 1 sentence\(s\) \(ids 1\)"):
        evaluate.order_hypotheses([(0, "a"), (2, "c")], 3, "x")
    with pytest.raises(ToolError, match=r"beyond the 3 references \(ids 3\)"):
        evaluate.order_hypotheses([(0, "a"), (1, "b"), (2, "c"), (3, "d")], 3, "x")
    with pytest.raises(ToolError, match=r"several hypotheses for sentence id\(s\) 1"):
        evaluate.order_hypotheses([(0, "a"), (1, "b"), (1, "b"), (2, "c")], 3, "x")


def _fake_generate_output(path: Path, spm_model: Path, hyps, order):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    lines = []
    for i in order:  # fairseq prints in batch order, not test-set order
        pieces = " ".join(sp.encode(hyps[i], out_type=str))
        lines += [f"S-{i}\t{pieces}", f"H-{i}\t-0.5\t{pieces}", f"D-{i}\t-0.5\t{pieces}", f"P-{i}\t-0.1 -0.2"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_scoring_an_existing_generate_output_decodes_and_reorders(toy, tmp_path, capsys):
    data, _, _ = toy
    refs = (data / "raw" / "test.de").read_text(encoding="utf-8").splitlines()
    hyps = list(refs)
    hyps[3] = "Something else entirely."
    gen = tmp_path / "gen.txt"
    _fake_generate_output(gen, data / "spm.model", hyps, order=list(reversed(range(N_TEST))))
    code = run_cli(
        evaluate.main,
        [
            "--generate-output",
            str(gen),
            "--spm-model",
            str(data / "spm.model"),
            "--ref-raw",
            str(data / "raw" / "test.de"),
        ],
    )
    assert code == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "gen.json").read_text(encoding="utf-8"))
    assert (tmp_path / "gen.hyp").read_text(encoding="utf-8").splitlines() == hyps
    assert result["counts"] == {"references": N_TEST, "hypotheses": N_TEST}
    assert result["metrics"]["sacrebleu"]["score"] == BLEU().corpus_score(hyps, [refs]).score
    out = capsys.readouterr().out
    assert "sacreBLEU (detokenized, cased)" in out
    assert "tokenized BLEU (Moses tokenizer.perl -l de via sacremoses, compound split)" in out


@pytest.mark.parametrize("problem", ["missing", "extra"])
def test_refuses_to_score_a_missing_or_extra_hypothesis(toy, tmp_path, capsys, problem):
    data, _, _ = toy
    refs = (data / "raw" / "test.de").read_text(encoding="utf-8").splitlines()
    gen = tmp_path / "gen.txt"
    if problem == "missing":
        _fake_generate_output(gen, data / "spm.model", refs, order=[i for i in range(N_TEST) if i != 5])
    else:
        _fake_generate_output(gen, data / "spm.model", refs + ["one more"], order=range(N_TEST + 1))
    code = run_cli(
        evaluate.main,
        [
            "--generate-output",
            str(gen),
            "--spm-model",
            str(data / "spm.model"),
            "--ref-raw",
            str(data / "raw" / "test.de"),
        ],
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") and "Refusing to score" in err
    assert ("ids 5" if problem == "missing" else f"ids {N_TEST}") in err
    assert not (tmp_path / "gen.json").exists() and not (tmp_path / "gen.hyp").exists()


def test_translates_every_sentence_of_a_test_set_not_a_multiple_of_8(toy, tmp_path):
    data, save, _ = toy
    out = tmp_path / "eval" / "test.json"
    proc = run_script("evaluate", save / "checkpoint2.pt", "--data", data, "--split", "test", "--cpu", "--output", out)
    assert "--required-batch-size-multiple 1" in proc.stderr
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["counts"] == {"references": N_TEST, "hypotheses": N_TEST}
    assert len((tmp_path / "eval" / "test.hyp").read_text(encoding="utf-8").split("\n")) == N_TEST + 1
    generated = (tmp_path / "eval" / "test.generate.txt").read_text(encoding="utf-8")
    assert len(re.findall(r"^H-\d+\t", generated, flags=re.M)) == N_TEST
    assert result["generation"]["beam"] == 4
    assert "sacreBLEU (detokenized, cased)" in proc.stdout

    # A re-run reuses the result: nothing is translated again and no file is added or rewritten.
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "eval").iterdir()}
    again = run_script("evaluate", save / "checkpoint2.pt", "--data", data, "--cpu", "--output", out)
    assert "up to date" in again.stderr and "fairseq-generate" not in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "eval").iterdir()} == before


def test_fairseq_default_batch_multiple_drops_sentences_and_is_refused(toy, tmp_path):
    # With fairseq's default --required-batch-size-multiple 8, 21 sentences in one batch become 16.
    data, save, _ = toy
    out = tmp_path / "test.json"
    proc = run_script(
        "evaluate",
        save / "checkpoint2.pt",
        "--data",
        data,
        "--cpu",
        "--output",
        out,
        "--generate-args",
        "--required-batch-size-multiple",
        "8",
        check=False,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "error: fairseq-generate: 16 hypotheses for 21 references" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written, no temporary left


def test_bad_input_is_a_clear_error(toy, tmp_path, capsys):
    data, save, _ = toy
    assert run_cli(evaluate.main, [str(tmp_path / "nope.pt"), "--data", str(data)]) == 1
    assert "error: checkpoint" in capsys.readouterr().err
    short = tmp_path / "short.de"
    short.write_text("only one line\n", encoding="utf-8")
    assert run_cli(evaluate.main, [str(save / "checkpoint1.pt"), "--data", str(data), "--ref-raw", str(short)]) == 1
    err = capsys.readouterr().err
    assert "have 1 lines but" in err and "21 sentences" in err


# --- averaging -------------------------------------------------------------------------------------------


def test_average_of_two_checkpoints_is_the_mean_of_their_weights(toy, tmp_path):
    _, save, _ = toy
    out = tmp_path / "avg.pt"
    run_script("average", "--inputs", save, "--num-epoch-checkpoints", "2", "--output", out)
    a = torch.load(save / "checkpoint1.pt", weights_only=True)["model"]
    b = torch.load(save / "checkpoint2.pt", weights_only=True)["model"]
    avg = torch.load(out, weights_only=True)  # the output loads without trusting pickles
    assert set(avg["model"]) == set(a)
    for key, value in avg["model"].items():
        assert value.dtype == a[key].dtype
        if value.is_floating_point():
            torch.testing.assert_close(value, (a[key] + b[key]) / 2, rtol=0, atol=1e-7)
    assert not torch.equal(a["encoder.embed_tokens.weight"], b["encoder.embed_tokens.weight"])
    assert avg["last_optimizer_state"] is None
    assert avg["cfg"]["model"]["encoder_embed_dim"] == 32  # resmlp_tiny's configuration, kept
    # What the model recorded about its data, kept too (it is what loading the average verifies).
    for key in ("source_dict_sha256", "target_dict_sha256", "direction"):
        assert avg["cfg"]["model"][key] == torch.load(save / "checkpoint1.pt", weights_only=True)["cfg"]["model"][key]
    assert avg["cfg"]["model"]["direction"] == "en-de"


def test_averaged_checkpoint_loads_in_generate_and_hub(toy, tmp_path):
    data, save, _ = toy
    out = tmp_path / "eval.json"
    run_script(
        "evaluate",
        save / "checkpoint1.pt",
        save / "checkpoint2.pt",
        "--data",
        data,
        "--cpu",
        "--output",
        out,
        "--save-average",
        tmp_path / "avg.pt",
    )
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["counts"]["hypotheses"] == N_TEST and result["model"].startswith("average of 2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["avg.pt", "eval.generate.txt", "eval.hyp", "eval.json"]

    from fairseq_resmlp import ResMLPModel

    hub = ResMLPModel.from_pretrained(
        str(tmp_path),
        checkpoint_file="avg.pt",
        data_name_or_path=str(data / "data-bin"),
        bpe="sentencepiece",
        sentencepiece_model=str(data / "spm.model"),
        source_lang="en",
        target_lang="de",
    )
    assert isinstance(hub.translate("The small dog runs.", beam=2), str)


def test_last_checkpoints_by_update_and_epoch(tmp_path):
    for name in [
        "checkpoint1.pt",
        "checkpoint2.pt",
        "checkpoint10.pt",
        "checkpoint_1_500.pt",
        "checkpoint_2_1000.pt",
        "checkpoint_2_1500.pt",
        "checkpoint_last.pt",
        "checkpoint_best.pt",
    ]:
        (tmp_path / name).write_bytes(b"")
    names = lambda paths: [p.name for p in paths]  # noqa: E731
    assert names(average_checkpoints.last_checkpoints(tmp_path, 2, "epoch")) == ["checkpoint2.pt", "checkpoint10.pt"]
    assert names(average_checkpoints.last_checkpoints(tmp_path, 2, "update")) == [
        "checkpoint_2_1000.pt",
        "checkpoint_2_1500.pt",
    ]
    assert names(average_checkpoints.last_checkpoints(tmp_path, 2, "update", upper_bound=1000)) == [
        "checkpoint_1_500.pt",
        "checkpoint_2_1000.pt",
    ]
    assert len(average_checkpoints.last_checkpoints(tmp_path, 9, "update", allow_fewer=True)) == 3
    with pytest.raises(ToolError, match="has 3 checkpoint"):
        average_checkpoints.last_checkpoints(tmp_path, 4, "update")


def test_averaging_refuses_bad_inputs(toy, tmp_path, capsys):
    _, save, _ = toy
    bad = tmp_path / "bad.pt"
    bad.write_bytes((save / "checkpoint1.pt").read_bytes()[:1000])  # truncated
    args = ["--inputs", str(save / "checkpoint1.pt"), str(bad), "--output", str(tmp_path / "o.pt")]
    assert run_cli(average_checkpoints.main, args) == 1
    assert "error: " in capsys.readouterr().err and not (tmp_path / "o.pt").exists()
    assert run_cli(average_checkpoints.main, ["--inputs", str(save), "--output", str(tmp_path / "o.pt")]) == 1
    assert "--num-update-checkpoints" in capsys.readouterr().err


# --- plots -----------------------------------------------------------------------------------------------


def test_plot_on_a_recorded_log(tmp_path, capsys):
    log = DATA / "train_log_multi30k.txt"
    run = plot_training.parse_log(log)
    ups, walls, losses = run.series("train", "loss")
    assert len(ups) > 5 and ups == sorted(ups) and losses[-1] < losses[0]
    v_ups, v_walls, bleu = run.series("valid", "bleu")
    assert len(v_ups) >= 3 and max(bleu) > 0
    assert all(w >= 0 for w in v_walls)

    out = tmp_path / "curves.png"
    code = run_cli(plot_training.main, [str(log), str(log), "--labels", "run A", "run B", "-o", str(out)])
    assert code == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = capsys.readouterr().out
    assert "run A" in summary and "best valid BLEU" in summary


def test_plot_reads_fairseq_log_file_output_and_keeps_the_last_of_repeated_updates(tmp_path):
    # fairseq's --log-file writes bare JSON (repeated once per epoch); a resumed run repeats updates.
    log = tmp_path / "bare.log"
    log.write_text(
        "\n".join(
            [
                '{"epoch": 1, "update": 0.5, "loss": "9.0", "num_updates": "10", "wall": "5"}',
                '{"epoch": 1, "update": 0.5, "loss": "9.0", "num_updates": "10", "wall": "5"}',
                '{"epoch": 1, "valid_loss": "8.5", "valid_num_updates": "20", "valid_bleu": "1.5"}',
                '{"epoch": 1, "train_loss": "8.8", "train_num_updates": "20", "train_wall": "9"}',
                '{"epoch": 2, "update": 1.5, "loss": "8.0", "num_updates": "30", "wall": "13"}',
                '{"epoch": 2, "update": 1.5, "loss": "7.5", "num_updates": "30", "wall": "14"}',
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    run = plot_training.parse_log(log, "bare")
    # Training curve from the frequent records (the later of a repeated update); the epoch average (update 20)
    # only places the validation point in time.
    assert run.series("train", "loss") == ([10, 30], [5.0, 14.0], [9.0, 7.5])
    assert run.series("valid", "bleu") == ([20], [9.0], [1.5])
    only_epochs = tmp_path / "epochs.log"
    only_epochs.write_text(
        '{"epoch": 1, "train_loss": "8.8", "train_num_updates": "20", "train_wall": "9"}\n', encoding="utf-8"
    )
    assert plot_training.parse_log(only_epochs).series("train", "loss") == ([20], [9.0], [8.8])


def test_plot_without_json_records_is_an_error(tmp_path, capsys):
    log = tmp_path / "plain.log"
    log.write_text("2024-01-01 | INFO | train | epoch 001 | loss 9.1\n", encoding="utf-8")
    assert run_cli(plot_training.main, [str(log), "-o", str(tmp_path / "x.png")]) == 1
    assert "--log-format json" in capsys.readouterr().err
