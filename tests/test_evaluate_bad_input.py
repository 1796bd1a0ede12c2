"""resmlp-evaluate refuses what does not belong together, and its tokenized BLEU is the papers' metric.

Each refusal is one ``error: ...`` line naming the file or option at fault, exit status 1, nothing written.
The checkpoint is the session's ``toy`` model (conftest.py), trained en->de on the toy data.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from helpers import TinyTask, build_model, make_dictionary, run_fairseq
from sacrebleu.metrics import BLEU

from fairseq_resmlp import ResMLPCheckpointError, ResMLPModel
from fairseq_resmlp_tools import evaluate
from fairseq_resmlp_tools._cli import ToolError, run_cli
from fairseq_resmlp_tools.eval_checks import restore_byte_pieces
from fairseq_resmlp_tools.fairseq_io import user_dir
from fairseq_resmlp_tools.tokenized_bleu import tokenize_for_bleu, tokenized_bleu

# --- tokenized BLEU: hand-checked against tokenizer.perl's rules -------------------------------------------

# (line, tokenizer.perl -l LANG, then for German the compound split). Checked by hand: commas and periods inside
# numbers stay, other punctuation (Unicode quotes, dashes, ellipsis) is split off, apostrophes are split on both
# sides in German and kept on the left word in French, & ' " [ ] are escaped, and no hyphen is split by the
# tokenizer (no -a): in German the compound split does it, also after a digit.
HAND_CHECKED = {
    "de": [
        (
            "Die Frau trägt ein rot-weißes T-Shirt, 5,5 % mehr als 1.000 Leute.",
            "Die Frau trägt ein rot ##AT##-##AT## weißes T ##AT##-##AT## Shirt , 5,5 % mehr als 1.000 Leute .",
        ),
        ('Er sagt: "Das ist\'s!" – „gut“…', "Er sagt : &quot; Das ist &apos; s ! &quot; – „ gut “ …"),
        (
            "Ein 5-jähriges Kind & (ihr) Hund [sic] über 3.5 km.",
            "Ein 5 ##AT##-##AT## jähriges Kind &amp; ( ihr ) Hund &#91; sic &#93; über 3.5 km .",
        ),
    ],
    "fr": [
        (
            "L'homme d'affaires a dit « bonjour » à 12,5 % aujourd'hui.",
            "L&apos; homme d&apos; affaires a dit « bonjour » à 12,5 % aujourd&apos; hui .",
        ),
        ("C'est-à-dire : « Qu'y a-t-il ? »", "C&apos; est-à-dire : « Qu&apos; y a-t-il ? »"),
        ("Il a payé 1 000,50 € — vraiment !", "Il a payé 1 000,50 € — vraiment !"),
    ],
}


@pytest.mark.parametrize("lang", sorted(HAND_CHECKED))
def test_moses_tokenization_matches_hand_checked_examples(lang):
    lines, expected = zip(*HAND_CHECKED[lang])
    assert tokenize_for_bleu(lines, lang) == list(expected)


def test_tokenized_bleu_is_bleu_on_the_moses_tokens_and_labelled():
    refs = [line for line, _ in HAND_CHECKED["fr"]]
    hyps = ["L'homme a dit « bonjour » aujourd'hui.", "C'est-à-dire : « Qu'y a-t-il ? »", "Il a payé 1 000 €."]
    result = tokenized_bleu(hyps, refs, "fr")
    tokens = tokenize_for_bleu(hyps, "fr")
    assert tokens[0] == "L&apos; homme a dit « bonjour » aujourd&apos; hui ."
    expected = BLEU(tokenize="none", force=True).corpus_score(tokens, [[tok for _, tok in HAND_CHECKED["fr"]]])
    assert result["score"] == pytest.approx(expected.score, abs=1e-9)
    assert result["label"] == "tokenized BLEU (Moses tokenizer.perl -l fr via sacremoses)"
    assert result["compound_split"] is False
    # sacreBLEU's 13a keeps "L'homme" whole: another metric, and labelled as such.
    other = tokenized_bleu(hyps, refs, "fr", "13a")
    assert other["score"] != result["score"] and other["label"].startswith("tokenized BLEU (sacreBLEU 13a")
    assert tokenized_bleu(refs, refs, "de")["label"].endswith("via sacremoses, compound split)")


# --- the model records its data and refuses other data -----------------------------------------------------


def test_model_records_its_dictionaries_and_refuses_a_reordered_one():
    model = build_model()
    recorded = model.cfg
    assert len(recorded.source_dict_sha256) == 64 and recorded.target_dict_sha256 == recorded.source_dict_sha256
    # Same symbols, same size, another order: the embedding rows mean other words.
    other = make_dictionary()
    other.symbols[5], other.symbols[6] = other.symbols[6], other.symbols[5]
    with pytest.raises(ResMLPCheckpointError, match="another source dictionary than the task's source dictionary"):
        ResMLPModel.build_model(recorded, TinyTask(other))
    ResMLPModel.build_model(recorded, TinyTask(make_dictionary()))  # its own data loads


def _evaluate(capsys, *argv) -> str:
    """stderr of a refused resmlp-evaluate run (it must exit 1 with one error line)."""
    code = run_cli(evaluate.main, [str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_reversed_direction_is_refused_everywhere(toy, tmp_path, capsys):
    data, save, _ = toy
    ckpt = save / "checkpoint2.pt"
    err = _evaluate(capsys, ckpt, "--data", data, "--source-lang", "de", "--target-lang", "en", "--cpu")
    assert f"{ckpt} was trained en->de, not de->en" in err
    assert not (save / "eval").exists()
    # fairseq-generate itself, with the joint dictionary (identical for both sides): refused by the model.
    proc = run_fairseq(
        ["fairseq-generate", data / "data-bin", "--user-dir", user_dir(), "--path", ckpt, "--source-lang", "de"]
        + ["--target-lang", "en", "--gen-subset", "test", "--cpu"],
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0
    assert "ResMLPCheckpointError: the checkpoint was trained en->de, but the task translates de->en" in proc.stderr
    hub = dict(data_name_or_path=str(data / "data-bin"), checkpoint_file=ckpt.name)
    with pytest.raises(ResMLPCheckpointError, match="trained en->de, but the task translates de->en"):
        ResMLPModel.from_pretrained(str(save), source_lang="de", target_lang="en", **hub)
    # The record cannot be overridden through the hub.
    with pytest.raises(ResMLPCheckpointError, match="direction: set by the model"):
        ResMLPModel.from_pretrained(str(save), source_lang="de", target_lang="en", direction="de-en", **hub)


def test_dictionary_of_another_model_is_refused(toy, tmp_path, capsys):
    data, save, _ = toy
    # Another data-bin whose target dictionary has the same symbols in another order (as another model's
    # SentencePiece vocabulary of the same size would): no size check can see it.
    other = tmp_path / "data-bin"
    shutil.copytree(data / "data-bin", other)
    lines = (other / "dict.de.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    lines[3], lines[4] = lines[4], lines[3]
    (other / "dict.de.txt").write_text("".join(lines), encoding="utf-8")
    args = ["--data-bin", other, "--spm-model", data / "spm.model", "--ref-raw", data / "raw" / "test.de"]
    err = _evaluate(capsys, save / "checkpoint2.pt", *args, "--output", tmp_path / "r.json")
    assert f"{other / 'dict.de.txt'} is not the target dictionary" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data-bin"]


@pytest.fixture(scope="module")
def other_spm(toy, tmp_path_factory) -> Path:
    """A SentencePiece model of the same size as the toy data's, trained on the same text with BPE."""
    import sentencepiece as spm

    data, _, _ = toy
    size = spm.SentencePieceProcessor(model_file=str(data / "spm.model")).get_piece_size()
    prefix = tmp_path_factory.mktemp("other-spm") / "spm"
    spm.SentencePieceTrainer.train(
        input=[str(data / "raw" / "train.en"), str(data / "raw" / "train.de")],
        model_prefix=str(prefix),
        vocab_size=size,
        model_type="bpe",
        character_coverage=1.0,
        minloglevel=2,
    )
    assert spm.SentencePieceProcessor(model_file=f"{prefix}.model").get_piece_size() == size
    return Path(f"{prefix}.model")


