"""resmlp-evaluate's ``evaluate()``, ``main()`` and ``build_parser()`` run in this process on tiny inputs: the
40-piece SentencePiece model of conftest.py, a few reference lines of its made-up words and a fairseq-generate
output written here (the way ``--generate-output`` scores an existing run). The translating path runs too, with
fairseq-generate, checkpoint loading and averaging replaced by stand-ins that record their calls, over a data-bin
of hand-written dictionaries and mmap indexes. Nothing is trained and no subprocess is started, so mutation
testing (which leaves out the slow end-to-end tests of test_evaluate.py) runs these against every mutant of
``evaluate()`` (docs/testing.md)."""

import argparse
import json
from pathlib import Path

import pytest
from sacrebleu.metrics import BLEU, CHRF
from test_evaluate_units import eval_args, prepared, touch, write_mmap

from fairseq_resmlp_tools import evaluate
from fairseq_resmlp_tools.fairseq_io import format_command
from fairseq_resmlp_tools.tokenized_bleu import tokenized_bleu

REFS = [
    "word1 other1 thing word7 other2 thing",
    "thing word2 other2 word8 thing other5",
    "word3 thing other3 word9",
    "other4 word4 thing word5 other6 thing",
    "word6 other0 X",  # a reference ending in X: only the newline is stripped
]
HYPS = [
    "word1 other1 thing word7 other2 thing",
    "thing word2 other3 word8 thing other5",
    "word3 thing other3 word9",
    "word4 thing word5 other6",
    "word6 thing",
]


def pieces(spm_model: Path, text: str) -> str:
    import sentencepiece as spm

    return " ".join(spm.SentencePieceProcessor(model_file=str(spm_model)).encode(text, out_type=str))


def generate_text(spm_model: Path, hyps, order) -> str:
    """fairseq-generate's output: S-/T-/H-/D-/P- lines in batch order (not test-set order), pieces as text."""
    lines = []
    for i in order:
        p = pieces(spm_model, hyps[i])
        lines += [f"S-{i}\t{p}", f"H-{i}\t-0.5\t{p}", f"D-{i}\t-0.5\t{p}", f"P-{i}\t-0.1 -0.2"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def scored(tmp_path, spm_model):
    """(generate output, SentencePiece model, references): five references and a shuffled output of HYPS."""
    ref = touch(tmp_path / "ref" / "test.de", "".join(r + "\n" for r in REFS))
    gen = touch(tmp_path / "gen.txt", generate_text(spm_model, HYPS, [3, 0, 4, 2, 1]))
    return gen, spm_model, ref


def gen_argv(gen, spm, ref, *more):
    return ["--generate-output", str(gen), "--spm-model", str(spm), "--ref-raw", str(ref), *map(str, more)]


def run_main(capsys, argv):
    """(exit status, stdout, stderr) of evaluate.main(argv)."""
    code = evaluate.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, argv) -> str:
    """The one error line of a refused run, without "error: " (exit status 1, nothing on stdout)."""
    code, out, err = run_main(capsys, argv)
    assert code == 1 and out == "", err
    assert err.startswith("error: ") and err.endswith("\n") and "Traceback" not in err, err
    return err[len("error: ") : -1]


def listing(folder: Path):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --- the parser ------------------------------------------------------------------------------------------


def test_parser_defaults():
    p = evaluate.build_parser()
    assert p.prog == "resmlp-evaluate"
    assert p.description == evaluate.__doc__
    assert p.formatter_class is argparse.RawDescriptionHelpFormatter
    assert vars(p.parse_args([])) == {
        "checkpoints": [],
        "data": None,
        "split": "test",
        "data_bin": None,
        "spm_model": None,
        "ref_raw": None,
        "src_raw": None,
        "source_lang": None,
        "target_lang": None,
        "beam": 4,
        "lenpen": 1.0,
        "max_tokens": 8000,
        "batch_size": None,
        "cpu": False,
        "fp16": False,
        "generate_args": [],
        "generate_output": None,
        "output": None,
        "tok_tokenizer": "moses",
        "save_average": None,
        "force": False,
    }


