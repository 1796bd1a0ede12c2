"""``fairseq_resmlp/export_runtime.py`` in this process, on one small export made once per session (reused from disk
under mutation testing: ``export_or_reuse`` in conftest.py): beam search as fairseq's ``SequenceGenerator`` with every
option, the symbols, the errors, the decoding state and the command line (docs/testing.md)."""

import codecs
import io
import json
import locale
import math
import shutil
import sys

import pytest
import torch
from fairseq.data import Dictionary
from helpers import assert_same_nbest, build_model, fairseq_nbest, make_dictionary, perturbed, random_tokens

from fairseq_resmlp.export_runtime import ExportedTranslator, _DecodingState, main

MAX_TARGET = 24  # more than the first capacity (16) of the decoding state: long hypotheses make it grow, to 24


@pytest.fixture(scope="module")
def model():
    """20 words (24 symbols: a beam of 12 has fewer candidates than 2 x beam), perturbed weights, and EOS made more
    likely than at initialisation, so that hypotheses end anywhere from the first step to the last."""
    model = perturbed(
        build_model(seed=11, dictionary=make_dictionary(20), max_source_positions=12, max_target_positions=MAX_TARGET)
    )
    with torch.no_grad():
        model.decoder.output_projection.weight[model.decoder.dictionary.eos()] *= 1.3
    return model


@pytest.fixture(scope="module")
def folder(model, tmp_path_factory, export_or_reuse):
    out = tmp_path_factory.mktemp("runtime")
    export_or_reuse(model, out)
    return out


@pytest.fixture(scope="module")
def translator(folder):
    return ExportedTranslator(folder)


SOURCES = [12, 3, 7, 1, 9, 5, 12, 2]  # source lengths (EOS included), left-padded as fairseq batches them


# fairseq's option names -> translate's
OPTIONS = {"max_len_a": "max_len_a", "max_len_b": "max_len_b", "min_len": "min_len", "len_penalty": "lenpen"}
OPTIONS["unk_penalty"] = "unkpen"


@pytest.mark.parametrize(
    "beam, options",
    [
        (1, {}),
        (2, {}),
        (5, {}),
        (12, {}),  # half the vocabulary: fewer candidates than 2 x beam (all symbols but one), beams left empty
        (13, {}),  # more than half: 2 x beam is more than the vocabulary
        (23, {}),  # all symbols but one: every non-padding symbol is a candidate, and needed
        (23, {"min_len": 0}),  # EOS a candidate at step 0 too: fewer live candidates than beams, some left empty
        (4, {"max_len_b": 5}),  # hypotheses cut at max_len: the last step can only end them
        (4, {"max_len_a": 1.5, "max_len_b": 2}),  # max_len from the longest source
        (3, {"min_len": 6}),
        (1, {"min_len": 23}),  # EOS only at the last step
        (4, {"len_penalty": 0.3}),
        (4, {"len_penalty": 2.0}),
        (3, {"unk_penalty": -4.0}),  # unk made likely
        (3, {"unk_penalty": 2.0}),
    ],
    ids=lambda value: str(value),
)
def test_translations_equal_fairseq_search(model, translator, beam, options):
    """Every n-best list of a batch of 8 sources (lengths 1 to 12) equals SequenceGenerator's on the same model."""
    src = random_tokens(model, SOURCES, seed=1, left_pad=True)
    options = {"max_len_b": 200, **options}
    want = fairseq_nbest(model, src, beam, **options)
    sources = [row[row.ne(model.encoder.padding_idx)] for row in src]
    got = translator.translate(sources, beam=beam, **{OPTIONS[k]: v for k, v in options.items()})
    assert_same_nbest(got, want)
    if beam == 1 and not options.get("min_len"):
        lengths = {len(nbest[0]["tokens"]) for nbest in got}
        assert MAX_TARGET in lengths and min(lengths) < 8  # the state grew; some sentence ended early


