"""Unit tests of resmlp-evaluate's helpers (evaluate.py): finding the data, the language pair and the references,
the fairseq-generate command, the result's identity (what a re-run may reuse), its default name and table, and
turning hypotheses into text. Files are made here (a 40-piece SentencePiece model, an mmap index, empty data-bin
files); nothing is trained and fairseq runs nowhere. Written against the mutants of evaluate.py that the end-to-end
tests (marked slow, left out of mutation runs) were the only ones to reach (docs/testing.md)."""

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fairseq_resmlp_tools import evaluate
from fairseq_resmlp_tools._cli import ToolError
from fairseq_resmlp_tools.eval_checks import Verification
from fairseq_resmlp_tools.evaluate import EvalData


def touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def eval_args(**overrides) -> argparse.Namespace:
    """The options resolve_data, generate_command, fingerprint and default_output read, as argparse gives them."""
    values = dict(
        data=None,
        data_bin=None,
        spm_model=None,
        source_lang=None,
        target_lang=None,
        ref_raw=None,
        generate_output=None,
        split="test",
        checkpoints=[],
        beam=4,
        lenpen=1.0,
        cpu=False,
        fp16=False,
        tok_tokenizer="moses",
        generate_args=[],
        max_tokens=None,
        batch_size=None,
    )
    values.update(overrides)
    return argparse.Namespace(**values)


def prepared(tmp_path: Path, spm_model: Path, manifest=True, ref=True) -> Path:
    """A data_prep output directory: manifest (en-de), spm.model, data-bin, raw/ and (optionally) ref/ texts."""
    data = tmp_path / "prepared"
    (data / "data-bin").mkdir(parents=True)
    (data / "spm.model").write_bytes(spm_model.read_bytes())
    if manifest:
        touch(data / "manifest.json", json.dumps({"languages": {"src": "en", "tgt": "de"}}))
    touch(data / "raw" / "test.de", "normalised\n")
    if ref:
        touch(data / "ref" / "test.de", "as published\n")
    return data


# --- the data ------------------------------------------------------------------------------------------------


def test_language_pair_from_the_data_bin_file_names(tmp_path):
    d = tmp_path / "bin"
    for name in ("test.en-de.en.idx", "test.en-de.de.idx", "test.en-de.en.bin", "valid.fr-en.fr.idx"):
        touch(d / name)
    assert evaluate._languages_from_data_bin(d, "test") == ("en", "de")
    touch(d / "test.de-en.de.idx")
    with pytest.raises(ToolError) as e:
        evaluate._languages_from_data_bin(d, "test")
    assert str(e.value) == (
        f"cannot tell the language pair of {d} for split test (found: de-en, en-de); "
        "give --source-lang and --target-lang"
    )
    with pytest.raises(ToolError, match=r"for split train \(found: none\);"):
        evaluate._languages_from_data_bin(d, "train")


def test_resolve_data_from_a_prepared_directory(tmp_path, spm_model):
    data = prepared(tmp_path, spm_model)
    got = evaluate.resolve_data(eval_args(data=data))
    assert got == EvalData(data / "data-bin", data / "spm.model", data / "ref" / "test.de", "en", "de", "test")
    # the other direction from the same data; explicit paths win over the directory's
    other_spm = touch(tmp_path / "other.model")
    refs = touch(tmp_path / "refs.en")
    got = evaluate.resolve_data(eval_args(data=data, source_lang="de", spm_model=other_spm, ref_raw=refs, split="x"))
    assert got == EvalData(data / "data-bin", other_spm, refs, "de", "en", "x")


def test_resolve_data_falls_back_to_raw_references(tmp_path, spm_model):
    data = prepared(tmp_path, spm_model, ref=False)
    assert evaluate.resolve_data(eval_args(data=data)).references == data / "raw" / "test.de"


def test_resolve_data_from_a_data_bin_alone(tmp_path, spm_model):
    d = tmp_path / "bin"
    touch(d / "test.fr-en.fr.idx")
    refs = touch(tmp_path / "ref.txt")
    got = evaluate.resolve_data(eval_args(data_bin=d, spm_model=spm_model, ref_raw=refs))
    assert got == EvalData(d, spm_model, refs, "fr", "en", "test")