def test_parser_types_and_flags():
    argv = ["a.pt", "b.pt", "--data", "D", "--split", "valid", "--data-bin", "B", "--spm-model", "S.model"]
    argv += ["--ref-raw", "R", "--src-raw", "SR", "--source-lang", "de", "--target-lang", "en", "--beam", "5"]
    argv += ["--lenpen", "0.6", "--max-tokens", "100", "--batch-size", "7", "--cpu", "--fp16"]
    argv += ["--generate-output", "G", "--output", "O.json", "--tok-tokenizer", "13a", "--save-average", "A.pt"]
    argv += ["--force", "--generate-args", "--nbest", "2", "--beam", "9"]
    args = evaluate.build_parser().parse_args(argv)
    expected = {
        "checkpoints": [Path("a.pt"), Path("b.pt")],
        "data": Path("D"),
        "split": "valid",
        "data_bin": Path("B"),
        "spm_model": Path("S.model"),
        "ref_raw": Path("R"),
        "src_raw": Path("SR"),
        "source_lang": "de",
        "target_lang": "en",
        "beam": 5,
        "lenpen": 0.6,
        "max_tokens": 100,
        "batch_size": 7,
        "cpu": True,
        "fp16": True,
        "generate_args": ["--nbest", "2", "--beam", "9"],  # everything after it, even its own options
        "generate_output": Path("G"),
        "output": Path("O.json"),
        "tok_tokenizer": "13a",
        "save_average": Path("A.pt"),
        "force": True,
    }
    assert vars(args) == expected
    for name, value in expected.items():
        assert type(getattr(args, name)) is type(value), name
    assert all(isinstance(c, Path) for c in args.checkpoints)
    assert evaluate.build_parser().parse_args(["--tok-tokenizer", "intl"]).tok_tokenizer == "intl"