def test_defaults_are_fairseq_generates(model, translator):
    """translate(sources) is greedy search with fairseq-generate's defaults (max_len_b 200, min_len 1, no
    penalties), and a sentence alone gets the translation it gets in a batch."""
    src = random_tokens(model, SOURCES, seed=4, left_pad=True)
    sources = [row[row.ne(model.encoder.padding_idx)] for row in src]
    batch = translator.translate(sources)
    assert_same_nbest(batch, fairseq_nbest(model, src, 1))
    for source, nbest in zip(sources, batch):
        [[alone]] = translator.translate([source])
        assert alone["tokens"].tolist() == nbest[0]["tokens"].tolist()
    # Right-padded sources translate the same (translate pads them itself).
    assert_same_nbest(translator.translate([s.tolist() for s in sources]), batch)


def test_finished_sentences_leave_the_batch(folder, model):
    """Greedy search: at each step the decoder runs only the rows of the sentences not finished yet, and stops at
    the step where the last one ends (the translations are compared with fairseq's above)."""
    translator = ExportedTranslator(folder)
    step, rows = translator.decoder_step, []

    def counting_step(tokens, *args):
        rows.append(tokens.size(0))
        return step(tokens, *args)

    translator.decoder_step = counting_step
    src = random_tokens(model, SOURCES, seed=1, left_pad=True)
    lengths = [len(nbest[0]["tokens"]) for nbest in translator.translate([r[r.ne(translator.pad)] for r in src])]
    assert len(set(lengths)) > 2  # sentences end at different steps
    assert rows == [sum(n > t for n in lengths) for t in range(max(lengths))]


def test_symbols(translator, model):
    dictionary = model.encoder.dictionary
    line = "w3 w0 nonsense w19"
    ids = translator.encode(line)
    assert ids.dtype == torch.long
    assert ids.tolist() == dictionary.encode_line(line, add_if_not_exist=False, append_eos=True).tolist()
    assert ids.tolist()[2] == dictionary.unk() and ids.tolist()[-1] == dictionary.eos()
    assert translator.encode("").tolist() == [dictionary.eos()]
    target = model.decoder.dictionary
    tokens = [target.index("w5"), target.unk(), target.bos(), target.index("w7"), target.pad(), target.eos()]
    assert translator.decode(tokens) == "w5 <unk> <s> w7"
    assert translator.decode(torch.tensor(tokens)) == "w5 <unk> <s> w7"
    assert translator.vocab_size == len(target)
    assert (translator.pad, translator.eos, translator.unk) == (target.pad(), target.eos(), target.unk())


def test_a_repeated_source_symbol_encodes_as_fairseq_does(folder, tmp_path):
    """A dict.txt line marked ``#fairseq:overwrite`` repeats a symbol: fairseq's Dictionary (so fairseq-interactive
    and the hub) maps the symbol to its later id, and so does encode."""
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    info = json.loads((copy / "model.json").read_text(encoding="utf-8"))
    info["source_symbols"][9] = info["source_symbols"][5]
    (copy / "model.json").write_text(json.dumps(info), encoding="utf-8")
    lines = "".join(f"{symbol} 1 #fairseq:overwrite\n" for symbol in info["source_symbols"][4:])
    dictionary = Dictionary.load(io.StringIO(lines))
    assert dictionary.symbols == info["source_symbols"]
    line = " ".join(info["source_symbols"][4:12])
    encoded = ExportedTranslator(copy).encode(line).tolist()
    assert encoded == dictionary.encode_line(line, add_if_not_exist=False).tolist()
    assert encoded[1] == 9


def test_model_json_is_read_as_utf8_under_any_locale(folder, tmp_path):
    """Symbols beyond ASCII load while the locale's encoding is ASCII (a machine without a UTF-8 locale)."""
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    info = json.loads((copy / "model.json").read_text(encoding="utf-8"))
    info["source_symbols"][4], info["target_symbols"][5] = "straße", "日本語"
    (copy / "model.json").write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")
    previous = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        if not sys.flags.utf8_mode and sys.platform == "linux":  # glibc's C locale: text files default to ASCII
            assert codecs.lookup(locale.getpreferredencoding(False)).name == "ascii"
        translator = ExportedTranslator(copy)
    finally:
        locale.setlocale(locale.LC_CTYPE, previous)
    assert translator.encode("straße").tolist() == [4, info["eos"]]
    assert translator.decode([5, 6]) == "日本語 " + info["target_symbols"][6]


