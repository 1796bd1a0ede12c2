"""The export command and ``export_model`` in cases the end-to-end tests (tests/test_export.py) do not reach, in this
process (where mutation testing sees them: docs/testing.md): checkpoints of older fairseq or saved from GPU tensors,
the smallest models, dictionaries beyond ASCII under a non-UTF-8 locale, and ``--help``."""

import argparse
import codecs
import json
import locale
import sys

import pytest
import torch
from fairseq.data import Dictionary
from helpers import V1_CHECKPOINT_DIR, build_model, load_v1_hub, perturbed, random_tokens
from omegaconf import DictConfig, OmegaConf
from test_export import assert_is_the_fixture, assert_translates_as_fairseq, cli_error, export_main

import fairseq_resmlp.export as export_module
from fairseq_resmlp.export_runtime import ExportedTranslator

CHECKPOINT = V1_CHECKPOINT_DIR / "checkpoint.pt"


@pytest.fixture(scope="module")
def hub(v1_data_dir):
    return load_v1_hub(v1_data_dir)


def fixture_state() -> dict:
    return torch.load(CHECKPOINT, map_location="cpu", weights_only=False)


def test_export_help_describes_the_command_and_every_option():
    parser = export_module._parser()
    options = [action for action in parser._actions if not isinstance(action, argparse._HelpAction)]
    assert [action.option_strings for action in options] == [
        ["--path"],
        ["--data"],
        ["--out"],
        ["--source-lang"],
        ["--target-lang"],
    ]
    text = " ".join(parser.format_help().split())
    for described in [parser.description] + [action.help for action in options]:
        assert described and described.strip(), "an option (or the command) without a description in --help"
        assert " ".join(described.split()) in text


def test_export_command_loads_a_checkpoint_saved_from_gpu_tensors(tmp_path, v1_data_dir, hub, export_calls, capsys):
    """Export runs on machines without a GPU: a checkpoint whose tensors were saved on one (torch.save of CUDA
    tensors records their device) is read onto the CPU."""
    path = tmp_path / "gpu" / "checkpoint.pt"
    path.parent.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(fixture_state(), path)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):  # the file does hold CUDA tensors
            torch.load(path, weights_only=False)
    out = tmp_path / "out"
    export_main(
        capsys, "--path", path, "--data", v1_data_dir, "--out", out, "--source-lang", "src", "--target-lang", "tgt"
    )
    [(model, out_dir)] = export_calls
    assert out_dir == str(out)
    assert_is_the_fixture(model, hub)


def pre_dataclass_state(**languages) -> dict:
    """The fixture as fairseq before dataclass configs saved checkpoints: one argparse namespace ``args`` of every
    option (fairseq 0.12 still loads them, converting ``args`` to a config), no ``cfg``."""
    state = fixture_state()
    cfg = state.pop("cfg")
    options = {}
    for group in cfg.values():
        if isinstance(group, DictConfig):
            group = OmegaConf.to_container(group, resolve=True)
        if isinstance(group, dict):
            options.update((key, value) for key, value in group.items() if key != "_name")
    options.update(arch=cfg["model"]["_name"], task=cfg["task"]["_name"], source_lang=None, target_lang=None)
    options.update(languages)
    state["args"] = argparse.Namespace(**options)
    return state


def test_export_command_reads_the_languages_of_a_pre_dataclass_checkpoint(
    tmp_path, v1_data_dir, hub, export_calls, capsys
):
    """The languages recorded in an old checkpoint's ``args`` are used (the data folder has no train.* files)."""
    path = tmp_path / "old" / "checkpoint.pt"
    path.parent.mkdir()
    torch.save(pre_dataclass_state(source_lang="src", target_lang="tgt"), path)
    out = tmp_path / "out"
    line = export_main(capsys, "--path", path, "--data", v1_data_dir, "--out", out)
    [(model, out_dir)] = export_calls
    assert out_dir == str(out) and line.startswith(f"exported {path} to {out}: ")
    assert_is_the_fixture(model, hub)
    # Without them in args, the command asks for them.
    torch.save(pre_dataclass_state(), path)
    assert cli_error(capsys, "--path", path, "--data", v1_data_dir, "--out", out).endswith(
        "pass --source-lang and --target-lang"
    )
    assert len(export_calls) == 1


def test_export_small_model_with_symbols_beyond_ascii_under_a_c_locale(tmp_path, export_or_reuse):
    """One layer each side, 6 source positions, target symbols beyond ASCII; exported while the locale's encoding
    is ASCII (as on a machine without a UTF-8 locale). model.json is UTF-8 text that names the symbols as they are,
    and every source length up to the 6 positions is translated as fairseq's search does."""
    dictionary = Dictionary()
    for i in range(24):
        dictionary.add_symbol(["straße", "é", "日本語", "Ω", "ü"][i % 5] + str(i))
    model = build_model(seed=7, dictionary=dictionary, encoder_layers=1, decoder_layers=1, max_source_positions=6)
    out = tmp_path / "export"
    previous = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        if not sys.flags.utf8_mode and sys.platform == "linux":  # glibc's C locale: text files default to ASCII
            assert codecs.lookup(locale.getpreferredencoding(False)).name == "ascii"
        info = export_or_reuse(model, out)
    finally:
        locale.setlocale(locale.LC_CTYPE, previous)
    assert (info["decoder_layers"], info["decoder_attention_heads"], info["head_dim"]) == (1, 2, 16)
    assert info["max_source_positions"] == 6
    text = (out / "model.json").read_bytes().decode("utf-8")
    assert json.loads(text) == info and info["target_symbols"] == dictionary.symbols
    assert "日本語2" in text and "straße0" in text  # written as they are (readable), not as \u escapes
    translator = ExportedTranslator(out)
    src = random_tokens(model, [5, 1, 3, 2, 4, 6, 3], seed=3, left_pad=True)
    assert_translates_as_fairseq(model, translator, src, beams=(1, 4), max_len_b=6)


@pytest.mark.parametrize(
    "options",
    [dict(), dict(token_mixing_matrix="toeplitz", positional_embeddings="sinusoidal", token_mixing_gate="linear")],
    ids=["paper-block", "toeplitz-gate"],
)
def test_exported_encoder_takes_the_longest_source_the_model_takes(tmp_path, options, export_or_reuse):
    """A source of exactly --max-source-positions tokens translates, as in fairseq (torch.export once recorded a
    guard from a slice of the token-mixing matrix that refused exactly that length); one token more is refused by
    name. The perturbed weights make the gate and every position's row of A count."""
    model = perturbed(build_model(seed=4, max_source_positions=9, max_target_positions=12, **options))
    export_or_reuse(model, tmp_path)
    translator = ExportedTranslator(tmp_path)
    src = random_tokens(model, [9, 4, 9, 1], seed=5, left_pad=True)
    assert_translates_as_fairseq(model, translator, src, beams=(1, 3), max_len_b=5)
    with pytest.raises(ValueError, match="a source of 10 tokens exceeds the model's 9 positions"):
        translator.translate([random_tokens(model, [10])[0]], beam=1)
