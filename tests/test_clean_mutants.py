"""Behaviour of data_prep/clean.py that the mutation run (docs/data_prep.md, session 9) found untested.

Fast unit tests, no shared data: progress bars (quiet unless asked, counting every pair read), the flags
of combined normalisation rules and the whole cp1252 table, the count of evaluation pairs with an empty side,
and the exact error when no training pair is left.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import data_prep.clean as clean
from data_prep.clean import (
    CONTROL_FIXED,
    CONTROL_REMOVED,
    CRLF,
    SP_SPACE,
    WHITESPACE,
    HeldOut,
    clean_train,
    filter_lengths,
    normalize_line,
    write_eval_split,
)
from data_prep.errors import DataPrepError
from data_prep.textio import InputFile, ParallelSource


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def corpus(folder: Path, name: str, source: bytes, target: bytes) -> ParallelSource:
    """A parallel corpus ``name`` of two files, NAME.en and NAME.de, with these bytes."""
    return ParallelSource(
        name, InputFile(write(folder / f"{name}.en", source)), InputFile(write(folder / f"{name}.de", target))
    )


@pytest.fixture
def bars(monkeypatch):
    """Every progress bar clean.py creates, kept to read its description and final count."""
    made = []

    class Recorded(clean.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(clean, "tqdm", Recorded)
    return made


def two_corpora(tmp_path: Path, n_first: int = 4100, n_second: int = 5):
    first = corpus(tmp_path, "big", b"x\n" * n_first, b"y\n" * n_first)
    second = corpus(tmp_path, "small", b"a\n" * n_second, b"b\n" * n_second)
    return [first, second]


def test_progress_bars_are_silent_unless_asked_and_count_every_pair(tmp_path, capsys, bars):
    sources = two_corpora(tmp_path)
    # the default is no progress bar: nothing on stderr
    clean_train(sources, tmp_path / "o.en", tmp_path / "o.de")
    texts = (tmp_path / "o.en", tmp_path / "o.de")
    pieces = (write(tmp_path / "p.en", b"x\n" * 4100 + b"a\n" * 5), write(tmp_path / "p.de", b"y\n" * 4105))
    outs = tuple(tmp_path / f"f{i}" for i in range(4))
    filter_lengths(texts, pieces, outs[:2], outs[2:], 250, 1.5)
    assert capsys.readouterr().err == ""
    assert len(bars) == 2 and all(bar.disable for bar in bars)

    # asked for: one bar per stage on stderr, named, counting pairs (with k for thousands), ending at the count read
    bars.clear()
    stats = clean_train(sources, tmp_path / "o.en", tmp_path / "o.de", progress=True)
    err = capsys.readouterr().err
    assert stats["lines_in"] == 4105
    assert [(bar.desc, bar.n, bar.unit) for bar in bars] == [("clean train", 4105, "pairs")]
    assert "clean train: 4.11kpairs" in err, err

    bars.clear()
    stats = filter_lengths(texts, pieces, outs[:2], outs[2:], 250, 1.5, progress=True)
    err = capsys.readouterr().err
    assert stats["lines_in"] == 4105
    assert [(bar.desc, bar.n, bar.unit) for bar in bars] == [("filter", 4105, "pairs")]
    assert "filter: 4.11kpairs" in err, err


def test_every_rule_adds_its_flag_to_a_crlf_line():
    # each rule's flag is added to those of the rules before it (here: the CRLF one), never replaces them
    assert normalize_line("a  b\r") == ("a b", CRLF | WHITESPACE)  # the ASCII fast path
    assert normalize_line("\x92s\r") == ("\u2019s", CRLF | CONTROL_FIXED)
    # the whole C1 range is cp1252: its first and last code points too; the 5 cp1252 leaves undefined go
    assert normalize_line("5\x80 \x9f") == ("5\u20ac \u0178", CONTROL_FIXED)
    assert normalize_line("a\x81\x8d\x8f\x90\x9db") == ("ab", CONTROL_FIXED)
    assert normalize_line("a\x07b\r") == ("ab", CRLF | CONTROL_REMOVED)
    assert normalize_line("a\u2581b\r") == ("a b", CRLF | SP_SPACE)
    assert normalize_line("a\u00a0b\r") == ("a b", CRLF | WHITESPACE)
    # a lone CR is the only change; a line that needs nothing keeps its text and no flag
    assert normalize_line("\r") == ("", CRLF)
    assert normalize_line("caf\u00e9 \u2013 ok") == ("caf\u00e9 \u2013 ok", 0)


def test_eval_split_counts_every_pair_with_an_empty_side(tmp_path):
    pairs = [("", "x"), ("y", ""), ("", "\u2581"), ("a", "b"), (" ", "c")]
    out, ref = (tmp_path / "o.en", tmp_path / "o.de"), (tmp_path / "r.en", tmp_path / "r.de")
    stats = write_eval_split(pairs, out, ref, ("en", "de"))
    assert stats["lines"] == 5 and stats["empty_kept"] == 4
    # kept all the same, in order, on every side
    assert (tmp_path / "o.en").read_text() == "\ny\n\na\n\n" and (tmp_path / "o.de").read_text() == "x\n\n\nb\nc\n"
    assert (tmp_path / "r.de").read_text() == "x\n\n\u2581\nb\nc\n"
    # with no source named, the error still says what was empty
    with pytest.raises(DataPrepError) as err:
        write_eval_split([], out, ref)
    assert str(err.value) == "the evaluation files: no sentences; an evaluation split must not be empty"


def test_clean_train_error_names_every_file_the_count_read_and_each_drop(tmp_path):
    c1 = corpus(tmp_path, "c1", b"a\n\nheld\n", b"\nb\nx\n")
    c2 = corpus(tmp_path, "c2", b"bad\xff\nq\n", b"ok\n \n")
    with pytest.raises(DataPrepError) as err:
        clean_train(
            [c1, c2],
            tmp_path / "o.en",
            tmp_path / "o.de",
            drop_invalid_utf8=True,
            heldout=HeldOut({2}, set(), set()),
        )
    files = ", ".join(str(tmp_path / f) for f in ("c1.en", "c1.de", "c2.en", "c2.de"))
    assert str(err.value) == (
        f"no training pairs left in {files} (5 read; dropped: invalid_utf8 1, heldout 1, empty 3)"
    )
    empty = corpus(tmp_path, "e", b"", b"")
    with pytest.raises(DataPrepError) as err:
        clean_train([empty], tmp_path / "o.en", tmp_path / "o.de")
    assert str(err.value) == (
        f"no training pairs left in {tmp_path / 'e.en'}, {tmp_path / 'e.de'} (0 read; dropped: the files are empty)"
    )
    # one pair left is enough
    one = ParallelSource(
        "o", InputFile(write(tmp_path / "1.en", b"a\n\n")), InputFile(write(tmp_path / "1.de", b"b\nc\n"))
    )
    stats = clean_train([one], tmp_path / "o.en", tmp_path / "o.de")
    assert stats["lines_in"] == 2 and stats["lines_out"] == 1 and stats["dropped"]["empty"] == 1