def test_nan_log_probs_are_never_chosen(folder, model):
    """A NaN log-probability counts as -inf (as in fairseq's search): the symbol is never chosen."""
    translator = ExportedTranslator(folder)
    step, symbol = translator.decoder_step, 9

    def decoder_step(*args, value):
        log_probs, inputs = step(*args)
        log_probs[:, symbol] = value
        return log_probs, inputs

    src = random_tokens(model, SOURCES, seed=1, left_pad=True)
    sources = [row[row.ne(model.encoder.padding_idx)] for row in src]
    translator.decoder_step = lambda *args: decoder_step(*args, value=-math.inf)
    want = translator.translate(sources, beam=3)
    translator.decoder_step = lambda *args: decoder_step(*args, value=math.nan)
    got = translator.translate(sources, beam=3)
    assert_same_nbest(got, want)
    assert all(symbol not in h["tokens"].tolist() for nbest in got for h in nbest)
    translator.decoder_step = step
    assert any(symbol in h["tokens"].tolist() for nbest in translator.translate(sources, beam=3) for h in nbest)


def test_errors_name_the_cause(folder, translator, tmp_path, model):
    with pytest.raises(FileNotFoundError) as missing:
        ExportedTranslator(tmp_path)
    assert str(missing.value) == (
        f"{tmp_path / 'model.json'}: not found (export with `python -m fairseq_resmlp.export`)"
    )
    (tmp_path / "model.json").write_text(json.dumps({"format": "something-else"}), encoding="utf-8")
    with pytest.raises(ValueError) as foreign:
        ExportedTranslator(tmp_path)
    assert str(foreign.value) == f"{tmp_path / 'model.json'}: not a fairseq-resmlp export (format 'something-else')"
    (tmp_path / "model.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match="^.*: not a fairseq-resmlp export \\(format None\\)$"):
        ExportedTranslator(tmp_path)
    source = translator.encode("w1 w2")
    with pytest.raises(ValueError) as no_beam:
        translator.translate([source], beam=0)
    assert str(no_beam.value) == "beam must be >= 1, got 0"
    with pytest.raises(ValueError) as too_long:
        translator.translate([source, random_tokens(model, [13])[0]])
    assert str(too_long.value) == "a source of 13 tokens exceeds the model's 12 positions"
    [[longest]] = translator.translate([random_tokens(model, [12])[0]])
    assert longest["tokens"][-1] == translator.eos
    with pytest.raises(ValueError) as short:
        translator.translate([source], max_len_b=3, min_len=4)
    assert str(short.value) == "min_len 4 is larger than max_len 3"
    [[equal]] = translator.translate([source], max_len_b=3, min_len=3)
    assert len(equal["tokens"]) == 4


def test_decoding_state_grows_and_follows_the_rows():
    keys, values, bias = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5), torch.randn(3, 4)
    state = _DecodingState(2, 3, 6, 4, keys, values, bias)
    assert state.inputs.shape == (2, 3, 4, 6) and not state.inputs.any()
    written = torch.randn(2, 3, 4, 6)
    state.inputs = written.clone()
    state.ensure_capacity(3, limit=24)
    assert torch.equal(state.inputs, written)  # step 3 fits
    state.ensure_capacity(4, limit=24)
    assert state.inputs.shape == (2, 3, 8, 6)
    assert torch.equal(state.inputs[:, :, :4], written) and not state.inputs[:, :, 4:].any()
    state.ensure_capacity(8, limit=10)
    assert state.inputs.shape == (2, 3, 10, 6)  # doubled, but not beyond the limit
    assert torch.equal(state.inputs[:, :, :4], written) and not state.inputs[:, :, 4:].any()
    order = torch.tensor([2, 0, 0])
    state.select_rows(order, sentences_changed=False)
    assert torch.equal(state.inputs[:, :, :4], written.index_select(1, order))
    assert state.keys is keys and state.values is values and state.mask_bias is bias
    state.select_rows(order)
    assert torch.equal(state.inputs[:, :, :4], written.index_select(1, order).index_select(1, order))
    assert torch.equal(state.keys, keys.index_select(1, order))
    assert torch.equal(state.values, values.index_select(1, order))
    assert torch.equal(state.mask_bias, bias.index_select(0, order))