def test_other_spm_model_of_the_same_size_is_refused(toy, other_spm, tmp_path, capsys):
    data, save, _ = toy
    ckpt = save / "checkpoint2.pt"
    out = ["--output", tmp_path / "r.json", "--cpu"]
    # With data_prep's manifest: by checksum.
    err = _evaluate(capsys, ckpt, "--data", data, "--spm-model", other_spm, *out)
    assert f"--spm-model {other_spm} is not the SentencePiece model {data} was prepared with" in err
    # Without a manifest (data prepared by hand): the dictionary's symbols are not all pieces of the model.
    bare = tmp_path / "bare"
    shutil.copytree(data / "data-bin", bare / "data-bin")
    args = ["--data-bin", bare / "data-bin", "--ref-raw", data / "raw" / "test.de", *out]
    err = _evaluate(capsys, ckpt, "--spm-model", other_spm, *args)
    assert f"symbols of {bare / 'data-bin' / 'dict.en.txt'} are not pieces of --spm-model {other_spm}" in err
    assert not (tmp_path / "r.json").exists()
    # The right model passes, and the result says what could and could not be verified.
    assert run_cli(evaluate.main, [str(a) for a in [ckpt, "--spm-model", data / "spm.model", *args]]) == 0
    checks = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["checks"]
    assert any("every symbol is a piece of" in c for c in checks["verified"])
    assert any("trained en-de with the dictionaries of" in c for c in checks["verified"])
    assert any("no data_prep manifest" in c for c in checks["not_verified"])