def test_resolve_data_completes_one_given_language_from_the_data_bin(tmp_path, spm_model):
    # One of --source-lang/--target-lang with a bare data-bin: the other comes from its file names (either
    # direction), and a language it does not hold is refused instead of being replaced.
    d = tmp_path / "bin"
    for lang in ("en", "de"):
        touch(d / f"test.en-de.{lang}.idx")
    refs = touch(tmp_path / "refs.txt", "x\n")
    args = dict(data_bin=d, spm_model=spm_model, ref_raw=refs)
    got = evaluate.resolve_data(eval_args(target_lang="en", **args))
    assert (got.source_lang, got.target_lang) == ("de", "en")
    got = evaluate.resolve_data(eval_args(source_lang="en", **args))
    assert (got.source_lang, got.target_lang) == ("en", "de")
    got = evaluate.resolve_data(eval_args(source_lang="de", **args))
    assert (got.source_lang, got.target_lang) == ("de", "en")
    with pytest.raises(ToolError, match=rf"^--target-lang fr: {re.escape(str(d))} holds en-de for split test$"):
        evaluate.resolve_data(eval_args(target_lang="fr", **args))
    with pytest.raises(ToolError, match="^--source-lang fr: "):
        evaluate.resolve_data(eval_args(source_lang="fr", **args))


def test_resolve_data_for_a_generate_output_takes_the_language_from_the_references(tmp_path, spm_model):
    gen = touch(tmp_path / "gen.txt")
    refs = touch(tmp_path / "test.de")
    got = evaluate.resolve_data(eval_args(generate_output=gen, spm_model=spm_model, ref_raw=refs))
    assert got == EvalData(None, spm_model, refs, None, "de", "test")
    assert evaluate.resolve_data(eval_args(generate_output=gen, spm_model=spm_model, ref_raw=refs, target_lang="fr"))
    for name in ("refs.txt", "refs.tok", "refs.DE", "refs.german", "refs"):
        odd = touch(tmp_path / name)
        with pytest.raises(ToolError) as e:
            evaluate.resolve_data(eval_args(generate_output=gen, spm_model=spm_model, ref_raw=odd))
        assert str(e.value) == f"give --target-lang: the language of {odd} cannot be told from its name"


def test_resolve_data_names_what_is_missing(tmp_path, spm_model):
    data = prepared(tmp_path, spm_model)
    gen = touch(tmp_path / "gen.txt")
    cases = [
        (eval_args(data=tmp_path / "nowhere"), f"--data {tmp_path / 'nowhere'} is not a directory"),
        (eval_args(), "give --data DIR (a data_prep output directory) or --data-bin DIR"),
        (eval_args(data_bin=tmp_path / "nobin"), f"data-bin directory {tmp_path / 'nobin'} does not exist"),
        (
            eval_args(generate_output=gen),
            "give --spm-model (the SentencePiece model the data was encoded with) or --data DIR",
        ),
        (
            eval_args(generate_output=gen, spm_model=tmp_path / "no.model"),
            f"SentencePiece model {tmp_path / 'no.model'} does not exist",
        ),
        (
            eval_args(generate_output=gen, spm_model=spm_model),
            "give --ref-raw (the untokenized reference text) or --data DIR",
        ),
        (
            eval_args(data=data, ref_raw=tmp_path / "none.de"),
            f"reference file {tmp_path / 'none.de'} does not exist",
        ),
        (eval_args(data=data, split="valid"), f"reference file {data / 'raw' / 'valid.de'} does not exist"),
    ]
    for args, message in cases:
        with pytest.raises(ToolError) as e:
            evaluate.resolve_data(args)
        assert str(e.value) == message
    # a directory without a manifest, languages not given: the references cannot be found by language
    bare = prepared(tmp_path / "bare", spm_model, manifest=False)
    touch(bare / "data-bin" / "test.en-de.en.idx")
    assert evaluate.resolve_data(eval_args(data=bare)).target_lang == "de"  # from the data-bin's file names


def write_mmap(path_prefix: Path, lengths) -> Path:
    from fairseq.data.indexed_dataset import MMapIndexedDatasetBuilder

    builder = MMapIndexedDatasetBuilder(f"{path_prefix}.bin", dtype=np.int32)
    for n in lengths:
        builder.add_item(torch.arange(n, dtype=torch.int32))
    builder.finalize(f"{path_prefix}.idx")
    return Path(f"{path_prefix}.idx")