def run_main(monkeypatch, capsys, lines, *args):
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(line + "\n" for line in lines)))
    assert main([str(a) for a in args]) == 0
    return capsys.readouterr().out.splitlines()


LINES = ["w1 w2 w3", "w4", "w5 w6 w7 w8 w9 w10", "w11 w12", "zz w13 w14 XX"]  # XX: unknown, kept


def expected_lines(translator, lines, beam, lenpen, batch_size):
    out = []
    for start in range(0, len(lines), batch_size):
        batch = [translator.encode(line) for line in lines[start : start + batch_size]]
        for nbest in translator.translate(batch, beam=beam, lenpen=lenpen):
            best = nbest[0]
            out.append(f"H-{len(out)}\t{float(best['score']):.6f}\t{translator.decode(best['tokens'])}")
    return out


def test_command_line_translates_stdin(folder, translator, monkeypatch, capsys):
    """``python export_runtime.py EXPORT_DIR``: one line per input line, numbered across batches, with the best
    hypothesis of beam 4 (the default) and its score."""
    assert run_main(monkeypatch, capsys, LINES, folder) == expected_lines(translator, LINES, 4, 1.0, 32)
    got = run_main(monkeypatch, capsys, LINES, folder, "--beam", 2, "--lenpen", 0.3, "--batch-size", 2)
    assert got == expected_lines(translator, LINES, 2, 0.3, 2)
    assert got != expected_lines(translator, LINES, 2, 1.0, 2)  # the options count
    assert run_main(monkeypatch, capsys, [], folder) == []


def test_command_line_batches_and_options(folder, monkeypatch, capsys):
    """The lines go to translate in batches of --batch-size (32 by default), encoded as they are, with the beam
    (4 by default) and length penalty (1.0) given."""
    calls = []
    translate = ExportedTranslator.translate

    def recording(self, sources, **options):
        calls.append(([s.tolist() for s in sources], options))
        return translate(self, sources, **options)

    monkeypatch.setattr(ExportedTranslator, "translate", recording)
    translator = ExportedTranslator(folder)
    lines = [LINES[i % len(LINES)] for i in range(33)]
    run_main(monkeypatch, capsys, lines, folder)
    encoded = [translator.encode(line).tolist() for line in lines]
    assert calls == [(encoded[:32], {"beam": 4, "lenpen": 1.0}), (encoded[32:], {"beam": 4, "lenpen": 1.0})]
    calls.clear()
    run_main(monkeypatch, capsys, lines[:5], folder, "--batch-size", 2, "--beam", 1, "--lenpen", 0.5)
    options = {"beam": 1, "lenpen": 0.5}
    assert calls == [(encoded[:2], options), (encoded[2:4], options), (encoded[4:5], options)]


def test_command_line_errors_and_help(folder, tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith(f"error: {tmp_path / 'model.json'}: not found (export with `python -m fairseq_resmlp.export`)")
    (tmp_path / "model.json").write_text("{}", encoding="utf-8")
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert capsys.readouterr().err.strip().endswith("not a fairseq-resmlp export (format None)")
    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    assert stopped.value.code == 0
    help_lines = capsys.readouterr().out.splitlines()
    # A description between the usage and the arguments, and a help text for each argument (wording not pinned).
    assert any(line.strip() for line in help_lines[help_lines.index("") : help_lines.index("positional arguments:")])
    for option in ("export_dir", "--beam BEAM", "--lenpen LENPEN", "--batch-size BATCH_SIZE"):
        arguments = help_lines.index("positional arguments:")
        [at] = [i for i, line in enumerate(help_lines) if i > arguments and line.strip().startswith(option)]
        described = help_lines[at].strip()[len(option) :].strip() or help_lines[at + 1].strip()
        assert described and not described.startswith("-"), f"{option} without a description in --help"
