"""Unit tests of what resmlp-evaluate verifies (eval_checks.py) and of the tokenized BLEU's plumbing, on files made
here (a 40-piece SentencePiece model, hand-written dictionaries, manifests and checkpoints): no model is trained and
no fairseq command runs. Written to kill the mutants that survived the slower end-to-end tests (docs/testing.md)."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

from fairseq_resmlp.models.data_record import symbols_sha256
from fairseq_resmlp_tools._cli import ToolError
from fairseq_resmlp_tools.eval_checks import (
    Verification,
    dictionary_symbols,
    find_manifest,
    output_form,
    restore_byte_pieces,
    sentence_lines,
    sha256_file,
    verify_checkpoint,
    verify_pieces,
    verify_spm,
)
from fairseq_resmlp_tools.tokenized_bleu import tokenized_bleu, tokenizer

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


@pytest.fixture(scope="module")
def pieces(spm_model) -> list:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


def write_dict(path: Path, symbols) -> Path:
    path.write_text("".join(f"{s} {10 + i}\n" for i, s in enumerate(symbols)), encoding="utf-8")
    return path


def test_verification_lists_for_the_result_json():
    check = Verification(verified=["a"], not_verified=["b"])
    assert check.as_dict() == {"verified": ["a"], "not_verified": ["b"]}


def test_sha256_file_is_the_digest_of_the_whole_file(tmp_path):
    data = bytes(range(256)) * 5000  # over one 1 MiB block
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_dictionary_symbols_are_read_as_fairseq_reads_them(tmp_path):
    from fairseq.data import Dictionary

    path = tmp_path / "dict.txt"
    # A trailing blank, a flagged duplicate of a special, a symbol with a space, non-ASCII.
    path.write_text("▁über 7  \na b 3\n<unk> 2 #fairseq:overwrite\nx y 1 #fairseq:overwrite\n", encoding="utf-8")
    assert dictionary_symbols(path) == ["▁über", "a b", "<unk>", "x y"]
    assert Dictionary.load(str(path)).symbols[4:] == dictionary_symbols(path)  # a flagged special is appended again


# --- checkpoint <-> dictionaries and direction --------------------------------------------------------------


def record_checkpoint(path: Path, **record) -> Path:
    cfg = {"model": {"_name": "resmlp", "encoder_embed_dim": 4, **record}}
    torch.save({"model": {"w": torch.zeros(2)}, "cfg": cfg, "extra_state": {}}, path)
    return path


@pytest.fixture
def data_bin(tmp_path) -> Path:
    folder = tmp_path / "data-bin"
    folder.mkdir()
    write_dict(folder / "dict.en.txt", ["▁the", "▁dog"])
    write_dict(folder / "dict.de.txt", ["▁der", "▁hund"])
    return folder


def sha_of(symbols) -> str:
    return symbols_sha256(SPECIALS + list(symbols))


EN, DE = sha_of(["▁the", "▁dog"]), sha_of(["▁der", "▁hund"])


def test_checkpoint_without_record_is_not_verified(tmp_path, data_bin):
    check = Verification()
    ckpt = record_checkpoint(tmp_path / "c.pt")
    verify_checkpoint(ckpt, data_bin, "en", "de", check)
    assert check.verified == []
    assert check.not_verified == [
        f"{ckpt}: records no dictionaries or direction (trained before they were recorded): "
        "checked by dictionary size only, in fairseq-generate"
    ]


def test_checkpoint_record_is_verified(tmp_path, data_bin):
    check = Verification()
    ckpt = record_checkpoint(tmp_path / "c.pt", source_dict_sha256=EN, target_dict_sha256=DE, direction="en-de")
    verify_checkpoint(ckpt, data_bin, "en", "de", check)
    assert check.verified == [f"{ckpt}: trained en-de with the dictionaries of {data_bin} (sha256 of the symbols)"]
    assert check.not_verified == []
    # Dictionaries recorded, no direction: still verified by the dictionaries.
    check = Verification()
    ckpt = record_checkpoint(tmp_path / "d.pt", source_dict_sha256=EN, target_dict_sha256=DE)
    verify_checkpoint(ckpt, data_bin, "en", "de", check)
    assert len(check.verified) == 1


def test_checkpoint_of_the_other_direction_is_refused(tmp_path, data_bin):
    ckpt = record_checkpoint(tmp_path / "c.pt", source_dict_sha256=DE, target_dict_sha256=EN, direction="de-en")
    with pytest.raises(ToolError) as e:
        verify_checkpoint(ckpt, data_bin, "en", "de", Verification())
    assert str(e.value) == (
        f"{ckpt} was trained de->en, not en->de: give the --source-lang/--target-lang it was trained with"
    )


@pytest.mark.parametrize("side", ["source", "target"])
def test_checkpoint_of_another_dictionary_is_refused_naming_the_side(tmp_path, data_bin, side):
    wrong = sha_of(["▁other"])
    # Only the side under test is recorded (the other None): a missing record is skipped, not the end of the checks.
    record = {f"{side}_dict_sha256": wrong, "direction": "en-de"}
    ckpt = record_checkpoint(tmp_path / "c.pt", **record)
    actual = EN if side == "source" else DE
    dict_file = data_bin / f"dict.{'en' if side == 'source' else 'de'}.txt"
    with pytest.raises(ToolError) as e:
        verify_checkpoint(ckpt, data_bin, "en", "de", Verification())
    assert str(e.value) == (
        f"{dict_file} is not the {side} dictionary {ckpt} was trained with (sha256 of its symbols "
        f"{actual[:12]}..., the checkpoint's {wrong[:12]}...): evaluate with the data it was trained on"
    )


def test_checkpoint_dictionary_missing_from_the_data_bin(tmp_path, data_bin):
    ckpt = record_checkpoint(tmp_path / "c.pt", source_dict_sha256=EN, target_dict_sha256=DE, direction="en-de")
    (data_bin / "dict.de.txt").unlink()
    with pytest.raises(ToolError) as e:
        verify_checkpoint(ckpt, data_bin, "en", "de", Verification())
    assert str(e.value) == f"{data_bin / 'dict.de.txt'} does not exist (the target dictionary of {data_bin})"


# --- SentencePiece model <-> data ---------------------------------------------------------------------------


def manifest_for(data: Path, spm_model: Path, spm_name: str = "spm.model", data_bin: str = "data-bin") -> Path:
    outputs = {spm_name: {"sha256": sha256_file(spm_model)}}
    for lang in ("en", "de"):
        dict_file = data / data_bin / f"dict.{lang}.txt"
        if dict_file.is_file():
            outputs[f"{data_bin}/dict.{lang}.txt"] = {"sha256": sha256_file(dict_file)}
    manifest = {"spm": {"model": spm_name}, "outputs": outputs, "fairseq": {"data_bin": data_bin}}
    (data / "manifest.json").write_text(json.dumps(manifest))
    return data / "manifest.json"


def test_find_manifest_in_the_data_or_next_to_the_data_bin_it_names(tmp_path, data_bin, spm_model):
    data = data_bin.parent
    assert find_manifest(data, None) is None and find_manifest(None, data_bin) is None
    manifest = manifest_for(data, spm_model)
    assert find_manifest(data, None) == manifest
    assert find_manifest(None, data_bin) == manifest
    assert find_manifest(tmp_path / "elsewhere", data_bin) == manifest
    assert find_manifest(None, None) is None
    manifest_for(data, spm_model, data_bin="other-bin")  # names another data-bin: not this one's
    assert find_manifest(None, data_bin) is None
    assert find_manifest(data, data_bin) == manifest  # DATA/manifest.json itself is taken as it is


def test_spm_model_and_dictionaries_match_the_manifest(tmp_path, data_bin, spm_model):
    data = data_bin.parent
    manifest = manifest_for(data, spm_model)
    check = Verification()
    verify_spm(spm_model, data, data_bin, ["en", "de"], check)
    assert check.verified == [
        f"{spm_model}: the SentencePiece model of {manifest} (sha256)",
        f"{data_bin / 'dict.en.txt'}: as {manifest} records it (sha256)",
        f"{data_bin / 'dict.de.txt'}: as {manifest} records it (sha256)",
    ]
    assert check.not_verified == []
    # Found from the data-bin alone, too.
    check = Verification()
    verify_spm(spm_model, None, data_bin, ["en", "de"], check)
    assert len(check.verified) == 3


def test_spm_model_recorded_under_another_name(tmp_path, data_bin, spm_model):
    data = data_bin.parent
    manifest = manifest_for(data, spm_model, spm_name="sp/joint.model")
    check = Verification()
    verify_spm(spm_model, data, None, ["en", "de"], check)
    assert check.verified == [f"{spm_model}: the SentencePiece model of {manifest} (sha256)"]


def test_other_spm_model_than_the_manifest_records_is_refused(tmp_path, data_bin, spm_model):
    data = data_bin.parent
    manifest = manifest_for(data, spm_model)
    other = tmp_path / "other.model"
    other.write_bytes(spm_model.read_bytes() + b"x")
    with pytest.raises(ToolError) as e:
        verify_spm(other, data, data_bin, ["en", "de"], Verification())
    assert str(e.value) == (
        f"--spm-model {other} is not the SentencePiece model {data} was prepared with "
        f"(sha256 {sha256_file(other)[:12]}..., {manifest} records {sha256_file(spm_model)[:12]}...)"
    )


def test_dictionary_changed_after_the_manifest_is_refused(data_bin, spm_model):
    data = data_bin.parent
    manifest = manifest_for(data, spm_model)
    write_dict(data_bin / "dict.de.txt", ["▁der", "▁katze"])
    with pytest.raises(ToolError) as e:
        verify_spm(spm_model, data, data_bin, ["en", "de"], Verification())
    assert str(e.value) == (
        f"{data_bin / 'dict.de.txt'} changed after {manifest} was written (sha256 differs): prepare the data again"
    )


def test_manifests_that_record_less(tmp_path, data_bin, spm_model):
    data = data_bin.parent
    manifest = data / "manifest.json"
    # No "fairseq" section: not known to belong to this data-bin.
    manifest.write_text(json.dumps({"outputs": {}}))
    assert find_manifest(None, data_bin) is None
    # No "spm" section: the model is spm.model; no dictionary entries: only the model is verified.
    manifest.write_text(json.dumps({"outputs": {"spm.model": {"sha256": sha256_file(spm_model)}}}))
    check = Verification()
    verify_spm(spm_model, data, data_bin, ["en", "de"], check)
    assert check.verified == [f"{spm_model}: the SentencePiece model of {manifest} (sha256)"]
    # A dictionary entry without a checksum is not compared.
    entries = {"spm.model": {"sha256": sha256_file(spm_model)}, "data-bin/dict.en.txt": {"bytes": 3}}
    manifest.write_text(json.dumps({"outputs": entries}))
    check = Verification()
    verify_spm(spm_model, data, data_bin, ["en", "de"], check)
    assert len(check.verified) == 1
    # The model not recorded (or not a dict at all): checked as without a manifest, piece by piece.
    for content in ({"outputs": {}}, {"spm": {"model": "spm.model"}}, ["not", "a", "manifest"]):
        manifest.write_text(json.dumps(content))
        check = Verification()
        with pytest.raises(ToolError, match="are not pieces of --spm-model"):
            verify_spm(spm_model, data, data_bin, ["en", "de"], check)
    manifest.write_text("{not json")
    with pytest.raises(ToolError, match=f"^{manifest} is not valid JSON: Expecting property name"):
        verify_spm(spm_model, data, data_bin, ["en", "de"], Verification())


def test_without_manifest_every_dictionary_symbol_must_be_a_piece(tmp_path, spm_model, pieces):
    folder = tmp_path / "data-bin"
    folder.mkdir()
    # No dict.en.txt (skipped, and the next language still checked); fillers are not pieces but allowed.
    write_dict(folder / "dict.de.txt", pieces[3:10] + ["madeupword0000", "madeupword0001"])
    check = Verification()
    verify_spm(spm_model, None, folder, ["en", "de"], check)
    assert check.verified == [
        f"{folder / 'dict.de.txt'}: every symbol is a piece of {spm_model} (no manifest to compare)"
    ]
    assert check.not_verified == [f"no data_prep manifest: {spm_model} not compared by checksum"]

    foreign = ["▁a1", "▁a2", "▁a3", "▁a4", "▁a5", "▁a6"]
    write_dict(folder / "dict.de.txt", pieces[3:5] + foreign + ["madeupword0000"])
    with pytest.raises(ToolError) as e:
        verify_spm(spm_model, None, folder, ["en", "de"], Verification())
    assert str(e.value) == (
        f"6 of the 8 symbols of {folder / 'dict.de.txt'} are not pieces of --spm-model {spm_model} "
        "(e.g. ▁a1, ▁a2, ▁a3, ▁a4, ▁a5): the data was encoded with another SentencePiece model"
    )


def test_without_manifest_or_data_bin_nothing_is_claimed(spm_model):
    check = Verification()
    verify_spm(spm_model, None, None, ["en", "de"], check)
    assert check.as_dict() == {"verified": [], "not_verified": []}


# --- fairseq-generate output --------------------------------------------------------------------------------

GENERATED = [
    "2024-01-01 | INFO | fairseq | loading\twith a tab\n",  # a log line first: skipped, not the end
    "S-0\t▁the ▁dog \n",
    "T-0\t▁der ▁X\n",
    "H-0\t-0.25\t▁der ▁hund\n",
    "D-0\t-0.25\tder hund\n",
    "P-0\t-0.1 -0.2\n",
    "s-1\t▁lower case tag\n",
    "SH-1\t▁not a tag\n",
    "H-1\n",  # no tab
]


def test_sentence_lines_are_the_s_t_and_h_lines_with_their_text():
    assert sentence_lines(GENERATED) == [("S-0", "▁the ▁dog "), ("T-0", "▁der ▁X"), ("H-0", "▁der ▁hund")]


def test_output_form_pieces_or_text():
    assert output_form(GENERATED) == "pieces"
    # An untrained model's hypotheses may lack the word boundary; the source still has it.
    assert output_form(["S-0\t▁a b\n", "H-0\t-1\tb\n"]) == "pieces"
    assert output_form(["S-0\tthe dog\n", "T-0\tder hund\n", "H-0\t-1\tder hund\n"]) == "text"
    assert output_form([]) == "text"


def test_byte_pieces_are_restored_and_invalid_bytes_replaced():
    assert restore_byte_pieces("a <0xE2><0x80><0x9C>b") == "a “b"
    assert restore_byte_pieces("<0xFF> x") == "\ufffd x"  # not valid UTF-8: replaced, not an exception


def test_verify_pieces_names_the_line_and_the_unknown_pieces(tmp_path, spm_model, pieces):
    check = Verification()
    good = [f"S-0\t{pieces[5]} {pieces[6]}\n", f"H-0\t-1\t{pieces[7]}\n"]
    verify_pieces(good, spm_model, "gen.txt", check)
    assert check.verified == [f"every piece of the S-/T-/H- lines is a piece of {spm_model}"]
    bad = good + ["H-1\t-1\t" + " ".join([pieces[5], "q1", "q2", "q3", "q4", "q5", "q6"]) + "\n"]
    with pytest.raises(ToolError) as e:
        verify_pieces(bad, spm_model, "gen.txt", Verification())
    assert str(e.value) == (
        f"gen.txt: H-1 has pieces that are not in --spm-model {spm_model} (q1, q2, q3, q4, q5): "
        "the output was made with another SentencePiece model"
    )


# --- tokenized BLEU -----------------------------------------------------------------------------------------


def test_tokenizers_by_name():
    from sacrebleu.tokenizers.tokenizer_intl import TokenizerV14International

    assert isinstance(tokenizer("intl", "de"), TokenizerV14International)
    assert tokenizer("13a", "de")("a-b, c.") == "a-b , c ."
    with pytest.raises(ValueError, match=r"^unknown tokenizer 'perl' \(choose from moses, 13a, intl\)$"):
        tokenizer("perl", "de")


def test_tokenized_bleu_result_fields():
    from sacrebleu.metrics import BLEU

    hyps, refs = ["Der Hund läuft .", "Ein rot-weißes Haus ."], ["Der Hund rennt .", "Ein rot-weißes Haus ."]
    result = tokenized_bleu(hyps, refs, "de")
    expected = BLEU(tokenize="none", force=True).corpus_score(
        ["Der Hund läuft .", "Ein rot ##AT##-##AT## weißes Haus ."],
        [["Der Hund rennt .", "Ein rot ##AT##-##AT## weißes Haus ."]],
    )
    assert result == {
        "score": expected.score,
        "label": "tokenized BLEU (Moses tokenizer.perl -l de via sacremoses, compound split)",
        "tokenizer": "moses",
        "language": "de",
        "compound_split": True,
        "detail": str(expected),
        "note": "the metric of the WMT14 tables of the papers; not comparable with sacreBLEU",
    }