@pytest.mark.parametrize(
    "argv, named",
    [
        (["--beam", "four"], "argument --beam: invalid int value: 'four'"),
        (["--lenpen", "x"], "argument --lenpen: invalid float value: 'x'"),
        (["--max-tokens", "1.5"], "argument --max-tokens: invalid int value: '1.5'"),
        (["--batch-size", "b"], "argument --batch-size: invalid int value: 'b'"),
        (["--tok-tokenizer", "spm"], "argument --tok-tokenizer: invalid choice: 'spm' (choose from "),
        (["--cpu=yes"], "argument --cpu: ignored explicit argument 'yes'"),
        (["--force=1"], "argument --force: ignored explicit argument '1'"),
        (["--fp16=1"], "argument --fp16: ignored explicit argument '1'"),
        (["--no-such-option"], "unrecognized arguments: --no-such-option"),
    ],
)
def test_parser_names_the_bad_option(argv, named, capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.build_parser().parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: resmlp-evaluate ") and named in err, err
    if "tok-tokenizer" in named:
        assert "'moses'" in err and "'13a'" in err and "'intl'" in err


def test_parser_help_texts_and_groups():
    p = evaluate.build_parser()
    helps = {a.dest: a.help for a in p._actions}
    assert helps == {
        "help": "show this help message and exit",
        "checkpoints": "checkpoint file(s); several are averaged first",
        "data": "a data_prep output directory (manifest.json, spm.model, raw/, data-bin/)",
        "split": "the data-bin split to translate: test or valid (default %(default)s)",
        "data_bin": "fairseq data-bin directory (default DATA/data-bin)",
        "spm_model": "SentencePiece model (default DATA/spm.model)",
        "ref_raw": "untokenized reference text, one line per sentence (default DATA/raw/SPLIT.TGT)",
        "src_raw": "untokenized source text, only checked for its line count",
        "source_lang": "source language (default: from DATA/manifest.json or the data-bin file names)",
        "target_lang": "target language (default: as --source-lang)",
        "beam": "beam size (default %(default)s, as in the ResMLP paper)",
        "lenpen": "length penalty (default %(default)s)",
        "max_tokens": "tokens per batch (default %(default)s)",
        "batch_size": "sentences per batch (default: no limit besides --max-tokens)",
        "cpu": "translate on the CPU even if a GPU is present",
        "fp16": "translate in float16 (GPU)",
        "generate_args": "everything after this is passed to fairseq-generate unchanged (put it last)",
        "generate_output": "score this existing fairseq-generate output instead of translating (no checkpoint needed)",
        "output": "result JSON (default CKPT_DIR/eval/SPLIT_CKPT.json); hypotheses next to it",
        "tok_tokenizer": "tokenizer of the tokenized BLEU: moses = tokenizer.perl -l TARGET via sacremoses, as the "
        "papers (default); 13a/intl = sacreBLEU's Moses-like approximations, labelled as such",
        "save_average": "keep the averaged checkpoint at this path (default: a temporary file)",
        "force": "recompute even if an up-to-date result exists",
    }
    groups = {g.title: [a.dest for a in g._group_actions] for g in p._action_groups}
    assert groups["data"] == [
        "data",
        "split",
        "data_bin",
        "spm_model",
        "ref_raw",
        "src_raw",
        "source_lang",
        "target_lang",
    ]
    assert groups["generation"] == [
        "beam",
        "lenpen",
        "max_tokens",
        "batch_size",
        "cpu",
        "fp16",
        "generate_args",
        "generate_output",
    ]
    assert groups["output"] == ["output", "tok_tokenizer", "save_average", "force"]
    options = {a.dest: a.option_strings for a in p._actions}
    assert options["checkpoints"] == [] and options["data_bin"] == ["--data-bin"]
    assert options["tok_tokenizer"] == ["--tok-tokenizer"] and options["save_average"] == ["--save-average"]
    text = p.format_help()
    assert "(default test)" in text and "(default 4, as in the ResMLP paper)" in text and "(default 8000)" in text


# --- scoring an existing generate output -----------------------------------------------------------------


def test_scores_an_existing_generate_output(scored, capsys):
    gen, spm, ref = scored
    code, out, err = run_main(capsys, gen_argv(gen, spm, ref))
    assert code == 0, err
    folder = gen.parent
    assert listing(folder) == ["gen.hyp", "gen.json", "gen.txt", "ref", "ref/test.de"]  # no temporary left
    assert (folder / "gen.hyp").read_text(encoding="utf-8") == "".join(h + "\n" for h in HYPS)  # test-set order
    result = json.loads((folder / "gen.json").read_text(encoding="utf-8"))
    assert out == evaluate.format_table(result) + "\n"
    assert err == ""

    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(HYPS, [REFS])
    metrics = result.pop("metrics")
    assert metrics["sacrebleu"] == {
        "score": bleu_score.score,
        "signature": str(bleu.get_signature()),
        "detail": str(bleu_score),
        "brevity_penalty": bleu_score.bp,
        "length_ratio": bleu_score.sys_len / bleu_score.ref_len,
    }
    assert 0 < metrics["sacrebleu"]["score"] < 100
    assert metrics["chrf"] == {"score": chrf.corpus_score(HYPS, [REFS]).score, "signature": str(chrf.get_signature())}
    assert metrics["tokenized_bleu"] == tokenized_bleu(HYPS, REFS, "de", "moses")

    seconds = result.pop("seconds")
    assert isinstance(seconds, float) and 0 <= seconds < 30
    args = evaluate.build_parser().parse_args(gen_argv(gen, spm, ref))
    data = evaluate.EvalData(None, spm, ref, None, "de", "test")
    identity = evaluate.data_identity(data, gen)
    assert identity["sha256"].keys() == {str(ref), str(spm), str(gen)}
    assert result == {
        "format": evaluate.RESULT_FORMAT,
        "model": None,
        "checkpoints": [],
        "generate_output": str(gen),
        "split": "test",
        "source_lang": None,
        "target_lang": "de",
        "references": str(ref),
        "spm_model": str(spm),
        "counts": {"references": 5, "hypotheses": 5},
        "generation": {"beam": 4, "lenpen": 1.0, "max_tokens": 8000, "batch_size": None, "extra": []},
        "checks": {"verified": [f"every piece of the S-/T-/H- lines is a piece of {spm}"], "not_verified": []},
        "data": identity,
        "command": None,
        "fingerprint": evaluate.fingerprint([], data, identity, args),
        "files": {
            "result": str(folder / "gen.json"),
            "hypotheses": str(folder / "gen.hyp"),
            "generate_output": str(gen),
        },
    }


def test_evaluate_returns_what_it_writes_with_the_options(scored, tmp_path):
    gen, spm, ref = scored
    out = tmp_path / "out" / "deep" / "r.json"
    argv = gen_argv(gen, spm, ref, "--output", out, "--split", "valid", "--target-lang", "en", "--beam", "1")
    argv += ["--lenpen", "0.5", "--max-tokens", "99", "--batch-size", "3", "--tok-tokenizer", "13a"]
    argv += ["--source-lang", "xx", "--generate-args", "--nbest", "1"]
    result = evaluate.evaluate(evaluate.build_parser().parse_args(argv))
    assert json.loads(out.read_text(encoding="utf-8")) == result
    assert listing(out.parent) == ["r.hyp", "r.json"]
    assert not (tmp_path / "out" / "deep" / "r.generate.txt").exists() and not gen.with_suffix(".json").exists()
    assert (result["split"], result["source_lang"], result["target_lang"]) == ("valid", "xx", "en")
    assert result["generation"] == {
        "beam": 1,
        "lenpen": 0.5,
        "max_tokens": 99,
        "batch_size": 3,
        "extra": ["--nbest", "1"],
    }
    assert result["metrics"]["tokenized_bleu"] == tokenized_bleu(HYPS, REFS, "en", "13a")
    assert result["data"]["direction"] == "xx-en" and result["data"]["split"] == "valid"
    assert result["files"] == {
        "result": str(out),
        "hypotheses": str(out.with_suffix(".hyp")),
        "generate_output": str(gen),
    }


def test_post_processed_text_is_scored_as_written(tmp_path, spm_model, capsys):
    ref = touch(tmp_path / "test.de", "caf\u00e9 word1 thing other2 word3\nthing word4 other4 word5 thing\n")
    gen = touch(
        tmp_path / "g.txt",
        "H-1\t-0.1\tthing word4 other4 word5 thing\nH-0\t-0.2\tcaf<0xC3><0xA9> word1 thing other2 word3\n",
    )
    code, _, err = run_main(capsys, gen_argv(gen, spm_model, ref))
    assert code == 0, err
    result = json.loads((tmp_path / "g.json").read_text(encoding="utf-8"))
    assert (tmp_path / "g.hyp").read_text(encoding="utf-8") == ref.read_text(encoding="utf-8")
    assert result["metrics"]["sacrebleu"]["score"] == pytest.approx(100)
    assert result["checks"]["not_verified"] == [f"{gen}: detokenized text cannot be checked against {spm_model}"]


def test_src_raw_of_the_same_length_is_accepted(scored, tmp_path, capsys):
    gen, spm, ref = scored
    src = touch(tmp_path / "src.en", "a\nb\nc\nd\ne\n")
    code, _, err = run_main(capsys, gen_argv(gen, spm, ref, "--src-raw", src))
    assert code == 0, err


# --- re-use of a stored result ---------------------------------------------------------------------------


class Scores:
    """Counts the calls of evaluate.score (a recomputation)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        real = evaluate.score

        def counting(*a, **k):
            self.calls += 1
            return real(*a, **k)

        monkeypatch.setattr(evaluate, "score", counting)


def test_a_stored_result_is_reused_only_when_nothing_changed(scored, capsys, monkeypatch):
    gen, spm, ref = scored
    scores = Scores(monkeypatch)
    argv = gen_argv(gen, spm, ref)
    assert run_main(capsys, argv)[0] == 0 and scores.calls == 1
    stored = (gen.parent / "gen.json").read_text(encoding="utf-8")

    code, out, err = run_main(capsys, argv)
    assert code == 0 and scores.calls == 1
    out_json = gen.parent / "gen.json"
    assert err == f"up to date: {out_json} (same checkpoints, data and options; --force recomputes)\n"
    assert out == evaluate.format_table(json.loads(stored)) + "\n"
    assert out_json.read_text(encoding="utf-8") == stored
    assert evaluate.evaluate(evaluate.build_parser().parse_args(argv)) == json.loads(stored)
    assert scores.calls == 1

    assert run_main(capsys, argv + ["--force"])[0] == 0 and scores.calls == 2  # --force recomputes
    (gen.parent / "gen.hyp").unlink()  # the hypotheses gone: recomputed
    assert run_main(capsys, argv)[0] == 0 and scores.calls == 3
    assert (gen.parent / "gen.hyp").exists()
    for option in (["--beam", "5"], ["--lenpen", "0.9"], ["--tok-tokenizer", "intl"], ["--generate-args", "-x"]):
        code, _, err = run_main(capsys, argv + option)
        assert code == 0 and "up to date" not in err, option
    assert scores.calls == 7
    result = json.loads(out_json.read_text(encoding="utf-8"))
    assert result["generation"]["extra"] == ["-x"] and result["generation"]["beam"] == 4
    # Options the scores do not depend on change nothing.
    assert run_main(capsys, argv + ["--max-tokens", "5", "--generate-args", "-x"])[0] == 0 and scores.calls == 7


def test_other_references_are_rescored_only_with_force(scored, capsys, monkeypatch):
    gen, spm, ref = scored
    scores = Scores(monkeypatch)
    argv = gen_argv(gen, spm, ref)
    assert run_main(capsys, argv)[0] == 0
    ref.write_text("".join(h + "\n" for h in HYPS), encoding="utf-8")  # other references, as many lines
    out = gen.parent / "gen.json"
    assert refused(capsys, argv) == (
        f"{out} holds the result of another evaluation (test None->de, other data); give another --output, "
        "or --force to replace it"
    )
    assert scores.calls == 1
    assert json.loads(out.read_text(encoding="utf-8"))["metrics"]["sacrebleu"]["score"] < 100
    assert run_main(capsys, argv + ["--force"])[0] == 0 and scores.calls == 2
    assert json.loads(out.read_text(encoding="utf-8"))["metrics"]["sacrebleu"]["score"] == pytest.approx(100)


def test_an_unreadable_or_foreign_result_is_recomputed_or_refused(scored, capsys, monkeypatch):
    gen, spm, ref = scored
    scores = Scores(monkeypatch)
    out = gen.parent / "gen.json"
    touch(gen.parent / "gen.hyp", "stale\n")
    out.write_text("{not json", encoding="utf-8")
    assert run_main(capsys, gen_argv(gen, spm, ref))[0] == 0 and scores.calls == 1
    assert (gen.parent / "gen.hyp").read_text(encoding="utf-8") == "".join(h + "\n" for h in HYPS)
    result = json.loads(out.read_text(encoding="utf-8"))
    # A result of other data (another fingerprint): neither reused nor replaced.
    other = {**result, "data": {"split": "valid", "direction": "de-en"}, "fingerprint": "other"}
    out.write_text(json.dumps(other), encoding="utf-8")
    assert refused(capsys, gen_argv(gen, spm, ref)) == (
        f"{out} holds the result of another evaluation (valid de->en, other data); give another --output, "
        "or --force to replace it"
    )
    # An older result without a record of its data: replaced when it is the same evaluation.
    old = {"format": 1, "split": "test", "source_lang": None, "target_lang": "de", "references": str(ref)}
    out.write_text(json.dumps(old), encoding="utf-8")
    assert run_main(capsys, gen_argv(gen, spm, ref))[0] == 0 and scores.calls == 2


# --- refusals --------------------------------------------------------------------------------------------


def test_bad_input_is_one_line_naming_it(scored, tmp_path, capsys):
    gen, spm, ref = scored
    ckpt = touch(tmp_path / "c.pt", "x")
    assert refused(capsys, []) == "give at least one checkpoint (or --generate-output FILE)"
    assert refused(capsys, ["--spm-model", str(spm)]) == "give at least one checkpoint (or --generate-output FILE)"
    assert refused(capsys, [str(ckpt), *gen_argv(gen, spm, ref)]) == (
        "give either checkpoints or --generate-output, not both"
    )
    assert (
        refused(capsys, [str(ckpt), str(tmp_path / "none.pt")]) == f"checkpoint {tmp_path / 'none.pt'} does not exist"
    )
    missing = tmp_path / "missing.txt"
    assert refused(capsys, gen_argv(missing, spm, ref)) == f"--generate-output {missing} does not exist"
    assert refused(capsys, gen_argv(gen.parent, spm, ref)) == f"--generate-output {gen.parent} does not exist"
    assert refused(capsys, gen_argv(gen, spm, ref, "--beam", "0")) == "--beam must be at least 1"
    assert refused(capsys, gen_argv(gen, spm, ref, "--beam", "-3")) == "--beam must be at least 1"
    assert refused(capsys, gen_argv(gen, spm, ref, "--output", tmp_path / "r.txt")) == (
        f"--output {tmp_path / 'r.txt'} should end in .json (the hypotheses are written next to it)"
    )
    src = touch(tmp_path / "src.en", "a\nb\n")
    assert refused(capsys, gen_argv(gen, spm, ref, "--src-raw", src)) == (
        f"--src-raw {src} has 2 lines but the references {ref} have 5"
    )
    assert refused(capsys, ["--generate-output", str(gen), "--ref-raw", str(ref)]) == (
        "give --spm-model (the SentencePiece model the data was encoded with) or --data DIR"
    )
    unnamed = touch(tmp_path / "test.Xde", "".join(r + "\n" for r in REFS))
    assert refused(capsys, gen_argv(gen, spm, unnamed)) == (
        f"give --target-lang: the language of {unnamed} cannot be told from its name"
    )
    assert listing(tmp_path) == ["c.pt", "gen.txt", "ref", "ref/test.de", "src.en", "test.Xde"]  # nothing written


def test_scoring_refuses_unequal_counts():
    with pytest.raises(evaluate.ToolError, match=r"^2 hypotheses for 3 references$"):
        evaluate.score(["a", "b"], ["a", "b", "c"], "de")


def test_a_missing_hypothesis_is_refused_and_nothing_is_left(tmp_path, spm_model, capsys):
    ref = touch(tmp_path / "test.de", "".join(r + "\n" for r in REFS))
    gen = touch(tmp_path / "gen.txt", generate_text(spm_model, HYPS, [0, 1, 3, 4]))
    assert refused(capsys, gen_argv(gen, spm_model, ref)) == (
        f"{gen}: 4 hypotheses for 5 references: no hypothesis for 1 sentence(s) (ids 2). Refusing to score: "
        "output over a different set of sentences is not comparable"
    )
    assert listing(tmp_path) == ["gen.txt", "test.de"]  # the temporary directory removed


# --- translating (fairseq-generate, checkpoint loading and averaging replaced) -----------------------------


@pytest.fixture
def translating(tmp_path, spm_model, monkeypatch):
    """A data-bin (dictionaries of the model's pieces, en-de test indexes of 5 sentences), references, a
    checkpoint file, and stand-ins for fairseq-generate (writes HYPS in batch order) and checkpoint checks."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    symbols = "".join(f"{sp.id_to_piece(i)} 1\n" for i in range(4, sp.get_piece_size()))
    data_bin = tmp_path / "bin"
    touch(data_bin / "dict.en.txt", symbols)
    touch(data_bin / "dict.de.txt", symbols)
    write_mmap(data_bin / "test.en-de.en", [2, 3, 1, 2, 2])
    write_mmap(data_bin / "test.en-de.de", [3, 3, 2, 4, 1])
    ref = touch(tmp_path / "test.de", "".join(r + "\n" for r in REFS))
    ckpt = touch(tmp_path / "run" / "checkpoint_best.pt", "weights")
    calls = {"generate": [], "loaded": [], "verified": []}

    def fake_generate(cmd, output):
        calls["generate"].append((list(cmd), Path(output), Path(cmd[cmd.index("--path") + 1]).read_text()))
        Path(output).write_text(generate_text(spm_model, HYPS, [4, 3, 2, 1, 0]), encoding="utf-8")

    monkeypatch.setattr(evaluate, "run_generate", fake_generate)
    monkeypatch.setattr(evaluate, "load_checkpoint_checked", lambda c: calls["loaded"].append(c))
    monkeypatch.setattr(evaluate, "verify_checkpoint", lambda *a: calls["verified"].append(a))
    argv = ["--data-bin", str(data_bin), "--spm-model", str(spm_model), "--ref-raw", str(ref)]
    return ckpt, argv, calls, data_bin, ref


def test_translates_a_checkpoint(translating, capsys, spm_model):
    ckpt, argv, calls, data_bin, ref = translating
    code, out, err = run_main(capsys, [str(ckpt), *argv, "--cpu", "--beam", "2"])
    assert code == 0, err
    eval_dir = ckpt.parent / "eval"
    assert listing(eval_dir) == [
        "test_en-de_checkpoint_best.generate.txt",
        "test_en-de_checkpoint_best.hyp",
        "test_en-de_checkpoint_best.json",
    ]
    result = json.loads((eval_dir / "test_en-de_checkpoint_best.json").read_text(encoding="utf-8"))
    assert out == evaluate.format_table(result) + "\n"
    assert calls["loaded"] == [ckpt]
    assert calls["verified"] == [(ckpt, data_bin, "en", "de", calls["verified"][0][4])]
    ((cmd, output, _),) = calls["generate"]
    args = evaluate.build_parser().parse_args([str(ckpt), *argv, "--cpu", "--beam", "2"])
    data = evaluate.EvalData(data_bin, spm_model, ref, "en", "de", "test")
    assert cmd == evaluate.generate_command(ckpt, data, args)
    assert output.name == "generate.txt" and output.parent.parent == eval_dir and not output.parent.exists()
    gen_copy = eval_dir / "test_en-de_checkpoint_best.generate.txt"
    assert gen_copy.read_text(encoding="utf-8") == generate_text(spm_model, HYPS, [4, 3, 2, 1, 0])
    assert (eval_dir / "test_en-de_checkpoint_best.hyp").read_text(encoding="utf-8") == "".join(h + "\n" for h in HYPS)
    identity = evaluate.data_identity(data, None)
    assert identity["sha256"].keys() == {
        str(ref),
        str(spm_model),
        str(data_bin / "dict.de.txt"),
        str(data_bin / "dict.en.txt"),
    }
    assert result["model"] == str(ckpt) and result["checkpoints"] == [str(ckpt)]
    assert result["generate_output"] is None
    assert (result["source_lang"], result["target_lang"], result["split"]) == ("en", "de", "test")
    assert result["command"] == format_command(cmd)
    assert result["data"] == identity
    assert result["fingerprint"] == evaluate.fingerprint([ckpt], data, identity, args)
    assert result["files"] == {
        "result": str(eval_dir / "test_en-de_checkpoint_best.json"),
        "hypotheses": str(eval_dir / "test_en-de_checkpoint_best.hyp"),
        "generate_output": str(gen_copy),
    }
    assert result["counts"] == {"references": 5, "hypotheses": 5}
    assert result["metrics"]["sacrebleu"]["score"] == BLEU().corpus_score(HYPS, [REFS]).score
    assert result["checks"]["verified"] == [
        f"{data_bin / 'dict.en.txt'}: every symbol is a piece of {spm_model} (no manifest to compare)",
        f"{data_bin / 'dict.de.txt'}: every symbol is a piece of {spm_model} (no manifest to compare)",
        f"every piece of the S-/T-/H- lines is a piece of {spm_model}",
    ]
    # The same again: reused, nothing translated; a touched checkpoint is translated again.
    assert run_main(capsys, [str(ckpt), *argv, "--cpu", "--beam", "2"])[0] == 0 and len(calls["generate"]) == 1
    ckpt.write_text("weights, trained on", encoding="utf-8")
    assert run_main(capsys, [str(ckpt), *argv, "--cpu", "--beam", "2"])[0] == 0 and len(calls["generate"]) == 2
    # The binarized split changed (same content of the rest): translated again.
    write_mmap(data_bin / "test.en-de.en", [2, 3, 1, 2, 3])
    assert run_main(capsys, [str(ckpt), *argv, "--cpu", "--beam", "2"])[0] == 0 and len(calls["generate"]) == 3


def test_averages_several_checkpoints(translating, capsys, monkeypatch, tmp_path):
    from fairseq_resmlp_tools import average

    ckpt, argv, calls, _, _ = translating
    second = touch(ckpt.parent / "checkpoint_3_100.pt", "more weights")
    averaged = []
    monkeypatch.setattr(average, "average_checkpoints", lambda paths: averaged.append(list(paths)) or "mean")
    monkeypatch.setattr(average, "save_checkpoint", lambda state, path: Path(path).write_text(f"{state} weights"))
    code, out, err = run_main(capsys, [str(ckpt), str(second), *argv])
    assert code == 0, err
    assert averaged == [[ckpt, second]]
    ((cmd, output, weights),) = calls["generate"]
    path = Path(cmd[cmd.index("--path") + 1])
    assert path == output.parent / "averaged.pt" and weights == "mean weights" and not path.exists()
    assert f"averaging 2 checkpoints -> {path}\n" in err
    result = json.loads((ckpt.parent / "eval" / "test_en-de_avg2_checkpoint_3_100.json").read_text(encoding="utf-8"))
    assert result["model"] == f"average of 2: {ckpt}, {second}"
    assert result["checkpoints"] == [str(ckpt), str(second)]
    assert calls["loaded"] == [ckpt, second] and len(calls["verified"]) == 2

    keep = tmp_path / "kept" / "avg.pt"
    keep.parent.mkdir()
    out_json = tmp_path / "avg.json"
    assert run_main(capsys, [str(ckpt), str(second), *argv, "--save-average", keep, "--output", out_json])[0] == 0
    assert keep.read_text() == "mean weights"
    assert calls["generate"][-1][0][cmd.index("--path") + 1] == str(keep)


def test_references_of_another_test_set_are_refused(translating, capsys):
    ckpt, argv, calls, data_bin, ref = translating
    ref.write_text("".join(r + "\n" for r in REFS + ["one more"]), encoding="utf-8")
    assert refused(capsys, [str(ckpt), *argv]) == (
        f"the references {ref} have 6 lines but {data_bin} split test has 5 sentences: they are not the same test set"
    )
    assert calls["generate"] == [] and calls["loaded"] == []
    assert refused(capsys, [str(ckpt), *argv, "--split", "valid", "--source-lang", "en", "--target-lang", "de"]) == (
        f"{data_bin} has no split 'valid' for en-de (looked for valid.en-de.de.idx)"
    )


def test_a_missing_translation_is_refused_naming_fairseq_generate(translating, capsys, monkeypatch, spm_model):
    ckpt, argv, calls, _, _ = translating
    temporaries = []

    def drops_one(cmd, output):
        temporaries.append(Path(output).parent)
        Path(output).write_text(generate_text(spm_model, HYPS, [0, 1, 2, 4]), encoding="utf-8")

    monkeypatch.setattr(evaluate, "run_generate", drops_one)
    assert refused(capsys, [str(ckpt), *argv]) == (
        "fairseq-generate: 4 hypotheses for 5 references: no hypothesis for 1 sentence(s) (ids 3). Refusing to "
        "score: output over a different set of sentences is not comparable"
    )
    # The temporary directory was hidden next to the output, named after it, and is gone.
    ((tmp,),) = [temporaries]
    assert tmp.parent == ckpt.parent / "eval" and tmp.name.startswith(".test_en-de_checkpoint_best.")
    assert listing(ckpt.parent / "eval") == []


def test_post_processed_translations_are_named_fairseq_generate(translating, capsys, monkeypatch):
    ckpt, argv, _, _, _ = translating
    text = "".join(f"H-{i}\t-0.5\t{h}\n" for i, h in enumerate(HYPS))
    monkeypatch.setattr(evaluate, "run_generate", lambda cmd, output: Path(output).write_text(text))
    code, _, err = run_main(capsys, [str(ckpt), *argv])
    assert code == 0, err
    result = json.loads((ckpt.parent / "eval" / "test_en-de_checkpoint_best.json").read_text(encoding="utf-8"))
    assert result["checks"]["verified"][-1] == (
        "fairseq-generate: H- lines are already detokenized text (fairseq --post-process sentencepiece): scored as "
        "written, byte-fallback pieces restored"
    )


def test_seconds_are_the_scoring_time_to_a_tenth(scored, monkeypatch):
    import types

    gen, spm, ref = scored
    clock = iter([1000.0, 1001.26])
    monkeypatch.setattr(evaluate, "time", types.SimpleNamespace(time=lambda: next(clock)))
    result = evaluate.evaluate(evaluate.build_parser().parse_args(gen_argv(gen, spm, ref)))
    assert result["seconds"] == 1.3


def test_foreign_pieces_are_refused_naming_the_file(tmp_path, spm_model, capsys):
    ref = touch(tmp_path / "test.de", "".join(r + "\n" for r in REFS))
    text = generate_text(spm_model, HYPS, range(5)).replace("H-2\t-0.5\t", "H-2\t-0.5\t\u2581qqqq ")
    gen = touch(tmp_path / "gen.txt", text)
    assert refused(capsys, gen_argv(gen, spm_model, ref)) == (
        f"{gen}: H-2 has pieces that are not in --spm-model {spm_model} (\u2581qqqq): the output was made with "
        "another SentencePiece model"
    )


def test_the_language_pair_and_references_from_the_data_bin(translating, capsys):
    ckpt, argv, calls, data_bin, ref = translating
    # Only the target language given: the pair is read from the data-bin's file names.
    code, _, err = run_main(capsys, [str(ckpt), *argv, "--target-lang", "de"])
    assert code == 0, err
    assert (ckpt.parent / "eval" / "test_en-de_checkpoint_best.json").exists()
    # No --ref-raw and no --data: the references cannot be found.
    no_ref = argv[: argv.index("--ref-raw")]
    assert refused(capsys, [str(ckpt), *no_ref]) == "give --ref-raw (the untokenized reference text) or --data DIR"


def test_target_lang_alone_reverses_a_prepared_direction(tmp_path, spm_model):
    data = prepared(tmp_path, spm_model)
    touch(data / "ref" / "test.en", "as published\n")
    resolved = evaluate.resolve_data(eval_args(data=data, target_lang="en"))
    assert (resolved.source_lang, resolved.target_lang) == ("de", "en")
    assert resolved.references == data / "ref" / "test.en"
    with pytest.raises(evaluate.ToolError, match=r"^--target-lang fr: .* holds en-de \(see its manifest.json\)$"):
        evaluate.resolve_data(eval_args(data=data, target_lang="fr"))


def test_the_spm_model_is_checked_against_the_manifest_of_data(tmp_path, spm_model, capsys):
    data = prepared(tmp_path, spm_model)
    manifest = data / "manifest.json"
    recorded = {"languages": {"src": "en", "tgt": "de"}, "outputs": {"spm.model": {"sha256": "0" * 64}}}
    manifest.write_text(json.dumps(recorded), encoding="utf-8")
    write_mmap(data / "data-bin" / "test.en-de.de", [2])
    gen = touch(tmp_path / "gen.txt", generate_text(spm_model, ["word1"], [0]))
    err = refused(capsys, ["--data", data, "--generate-output", gen, "--spm-model", spm_model])
    assert err.startswith(f"--spm-model {spm_model} is not the SentencePiece model {data} was prepared with (sha256 ")
    assert err.endswith(f"{manifest} records 000000000000...)")