def test_data_bin_size_in_either_direction(tmp_path):
    d = tmp_path / "bin"
    d.mkdir()
    write_mmap(d / "test.en-de.de", [3, 1, 2])
    assert evaluate.data_bin_size(d, "test", "en", "de") == 3
    write_mmap(d / "valid.de-en.de", [4, 4])  # binarized as de-en: the same sentences serve en->de
    assert evaluate.data_bin_size(d, "valid", "en", "de") == 2
    touch(d / "train.en-de.de.idx", "not an mmap index, long enough to have a header")
    assert evaluate.data_bin_size(d, "train", "en", "de") is None  # fairseq-generate reads other formats itself
    with pytest.raises(ToolError) as e:
        evaluate.data_bin_size(d, "dev", "en", "de")
    assert str(e.value) == f"{d} has no split 'dev' for en-de (looked for dev.en-de.de.idx)"


def test_read_lines_splits_only_at_newlines(tmp_path):
    f = tmp_path / "t.txt"
    # Python's universal newlines, as fairseq-preprocess reads: \r\n and \r end a line; U+2028 and U+0085 do not
    f.write_bytes("a\nb\r\n\nc\u2028d\x85e\nx\ry\ncaf\u00e9".encode())
    assert evaluate.read_lines(f) == ["a", "b", "", "c\u2028d\x85e", "x", "y", "caf\u00e9"]


# --- translation ---------------------------------------------------------------------------------------------


def test_generate_command(tmp_path):
    data = EvalData(tmp_path / "bin", tmp_path / "m.model", tmp_path / "r.de", "en", "de", "valid")
    cmd = evaluate.generate_command(tmp_path / "c.pt", data, eval_args(beam=5, lenpen=0.6))
    assert Path(cmd[0]).name == "fairseq-generate" and cmd[3] == str(evaluate.user_dir())
    assert cmd[1:3] == [str(tmp_path / "bin"), "--user-dir"]
    assert cmd[4:] == [
        "--task",
        "translation",
        "--path",
        str(tmp_path / "c.pt"),
        "--source-lang",
        "en",
        "--target-lang",
        "de",
        "--gen-subset",
        "valid",
        "--beam",
        "5",
        "--nbest",
        "1",
        "--lenpen",
        "0.6",
        "--required-batch-size-multiple",
        "1",
        "--seed",
        "1",
    ]
    full = evaluate.generate_command(
        tmp_path / "c.pt",
        data,
        eval_args(max_tokens=900, batch_size=7, cpu=True, fp16=True, generate_args=["--unkpen", "1"]),
    )
    assert full[len(cmd) :] == ["--max-tokens", "900", "--batch-size", "7", "--cpu", "--fp16", "--unkpen", "1"]


def test_run_generate_writes_stdout_and_names_a_failure(tmp_path, capsys):
    out = tmp_path / "gen.txt"
    evaluate.run_generate([sys.executable, "-c", "print('H-0\\t-1.0\\tx')"], out)
    assert out.read_text() == "H-0\t-1.0\tx\n"
    assert capsys.readouterr().err.startswith(sys.executable)  # the command is printed first
    script = "import sys\nfor i in range(20): print(f'line {i}', file=sys.stderr)\nsys.exit(3)"
    with pytest.raises(ToolError) as e:
        evaluate.run_generate([sys.executable, "-c", script], out)
    expected_tail = "\n".join(f"line {i}" for i in range(8, 20))
    assert str(e.value) == f"fairseq-generate failed (exit status 3):\n{expected_tail}"


# --- results -------------------------------------------------------------------------------------------------