# --- generate output -----------------------------------------------------------------------------------


def test_post_processed_generate_output_scores_as_the_raw_one(toy, other_spm, tmp_path, capsys):
    data, save, _ = toy
    base = ["fairseq-generate", data / "data-bin", "--user-dir", user_dir(), "--path", save / "checkpoint2.pt"]
    base += ["--gen-subset", "test", "--beam", "2", "--cpu", "--required-batch-size-multiple", "1"]
    scores, hyps = {}, {}
    for name, extra in {"raw": [], "post": ["--post-process", "sentencepiece"]}.items():
        gen = tmp_path / f"{name}.txt"
        gen.write_text(run_fairseq(base + extra, cwd=tmp_path).stdout, encoding="utf-8")
        args = ["--generate-output", gen, "--spm-model", data / "spm.model", "--ref-raw", data / "raw" / "test.de"]
        assert run_cli(evaluate.main, [str(a) for a in args]) == 0, capsys.readouterr().err
        result = json.loads((tmp_path / f"{name}.json").read_text(encoding="utf-8"))
        scores[name] = {k: v["score"] for k, v in result["metrics"].items()}
        hyps[name] = (tmp_path / f"{name}.hyp").read_text(encoding="utf-8")
    assert "\u2581" not in (tmp_path / "post.txt").read_text(encoding="utf-8")  # really post-processed
    assert hyps["post"] == hyps["raw"] and scores["post"] == scores["raw"]
    assert any("already detokenized" in c for c in result["checks"]["verified"])
    # Raw pieces of another SentencePiece model are refused, not decoded into other text.
    args = ["--generate-output", tmp_path / "raw.txt", "--spm-model", other_spm, "--ref-raw", data / "raw" / "test.de"]
    err = _evaluate(capsys, *args, "--output", tmp_path / "x.json")
    assert "are not in --spm-model" in err and "another SentencePiece model" in err