def test_data_identity_covers_references_spm_dictionaries_and_generate_output(tmp_path):
    d = tmp_path / "bin"
    dicts = [touch(d / "dict.en.txt", "a 1\n"), touch(d / "dict.de.txt", "b 1\n")]
    touch(d / "test.en-de.en.idx")
    refs, spm = touch(tmp_path / "r.de", "ref\n"), touch(tmp_path / "m.model", "model")
    data = EvalData(d, spm, refs, "en", "de", "test")
    identity = evaluate.data_identity(data, None)
    assert identity["direction"] == "en-de" and identity["split"] == "test"
    assert list(identity["sha256"]) == [str(refs), str(spm), str(dicts[1]), str(dicts[0])]
    assert identity["sha256"][str(refs)] == evaluate.sha256_file(refs)
    gen = touch(tmp_path / "gen.txt", "H-0\t-1\tx\n")
    assert list(evaluate.data_identity(data, gen)["sha256"])[-1] == str(gen)
    no_bin = EvalData(None, spm, refs, None, "de", "valid")
    assert evaluate.data_identity(no_bin, None) == {
        "direction": "None-de",
        "split": "valid",
        "sha256": {str(refs): evaluate.sha256_file(refs), str(spm): evaluate.sha256_file(spm)},
    }


def test_fingerprint_changes_with_everything_the_scores_depend_on(tmp_path):
    d = tmp_path / "bin"
    split_file = touch(d / "test.en-de.en.bin", "1234")
    other_split = touch(d / "valid.en-de.en.bin", "1234")
    ckpt = touch(tmp_path / "c.pt", "weights")
    data = EvalData(d, tmp_path / "m.model", tmp_path / "r.de", "en", "de", "test")
    identity = {"direction": "en-de", "split": "test", "sha256": {"r": "0"}}
    args = eval_args()
    base = evaluate.fingerprint([ckpt], data, identity, args)
    assert len(base) == 64 and base == evaluate.fingerprint([ckpt], data, dict(identity), eval_args())
    changed = [
        evaluate.fingerprint([ckpt], data, {**identity, "sha256": {"r": "1"}}, args),
        evaluate.fingerprint([ckpt, ckpt], data, identity, args),
        *(
            evaluate.fingerprint([ckpt], data, identity, eval_args(**{k: v}))
            for k, v in [
                ("beam", 5),
                ("lenpen", 0.5),
                ("cpu", True),
                ("fp16", True),
                ("tok_tokenizer", "13a"),
                ("generate_args", ["--unkpen", "1"]),
            ]
        ),
    ]
    assert base not in changed and len(set(changed)) == len(changed)
    # batching changes nothing that is scored; another split's files are not this result's
    assert evaluate.fingerprint([ckpt], data, identity, eval_args(max_tokens=10, batch_size=3)) == base
    other_split.write_text("12345")
    assert evaluate.fingerprint([ckpt], data, identity, args) == base
    split_file.write_text("12345")  # the binarized split itself (by size and time)
    after_split = evaluate.fingerprint([ckpt], data, identity, args)
    ckpt.write_text("other weights")
    assert len({base, after_split, evaluate.fingerprint([ckpt], data, identity, args)}) == 3
    without_bin = EvalData(None, data.spm_model, data.references, "en", "de", "test")
    assert evaluate.fingerprint([ckpt], without_bin, identity, args) != evaluate.fingerprint(
        [ckpt], data, identity, args
    )
    ident = evaluate._file_identity(ckpt)
    assert ident == {"path": str(ckpt.resolve()), "bytes": 13, "mtime_ns": ckpt.stat().st_mtime_ns}


def test_default_output_names(tmp_path):
    data = EvalData(None, tmp_path / "m", tmp_path / "r", "en", "de", "valid")
    one = eval_args(checkpoints=[tmp_path / "run" / "checkpoint_best.pt"])
    assert evaluate.default_output(one, data) == tmp_path / "run" / "eval" / "valid_en-de_checkpoint_best.json"
    three = eval_args(checkpoints=[tmp_path / "run" / f"checkpoint{i}.pt" for i in (3, 4, 5)])
    assert evaluate.default_output(three, data) == tmp_path / "run" / "eval" / "valid_en-de_avg3_checkpoint5.json"
    gen = eval_args(generate_output=tmp_path / "out" / "gen.txt", checkpoints=three.checkpoints)
    assert evaluate.default_output(gen, data) == tmp_path / "out" / "gen.json"