def test_byte_fallback_pieces_are_restored_in_post_processed_text():
    assert restore_byte_pieces("Er sagt <0xE2><0x80><0x9E>ja<0xE2><0x80><0x9C>.") == "Er sagt „ja“."


# --- results -------------------------------------------------------------------------------------------


def test_a_result_of_other_data_is_neither_reused_nor_replaced(toy, tmp_path, capsys):
    data, _, _ = toy
    refs = tmp_path / "test.de"
    shutil.copy(data / "raw" / "test.de", refs)
    gen = tmp_path / "gen.txt"
    lines = [f"S-{i}\t{h}\nH-{i}\t-0.1\t{h}" for i, h in enumerate(_pieces(data, refs))]
    gen.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = [str(a) for a in ["--generate-output", gen, "--spm-model", data / "spm.model", "--ref-raw", refs]]
    assert run_cli(evaluate.main, args) == 0
    first = json.loads((tmp_path / "gen.json").read_text(encoding="utf-8"))
    assert first["metrics"]["sacrebleu"]["score"] == pytest.approx(100.0)
    # Same size and modification time, other content: not "up to date", and not replaced without --force.
    stat = refs.stat()
    text = refs.read_text(encoding="utf-8")
    refs.write_text(text.replace("a", "o", 3), encoding="utf-8")
    os.utime(refs, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert refs.stat().st_size == stat.st_size
    capsys.readouterr()
    err = _evaluate(capsys, *args)
    assert f"{tmp_path / 'gen.json'} holds the result of another evaluation" in err and "--force" in err
    assert json.loads((tmp_path / "gen.json").read_text(encoding="utf-8")) == first
    assert run_cli(evaluate.main, args + ["--force"]) == 0
    assert json.loads((tmp_path / "gen.json").read_text(encoding="utf-8"))["metrics"]["sacrebleu"]["score"] < 100


def test_default_output_names_the_direction(toy):
    data, save, _ = toy
    args = evaluate.build_parser().parse_args([str(save / "checkpoint2.pt"), "--data", str(data)])
    assert evaluate.default_output(args, evaluate.resolve_data(args)) == save / "eval" / "test_en-de_checkpoint2.json"
    args = evaluate.build_parser().parse_args(
        [str(save / "checkpoint2.pt"), "--data", str(data), "--source-lang", "de"]
    )
    assert evaluate.default_output(args, evaluate.resolve_data(args)).name == "test_de-en_checkpoint2.json"


def _pieces(data: Path, text_file: Path):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(data / "spm.model"))
    return [" ".join(sp.encode(line, out_type=str)) for line in text_file.read_text(encoding="utf-8").splitlines()]


def test_a_checkpoint_without_the_record_loads_as_before(v1_data_dir):
    from helpers import V1_CHECKPOINT_DIR, load_v1_hub

    raw = torch.load(V1_CHECKPOINT_DIR / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert "direction" not in raw["cfg"]["model"]  # fairseq-resmlp 0.1.0 recorded nothing
    hub = load_v1_hub(v1_data_dir)
    assert hub.models[0].cfg.direction == "src-tgt"  # recorded from the data it was loaded with, in memory only
    assert isinstance(hub.translate(" ".join(hub.src_dict.symbols[4:7])), str)


def test_an_older_result_is_replaced_only_by_the_same_evaluation(tmp_path):
    data = evaluate.EvalData(None, tmp_path / "spm.model", tmp_path / "test.de", "en", "de", "test")
    old = {"format": 1, "split": "test", "source_lang": "en", "target_lang": "de", "references": str(data.references)}
    evaluate.refuse_replacing_other_data(tmp_path / "r.json", old, {"direction": "en-de"}, data)  # same: replaced
    with pytest.raises(ToolError, match=r"r.json holds the result of another evaluation \(test de->en of "):
        reversed_old = {**old, "source_lang": "de", "target_lang": "en"}
        evaluate.refuse_replacing_other_data(tmp_path / "r.json", reversed_old, {"direction": "en-de"}, data)