def test_a_result_of_other_data_is_not_replaced(tmp_path):
    data = EvalData(None, tmp_path / "m", tmp_path / "r.de", "en", "de", "test")
    identity = {"direction": "en-de", "split": "test", "sha256": {"a": "1"}}
    out = tmp_path / "r.json"
    evaluate.refuse_replacing_other_data(out, None, identity, data)
    evaluate.refuse_replacing_other_data(out, {"data": dict(identity)}, identity, data)
    other = {"data": {"direction": "de-en", "split": "valid", "sha256": {"a": "1"}}}
    with pytest.raises(ToolError) as e:
        evaluate.refuse_replacing_other_data(out, other, identity, data)
    assert str(e.value) == (
        f"{out} holds the result of another evaluation (valid de->en, other data); "
        "give another --output, or --force to replace it"
    )
    old = {"split": "test", "source_lang": "en", "target_lang": "de", "references": str(tmp_path / "r.de")}
    evaluate.refuse_replacing_other_data(out, old, identity, data)  # an older result of the same evaluation
    for key, value in [("split", "valid"), ("source_lang", "fr"), ("target_lang", "fr"), ("references", "x")]:
        with pytest.raises(ToolError) as e:
            evaluate.refuse_replacing_other_data(out, {**old, key: value}, identity, data)
        expected = {**old, key: value}
        assert str(e.value) == (
            f"{out} holds the result of another evaluation ({expected['split']} "
            f"{expected['source_lang']}->{expected['target_lang']} of {expected['references']}); "
            "give another --output, or --force to replace it"
        )


def test_format_table_and_load_result(tmp_path):
    result = {
        "model": "runs/x/checkpoint_best.pt",
        "split": "test",
        "source_lang": "en",
        "target_lang": "de",
        "counts": {"hypotheses": 3, "references": 3},
        "metrics": {
            "sacrebleu": {"score": 12.345, "signature": "nrefs:1|bleu"},
            "chrf": {"score": 40.0, "signature": "chrF2"},
            "tokenized_bleu": {"score": 13.5, "label": "moses -l de"},
        },
        "files": {"hypotheses": "h.hyp", "result": "r.json"},
    }
    assert evaluate.format_table(result).splitlines() == [
        "runs/x/checkpoint_best.pt",
        "test en->de: 3 hypotheses for 3 references (all translated)",
        "",
        f"{'metric':<44}  score  signature / details",
        "-" * 44 + "-" * 7 + "  " + "-" * 40,
        f"{'sacreBLEU (detokenized, cased)':<44}  12.35  nrefs:1|bleu",
        f"{'chrF2':<44}  40.00  chrF2",
        f"{'tokenized BLEU (papers)':<44}  13.50  moses -l de; not comparable with sacreBLEU",
        "",
        "hypotheses: h.hyp",
        "result:     r.json",
    ]
    del result["model"]
    result["generate_output"] = "gen.txt"
    assert evaluate.format_table(result).splitlines()[0] == "gen.txt"
    path = tmp_path / "r.json"
    assert evaluate.load_result(path) is None
    path.write_text("{not json")
    assert evaluate.load_result(path) is None
    path.write_text(json.dumps(result), encoding="utf-8")
    assert evaluate.load_result(path) == result


# --- hypotheses ----------------------------------------------------------------------------------------------


def test_detokenize_pieces_or_text(spm_model):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    texts = ["word3 other2 thing", "thing word12"]
    pieces = [" ".join(sp.encode(t, out_type=str)) for t in texts]
    lines = [f"H-{i}\t-0.5\t{p}" for i, p in enumerate(pieces)]
    checks = Verification()
    assert evaluate.detokenize(pieces, lines, spm_model, "gen.txt", checks) == texts
    assert evaluate.decode_pieces(pieces, spm_model) == texts
    assert checks.verified and not checks.not_verified
    text_lines = [f"H-{i}\t-0.5\t{t}" for i, t in enumerate(["caf<0xC3><0xA9> ok", "plain text"])]
    checks = Verification()
    got = evaluate.detokenize(["caf<0xC3><0xA9> ok", "plain text"], text_lines, spm_model, "gen.txt", checks)
    assert got == ["caf\u00e9 ok", "plain text"]
    assert checks.verified == [
        "gen.txt: H- lines are already detokenized text (fairseq --post-process sentencepiece): scored as written, "
        "byte-fallback pieces restored"
    ]
    assert checks.not_verified == [f"gen.txt: detokenized text cannot be checked against {spm_model}"]
