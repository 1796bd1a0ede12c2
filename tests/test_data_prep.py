"""Tests of data_prep: unit tests of each stage, and end-to-end runs on ../shared/data.

The shared data folder is found through RESMLP_DATA (default: ../shared/data next to the repo);
tests that need it skip when it is absent. The end-to-end runs use a small vocabulary and
SentencePiece sample so that the whole file runs in a couple of minutes on 2 CPU cores.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]  # pyproject's pytest pythonpath puts it first on sys.path

from data_prep import decode, parallel, wmt14
from data_prep.clean import clean_train, length_drop_reason, normalize_line
from data_prep.download import download, verify_archive
from data_prep.errors import DataPrepError
from data_prep.sgm import aligned_texts, parse_sgm, unescape
from data_prep.stages import ChecksumCache, Stage, StageRunner
from data_prep.subword import encode_files, train_model
from data_prep.textio import InputFile, ParallelSource

DATA = Path(os.environ.get("RESMLP_DATA", REPO.parent / "shared" / "data")).resolve()
MINI = DATA / "wmt14-mini"
SMALL = ["--vocab-size", "1000", "--spm-sample", "4000", "--no-progress"]


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found: {path} (set RESMLP_DATA to the folder with wmt14-mini/, multi30k/, ...)")
    return path


def lines(path: Path) -> list:
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), f"{path} does not end with a newline"
    return text.split("\n")[:-1]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sacrebleu_sgm_lines(data: bytes) -> list:
    """Segments the way sacreBLEU extracts them from WMT sgm files (an independent reference)."""
    out = []
    for line in data.decode("utf-8").split("\n"):
        if line.startswith("<seg "):
            out.append(re.sub(r"\s+", " ", re.sub(r"<seg.*?>(.*)</seg>.*?", "\\1", line).strip()))
    return out


def member_bytes(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        return tar.extractfile(name).read()


# --- unit tests: cleaning --------------------------------------------------------------------


def test_normalize_line_rules():
    assert normalize_line("plain text") == ("plain text", 0)
    assert normalize_line("windows line\r") == ("windows line", 1)
    text, flags = normalize_line("  a \t b\u00a0c\u2028 ")
    assert text == "a b c" and flags == 8
    text, flags = normalize_line("Saarland\x92s \x84Kinder\x93")
    assert text == "Saarland’s „Kinder“" and flags == 2
    text, flags = normalize_line("\ufeffbell\x07 here")
    assert text == "bell here" and flags == 4
    # the ASCII fast path: double, leading and trailing spaces
    assert [normalize_line(x) for x in ("a  b", " a", "a ", "a b")] == [("a b", 8), ("a", 8), ("a", 8), ("a b", 0)]
    # rules combine
    assert normalize_line("\x92x\x07 \r") == ("\u2019x", 1 | 2 | 4 | 8)
    from data_prep.clean import NormalisationCounts

    counts = NormalisationCounts()
    for flags in (8, 8 | 1, 0):
        counts.add("en", flags)
    assert counts.as_dict(["en", "de"])["en"]["whitespace"] == 2 and counts.as_dict(["de"])["de"]["crlf"] == 0
    # SentencePiece's space marker would decode as a space: it becomes one
    assert normalize_line("a\u2581b \u2581 c") == ("a b c", 16 | 8)
    assert normalize_line("a\u2581b", repair_controls=False) == ("a\u2581b", 0)
    # evaluation text: only CRLF and whitespace, like sacreBLEU
    assert normalize_line("x\x96 y  z\r", repair_controls=False) == ("x\x96 y z", 1 | 8)


def test_length_rules():
    assert length_drop_reason(10, 12, 250, 1.5) is None
    assert length_drop_reason(0, 3, 250, 1.5) == "empty"
    assert length_drop_reason(251, 250, 250, 1.5) == "too_long"
    assert length_drop_reason(10, 16, 250, 1.5) == "length_ratio"
    assert length_drop_reason(10, 15, 250, 1.5) is None
    assert length_drop_reason(10, 100, 0, 0) is None
    # boundaries: exactly max_len and exactly the ratio pass, on either side
    assert length_drop_reason(250, 250, 250, 0) is None and length_drop_reason(250, 251, 250, 0) == "too_long"
    assert length_drop_reason(15, 10, 0, 1.5) is None and length_drop_reason(16, 10, 0, 1.5) == "length_ratio"
    assert length_drop_reason(10, 11, 0, 1.0) == "length_ratio" and length_drop_reason(10, 10, 0, 1.0) is None
    assert length_drop_reason(3, 0, 250, 1.5) == "empty"


def test_length_filter_measures_both_sides(tmp_path):
    from data_prep.clean import filter_lengths

    text = [("a", "b"), ("long source", "b"), ("a", "long target"), ("ratio src", "x"), ("x", "ratio tgt")]
    pieces = [
        ("a", "b"),
        ("1 2 3 4 5 6", "1 2 3 4 5"),
        ("1 2 3 4 5", "1 2 3 4 5 6"),
        ("1 2 3 4", "1 2"),
        ("1 2", "1 2 3 4"),
    ]
    files = []
    for name, rows in (("t", text), ("p", pieces)):
        for k, lang in enumerate(("s", "t")):
            files.append(write(tmp_path / f"{name}.{lang}", "".join(r[k] + "\n" for r in rows).encode()))
    outs = [tmp_path / f"o{i}" for i in range(4)]
    stats = filter_lengths((files[0], files[1]), (files[2], files[3]), (outs[0], outs[1]), (outs[2], outs[3]), 5, 1.5)
    assert stats == {
        "lines_in": 5,
        "lines_out": 1,
        "dropped": {"empty": 0, "too_long": 2, "length_ratio": 2},
        "tokens": {"src": 1, "tgt": 1},
    }
    assert lines(outs[0]) == ["a"] and lines(outs[1]) == ["b"] and lines(outs[2]) == ["a"] and lines(outs[3]) == ["b"]
    # no limits: every pair kept, tokens counted per side
    stats = filter_lengths((files[0], files[1]), (files[2], files[3]), (outs[0], outs[1]), (outs[2], outs[3]), 0, 0)
    assert stats["lines_out"] == 5 and stats["tokens"] == {"src": 18, "tgt": 18}
    assert lines(outs[0]) == [t for t, _ in text] and lines(outs[3]) == [p for _, p in pieces]
    # an empty line of pieces on either side is an empty pair
    write(files[2], b"a b\n\n1\n1 2\n1 2 3\n")
    write(files[3], b"b\n1\n\n1\n1 2 3 4\n")
    stats = filter_lengths((files[0], files[1]), (files[2], files[3]), (outs[0], outs[1]), (outs[2], outs[3]), 0, 0)
    assert stats["dropped"]["empty"] == 2 and stats["lines_out"] == 3
    assert stats["tokens"] == {"src": 7, "tgt": 6}
    # nothing left is an error naming the options; a text/pieces length mismatch is an error
    with pytest.raises(DataPrepError) as err:
        filter_lengths((files[0], files[1]), (files[2], files[3]), (outs[0], outs[1]), (outs[2], outs[3]), 3, 1.1)
    assert str(err.value) == (
        "the length filter dropped all 5 training pairs (empty 2, length_ratio 2, too_long 1); "
        "raise --max-len or --len-ratio (0 turns a rule off)"
    )
    empty = [write(tmp_path / f"e{i}", b"") for i in range(4)]
    with pytest.raises(DataPrepError, match=rf"all 0 training pairs \({re.escape(str(empty[0]))} is empty\)"):
        filter_lengths((empty[0], empty[1]), (empty[2], empty[3]), (outs[0], outs[1]), (outs[2], outs[3]), 0, 0)
    write(files[2], b"a\n")
    with pytest.raises(DataPrepError, match=r"t\.s and its SentencePiece encoding differ in length"):
        filter_lengths((files[0], files[1]), (files[2], files[3]), (outs[0], outs[1]), (outs[2], outs[3]), 0, 0)


def test_os_errors_become_one_line_naming_the_path():
    from data_prep.stages import Stage, os_error

    stage = Stage("s", lambda ctx: None, outputs=[Path("/o/a"), Path("/o/b")])
    assert str(os_error(OSError(13, "Permission denied", "/x/y"), stage)) == "/x/y: Permission denied (stage s)"
    assert (
        str(os_error(OSError(28, "No space left on device"), stage)) == "/o/a, /o/b: No space left on device (stage s)"
    )
    assert str(os_error(OSError("odd"), Stage("t", lambda ctx: None))) == "t: odd (stage t)"


def test_eval_split_is_normalised_like_train_and_keeps_sacrebleu_references(tmp_path):
    from data_prep.clean import write_eval_split

    pairs = [("\ufeffa\x00b\u2581c", "x\x96 y\r"), ("", " z ")]
    out, ref = (tmp_path / "o.en", tmp_path / "o.de"), (tmp_path / "r.en", tmp_path / "r.de")
    stats = write_eval_split(pairs, out, ref, ("en", "de"), "v.en and v.de")
    assert lines(out[0]) == ["ab c", ""] and lines(out[1]) == ["x\u2013 y", "z"]
    assert lines(ref[0]) == ["\ufeffa\x00b\u2581c", ""] and lines(ref[1]) == ["x\x96 y", "z"]
    assert stats["lines"] == 2 and stats["empty_kept"] == 1
    assert stats["normalised"]["en"]["control_removed"] == 1 and stats["normalised"]["en"]["sp_space"] == 1
    assert stats["normalised"]["de"]["control_fixed"] == 1
    with pytest.raises(DataPrepError, match=r"v\.en and v\.de: no sentences"):
        write_eval_split([], out, ref, ("en", "de"), "v.en and v.de")


def test_decode_does_not_load_the_pipeline():
    code = "import sys, data_prep.decode; print(sorted(m for m in sys.modules if m.startswith('data_prep')))"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    loaded = proc.stdout
    assert proc.returncode == 0 and "data_prep.decode" in loaded, proc.stderr
    for heavy in ("pipeline", "report", "stages", "binarize", "subword", "wmt14", "parallel"):
        assert f"data_prep.{heavy}'" not in loaded


def test_options_come_from_the_parser_by_name():
    from data_prep.layout import Options

    args = parallel.build_parser().parse_args(
        [
            "--src",
            "en",
            "--tgt",
            "de",
            "--train",
            "t",
            "--valid",
            "v",
            "--out",
            "o",
            "--max-len",
            "7",
            "--dedup",
            "--no-progress",
        ]
    )
    opts = Options.from_args(args, "en", "de")
    assert opts.max_len == 7 and opts.dedup and not opts.progress and opts.out == Path("o")
    assert opts.vocab_size == 8000 and opts.len_ratio == 1.5


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_clean_train_counts_every_drop(tmp_path):
    src = write(tmp_path / "c.en", b"a\n\nsame\nsame\nbad\xff\n  x  y \r\n")
    tgt = write(tmp_path / "c.de", b"A\nB\nSAME\nSAME\nok\nX Y\n")
    source = ParallelSource("c", InputFile(src), InputFile(tgt))
    stats = clean_train(
        [source], tmp_path / "o.en", tmp_path / "o.de", dedup=True, drop_invalid_utf8=True, langs=("en", "de")
    )
    assert lines(tmp_path / "o.en") == ["a", "same", "x y"]
    assert lines(tmp_path / "o.de") == ["A", "SAME", "X Y"]
    assert stats["lines_in"] == 6 and stats["lines_out"] == 3
    assert stats["dropped"] == {"invalid_utf8": 1, "heldout": 0, "heldout_overlap": 0, "empty": 1, "duplicate": 1}
    assert stats["normalised"]["en"]["crlf"] == 1 and stats["normalised"]["en"]["whitespace"] == 1
    # without --dedup repeats stay; without --drop-invalid-utf8 bad UTF-8 stops the run
    ok = ParallelSource("c", InputFile(write(tmp_path / "k.en", b"same\nsame\n")), InputFile(tgt))
    write(tgt, b"SAME\nSAME\n")
    assert clean_train([ok], tmp_path / "q.en", tmp_path / "q.de")["lines_out"] == 2
    write(tgt, b"A\nB\nSAME\nSAME\nok\nX Y\n")
    with pytest.raises(DataPrepError, match=r"c\.en: line 5: invalid UTF-8"):
        clean_train([source], tmp_path / "p.en", tmp_path / "p.de")


def test_clean_train_heldout_overlap_and_per_corpus_counts(tmp_path):
    from data_prep.clean import HeldOut

    c1 = ParallelSource(
        "c1",
        InputFile(write(tmp_path / "c1.en", b"one\nheld\nheld src\ny\none\nbad\xff\n")),
        InputFile(write(tmp_path / "c1.de", b"eins\ngehalten\nx\nheld tgt\neins\nz\n")),
    )
    c2 = ParallelSource(
        "c2",
        InputFile(write(tmp_path / "c2.en", b"h2\none\n\xfe\n two\xc2\xa0 \n\n")),
        InputFile(write(tmp_path / "c2.de", b"h2de\neins\nq\nzwei\xc2\x92\nleer\n")),
    )
    heldout = HeldOut({1, 6}, {"held src"}, {"held tgt"})
    stats = clean_train(
        [c1, c2],
        tmp_path / "o.en",
        tmp_path / "o.de",
        dedup=True,
        drop_invalid_utf8=True,
        heldout=heldout,
        langs=("en", "de"),
    )
    assert lines(tmp_path / "o.en") == ["one", "two"] and lines(tmp_path / "o.de") == ["eins", "zwei\u2019"]
    zero = {"crlf": 0, "control_fixed": 0, "control_removed": 0, "sp_space": 0, "whitespace": 0}
    assert stats == {
        "lines_in": 11,
        "lines_out": 2,
        "dropped": {"invalid_utf8": 2, "heldout": 2, "heldout_overlap": 2, "empty": 1, "duplicate": 2},
        "normalised": {"en": {**zero, "whitespace": 1}, "de": {**zero, "control_fixed": 1}},
        "corpora": {
            "c1": {"files": [str(tmp_path / "c1.en"), str(tmp_path / "c1.de")], "read": 6, "kept": 1},
            "c2": {"files": [str(tmp_path / "c2.en"), str(tmp_path / "c2.de")], "read": 5, "kept": 1},
        },
    }


def test_mismatched_line_counts_name_files_and_line(tmp_path):
    src = write(tmp_path / "m.en", b"1\n2\n3\n")
    tgt = write(tmp_path / "m.de", b"1\n2\n")
    with pytest.raises(DataPrepError) as err:
        clean_train([ParallelSource("m", InputFile(src), InputFile(tgt))], tmp_path / "o.en", tmp_path / "o.de")
    msg = str(err.value)
    assert "m.de has 2 lines" in msg and "m.en has 3" in msg and "line 3" in msg


# --- unit tests: sgm -------------------------------------------------------------------------

SGM = b"""<srcset setid="t" srclang="any">
<doc docid="d1" genre="news">
<seg id="1">Standard & Poor&apos;s &amp; co &#233;t&#xE9;</seg>
<seg id="2">  two\xc2\xa0 spaces </seg>
</doc>
</srcset>
"""


def test_parse_sgm_decodes_entities_and_keeps_bare_ampersands():
    segs = parse_sgm(SGM, "x.sgm")
    assert [(s.doc, s.seg) for s in segs] == [("d1", "1"), ("d1", "2")]
    assert segs[0].text == "Standard & Poor's & co été"
    assert unescape("AT&T &lt;b&gt; &nbsp;") == "AT&T <b> &nbsp;"


@pytest.mark.parametrize(
    "bad, message",
    [
        (SGM.replace(b'</seg>\n<seg id="2">', b'\n<seg id="2">'), "line 3: <seg> without a closing"),
        (SGM.replace(b'<doc docid="d1" genre="news">', b""), "outside a <doc>"),
        (SGM.replace(b"</doc>", b""), "not closed"),
        (SGM.replace(b'id="2"', b'id="1"'), "duplicate segment id"),
        (SGM.replace(b"two", b"tw\xffo"), "line 4: invalid UTF-8"),
    ],
)
def test_parse_sgm_rejects_malformed_files(bad, message):
    with pytest.raises(DataPrepError, match=message):
        parse_sgm(bad, "x.sgm")


def test_aligned_texts_checks_ids():
    a = parse_sgm(SGM, "a.sgm")
    b = parse_sgm(SGM.replace(b'docid="d1"', b'docid="d2"'), "b.sgm")
    with pytest.raises(DataPrepError, match="not parallel"):
        aligned_texts(a, b, "a.sgm", "b.sgm")


# --- unit tests: resumable stages ------------------------------------------------------------


def test_stage_runner_skips_redoes_and_never_leaves_half_outputs(tmp_path):
    runner = StageRunner(tmp_path, tmp_path / "stamps", ChecksumCache(tmp_path / "sums.json"), log=lambda m: None)
    src = write(tmp_path / "in.txt", b"hello\n")
    out = tmp_path / "out.txt"
    calls = []

    def upper(ctx):
        calls.append(1)
        ctx.tmp(out).write_text(src.read_text().upper())
        return {"n": 1}

    def stage(**options):
        return Stage("upper", upper, inputs=[src], outputs=[out], options=options)

    assert runner.run(stage()).status == "ran"
    assert runner.run(stage()).status == "skipped" and runner.run(stage()).stats == {"n": 1}
    assert runner.run(stage(x=1)).status == "ran"  # options changed
    src.write_text("changed\n")
    assert runner.run(stage(x=1)).status == "ran"  # input changed
    out.write_text("tampered\n")
    assert runner.run(stage(x=1)).status == "ran"  # output changed behind our back
    assert out.read_text() == "CHANGED\n" and len(calls) == 4

    def crash(ctx):
        ctx.tmp(out).write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runner.run(Stage("upper", crash, inputs=[src], outputs=[out], options={"x": 2}))
    assert not (tmp_path / ".out.txt.tmp").exists()
    assert not (tmp_path / "stamps" / "upper.json").exists()  # so the next run redoes it
    assert runner.run(stage(x=1)).status == "ran"


def test_checksum_cache_fast_path_damage_and_directories(tmp_path, monkeypatch):
    from data_prep import stages

    f = write(tmp_path / "f", b"abc\n")
    (tmp_path / "sums.json").write_text("[not a dict")
    cache = ChecksumCache(tmp_path / "sums.json")  # a damaged cache only costs re-hashing
    assert cache.sha256(f) == sha256(f)
    cache.save()
    assert json.loads((tmp_path / "sums.json").read_text())[str(f.resolve())][2] == sha256(f)
    (tmp_path / "sums.json").write_text("[1, 2]")
    assert ChecksumCache(tmp_path / "sums.json").sha256(f) == sha256(f)
    # a settled file is not read again; a racy one (changed within RACY_NS of hashing) is
    opened = []
    real_open = open
    monkeypatch.setattr(stages, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k), raising=False)
    cache = ChecksumCache(tmp_path / "fresh.json")
    cache.sha256(f)
    cache.sha256(f)
    assert len(opened) == 2  # just written: racy, read twice
    with monkeypatch.context() as later:  # hashed "later": the entry is settled (undoes this patch only)
        later.setattr(stages.time, "time_ns", lambda: f.stat().st_ctime_ns + stages.RACY_NS + 1)
        cache.sha256(f)
    assert len(opened) == 3
    assert cache.sha256(f) == sha256(f) and len(opened) == 3  # settled now: the fast path, not read
    # the fast path returns what the cache holds (proof that it is taken), also from a saved cache
    key = str(f.resolve())
    cache._data[key][2] = "0" * 64
    assert cache.sha256(f) == "0" * 64
    cache._data[key][2] = sha256(f)
    cache.save()
    assert ChecksumCache(tmp_path / "fresh.json").sha256(f) == sha256(f) and len(opened) == 3
    # the same size and mtime but new content (ctime and the signature change): read again
    st = f.stat()
    f.write_bytes(b"xyz\n")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.sha256(f) == hashlib.sha256(b"xyz\n").hexdigest() and len(opened) == 4
    # a directory's digest covers its files' names and contents
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    write(d / "sub" / "x", b"1")
    first = cache.sha256(d)
    (d / "sub" / "x").rename(d / "sub" / "y")
    second = cache.sha256(d)
    write(d / "sub" / "y", b"2")
    assert len({first, second, cache.sha256(d)}) == 3


def test_stage_runner_redoes_a_stage_with_a_damaged_or_foreign_stamp(tmp_path):
    runner = StageRunner(tmp_path, tmp_path / "stamps", ChecksumCache(tmp_path / "sums.json"), log=lambda m: None)
    src = write(tmp_path / "in.txt", b"x\n")
    out = tmp_path / "out.txt"

    def copy(ctx):
        ctx.tmp(out).write_bytes(src.read_bytes())
        return {"n": 1}

    stage = Stage("copy", copy, inputs=[src], outputs=[out], options={"b": Path("p"), "a": 1})
    assert runner.run(stage).status == "ran"
    stamp = tmp_path / "stamps" / "copy.json"
    good = json.loads(stamp.read_text())
    assert good["inputs"] == [{"path": "in.txt", "sha256": sha256(src)}]
    assert good["outputs"] == {"out.txt": sha256(out)} and good["stats"] == {"n": 1}
    assert list(good["options"].items()) == [("a", 1), ("b", "p")]  # JSON, sorted: a stable key
    for damaged in ("{not json", json.dumps({**good, "format": 99})):
        stamp.write_text(damaged)
        assert runner.run(stage).status == "ran"
    out.unlink()
    assert runner.run(stage).status == "ran" and out.exists()
    result = runner.run(stage)
    assert (result.status, result.stats, result.inputs, result.outputs) == (
        "skipped",
        {"n": 1},
        {"in.txt": sha256(src)},
        {"out.txt": sha256(out)},
    )
    assert (
        StageRunner(tmp_path, tmp_path / "stamps", runner.cache, force=True, log=lambda m: None).run(stage).status
        == "ran"
    )
    src.unlink()
    with pytest.raises(DataPrepError, match=r"stage copy: input .*in\.txt does not exist"):
        runner.run(stage)


def test_stage_runner_logs_stamps_and_names_what_failed(tmp_path, monkeypatch):
    from data_prep import stages

    logged: list = []
    runner = StageRunner(tmp_path, tmp_path / "stamps", ChecksumCache(tmp_path / "sums.json"), log=logged.append)
    src = write(tmp_path / "in.txt", b"x\n")
    out = tmp_path / "new" / "deeper" / "out.txt"  # its directories do not exist yet

    def copy(ctx):
        time.sleep(0.0123)  # seconds with more than 3 decimals, to see the stamp's rounding
        ctx.tmp(out).write_bytes(src.read_bytes())
        return {"n": 1}

    stage = Stage("copy", copy, inputs=[src], outputs=[out])
    started = time.monotonic()
    ran = runner.run(stage)
    wall = time.monotonic() - started
    assert logged[0] == "[copy] running" and re.fullmatch(r"\[copy\] done in \d+\.\ds", logged[1])
    stamp = json.loads((tmp_path / "stamps" / "copy.json").read_text())
    assert stamp["stage"] == "copy"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", stamp["finished"])
    # The bounds hold for the measured time; the stamp is that time rounded to 3 decimals (0.01234 is stamped 0.012,
    # below the sleep: comparing the stamp itself with the bounds failed whenever the sleep took under 0.0125 s).
    assert 0.0123 <= ran.seconds <= wall
    assert stamp["seconds"] == round(ran.seconds, 3) != ran.seconds
    skipped = runner.run(stage)
    assert logged[2:] == ["[copy] up to date, skipped"] and (skipped.status, skipped.seconds) == ("skipped", 0.0)

    forced = StageRunner(tmp_path, tmp_path / "stamps", runner.cache, force=True, log=logged.append)
    with pytest.raises(ValueError, match=r"elsewhere is not an output of stage copy"):
        forced.run(Stage("copy", lambda ctx: ctx.tmp(tmp_path / "elsewhere"), inputs=[src], outputs=[out]))
    with pytest.raises(RuntimeError, match=r"stage copy did not write .*out\.txt"):
        forced.run(Stage("copy", lambda ctx: None, inputs=[src], outputs=[out]))

    def fail(error):
        def action(ctx):
            raise error

        return Stage("copy", action, inputs=[src], outputs=[out])

    with pytest.raises(DataPrepError, match=r"^/x/y: No space left on device \(stage copy\)$"):
        forced.run(fail(OSError(28, "No space left on device", "/x/y")))
    with pytest.raises(DataPrepError, match=r"out\.txt: No space left on device \(stage copy\)$"):
        forced.run(fail(OSError(28, "No space left on device")))  # a write error names no file: the outputs

    def full_disk(path, data):  # the stamp cannot be written (after the stage's action succeeded)
        raise OSError(28, "No space left on device", str(path))

    with monkeypatch.context() as m:
        m.setattr(stages, "write_json_atomic", full_disk)
        with pytest.raises(DataPrepError, match=r"stamps/copy\.json: No space left on device \(stage copy\)$"):
            forced.run(stage)

    # an input that is a directory: a file changed inside it while the stage read it is noticed
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    write(folder / "sub" / "a", b"1")

    def touch_input(ctx):
        write(folder / "sub" / "a", b"22")
        ctx.tmp(out).write_bytes(b"")

    with pytest.raises(DataPrepError, match=r"folder: changed while stage copy was reading it"):
        forced.run(Stage("copy", touch_input, inputs=[folder], outputs=[out]))
    assert stages._signature(folder) == [["sub/a", stages.file_signature(folder / "sub" / "a")]]

    src.unlink()  # forced: the stage does not look at its stamp, so the run itself finds the input missing
    with pytest.raises(DataPrepError, match=r"^stage copy: input .*in\.txt does not exist$"):
        forced.run(stage)

    # a file that changes on every look is refused with its name
    write(src, b"x\n")
    counter = iter(range(10**6))
    monkeypatch.setattr(stages, "file_signature", lambda p: [next(counter)])
    with pytest.raises(DataPrepError, match=r"in\.txt: keeps changing while it is read"):
        ChecksumCache(tmp_path / "other.json").sha256(src)


def test_checksum_cache_writes_only_when_it_learned_something(tmp_path):
    path = tmp_path / "sums.json"
    ChecksumCache(path).save()
    assert not path.exists()  # nothing hashed: nothing to write
    cache = ChecksumCache(path)
    cache.sha256(write(tmp_path / "f", b"abc\n"))
    cache.save()
    inode = path.stat().st_ino
    cache.save()  # saved already: not written again (a new file would have a new inode)
    assert path.stat().st_ino == inode


def test_stage_description_is_laid_over_the_statistics():
    from data_prep.stages import overlay

    stats = {"valid": {"lines": 3, "files": ["old"]}, "n": 1}
    assert overlay(stats, {"valid": {"files": ["new"]}, "test": {"files": ["t"]}, "n": 2}) == {
        "valid": {"lines": 3, "files": ["new"]},
        "test": {"files": ["t"]},
        "n": 2,
    }
    assert stats == {"valid": {"lines": 3, "files": ["old"]}, "n": 1}  # not changed in place


def test_leftovers_of_an_interrupted_stage_are_removed(tmp_path):
    from data_prep.stages import remove_leftovers

    final = tmp_path / "x.txt"
    write(tmp_path / ".x.txt.tmp", b"half")
    write(tmp_path / ".x.txt.tmp.part00003", b"part")
    (tmp_path / ".x.txt.tmpdir").mkdir()
    keep = write(tmp_path / ".y.txt.tmp", b"other stage")
    remove_leftovers(final)
    assert sorted(p.name for p in tmp_path.iterdir()) == [keep.name]


# --- unit tests: SentencePiece encoding in parallel ------------------------------------------


def test_parallel_encoding_matches_direct_encoding(tmp_path):
    import sentencepiece as spm

    text = [f"sentence number {i} with some words, {'x' * (i % 7 + 1)} and ünïcödé" for i in range(3000)]
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(text) + "\n", encoding="utf-8")
    train_model(corpus, tmp_path / "m", 300, "unigram", 1.0, 1, 1)
    out = tmp_path / "c.spm"
    # tiny chunks force many tasks over 2 processes
    assert encode_files(tmp_path / "m.model", [(corpus, out)], workers=2, progress=False, chunk_bytes=4096) == [3000]
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "m.model"))
    assert lines(out) == [" ".join(p) for p in sp.encode(text, out_type=str)]
    assert [sp.decode(p.split()) for p in lines(out)] == text


# --- unit tests: download --------------------------------------------------------------------


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one payload, honouring 'Range: bytes=N-' like statmt.org does."""

    payload = b""
    honour_range = True

    def do_GET(self):  # noqa: N802 (http.server API)
        start = 0
        rng = self.headers.get("Range")
        if rng and self.honour_range:
            start = int(rng.split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(self.payload) - 1}/{len(self.payload)}")
        else:
            self.send_response(200)
        body = self.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("honour_range", [True, False])
def test_download_resumes_and_verifies(tmp_path, honour_range):
    archive = need(MINI / "test-full.tgz")
    payload = archive.read_bytes()
    handler = type("H", (RangeHandler,), {"payload": payload, "honour_range": honour_range})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/test-full.tgz"
        dest = tmp_path / "test-full.tgz"
        (tmp_path / "test-full.tgz.part").write_bytes(payload[: len(payload) // 3])  # an interrupted download
        download(
            url, dest, verify=lambda p: verify_archive(p, ["test-full/newstest2014-deen-src.en.sgm"]), progress=False
        )
        assert dest.read_bytes() == payload and not (tmp_path / "test-full.tgz.part").exists()
        # a download that turns out to be damaged is deleted, never renamed to the final name
        handler.payload = payload[: len(payload) // 2]
        with pytest.raises(DataPrepError, match="unusable"):
            download(url, tmp_path / "bad.tgz", verify=lambda p: verify_archive(p, []), progress=False)
        assert not (tmp_path / "bad.tgz").exists() and not (tmp_path / "bad.tgz.part").exists()
    finally:
        server.shutdown()


class MirrorHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the mini mirror over HTTP, standing in for statmt.org."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(MINI), **kwargs)

    def log_message(self, *args):
        pass


def test_wmt14_without_mirror_downloads_every_archive(tmp_path, monkeypatch):
    need(MINI)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), MirrorHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        archives = {k: wmt14.Archive(a.name, f"{base}/{a.name}", None) for k, a in wmt14.ARCHIVES.items()}
        monkeypatch.setattr(wmt14, "ARCHIVES", archives)
        paths = wmt14.locate_archives(wmt14.PAIRS["en-fr"], None, tmp_path / "downloads", progress=False)
        assert sorted(p.name for p in paths.values()) == sorted(p.name for p in MINI.iterdir())
        assert all(p.read_bytes() == (MINI / p.name).read_bytes() for p in paths.values())
        # a reference md5 that does not match keeps the file from getting its final name
        archives["dev"] = wmt14.Archive("dev.tgz", f"{base}/dev.tgz", "0" * 32)
        with pytest.raises(DataPrepError, match="md5"):
            wmt14.locate_archives(wmt14.PAIRS["en-de"], None, tmp_path / "again", progress=False)
        assert not (tmp_path / "again" / "dev.tgz").exists()
    finally:
        server.shutdown()


# --- WMT14 mini mirror, end to end -----------------------------------------------------------


@pytest.fixture(scope="module", params=["en-de", "en-fr"])
def wmt(request, tmp_path_factory):
    """Prepare one pair from the mini mirror once for all tests of this module."""
    mirror = need(MINI)
    out = tmp_path_factory.mktemp(f"wmt14-{request.param}")
    workers = "2" if request.param == "en-fr" else "1"
    assert (
        wmt14.main(["--pair", request.param, "--mirror", str(mirror), "--out", str(out), "--workers", workers, *SMALL])
        == 0
    )
    src, tgt = request.param.split("-")
    return {
        "pair": request.param,
        "src": src,
        "tgt": tgt,
        "out": out,
        "workers": workers,
        "manifest": json.loads((out / "manifest.json").read_text()),
    }


def test_wmt14_manifest_counts_agree_with_files(wmt):
    out, m = wmt["out"], wmt["manifest"]
    src, tgt = wmt["src"], wmt["tgt"]
    counts = m["line_counts"]
    # every stage's count, and the drops explaining each difference
    train = counts["train"]
    dropped = m["dropped"]["train"]
    assert train["read"] - train["after_train-text"] == sum(dropped[r] for r in ("invalid_utf8", "empty", "duplicate"))
    assert train["after_train-text"] - train["after_filter"] == dropped["too_long"] + dropped["length_ratio"]
    assert train["after_filter"] == train["binarized"] == len(lines(out / "raw" / f"train.{src}"))
    assert counts["valid"]["binarized"] == 3000 and counts["test"]["binarized"] == 3003
    # the counts docs/data_prep.md documents for WMT14-mini (vocabulary 1,000, sample 4,000)
    documented = {
        "en-de": {
            "read": 9000,
            "after_train-text": 9000,
            "after_filter": 8692,
            "empty": 0,
            "too_long": 4,
            "length_ratio": 304,
        },
        "en-fr": {
            "read": 18068,
            "after_train-text": 18049,
            "after_filter": 16892,
            "empty": 19,
            "too_long": 25,
            "length_ratio": 1132,
        },
    }[wmt["pair"]]
    assert {k: train[k] for k in ("read", "after_train-text", "after_filter")} == {
        k: documented[k] for k in ("read", "after_train-text", "after_filter")
    }
    assert {k: dropped[k] for k in ("empty", "too_long", "length_ratio")} == {
        k: documented[k] for k in ("empty", "too_long", "length_ratio")
    }
    # what was read matches the archives, corpus by corpus
    spec = wmt14.PAIRS[wmt["pair"]]
    for corpus in spec.train:
        archive = MINI / wmt14.ARCHIVES[corpus.archive].name
        data = member_bytes(archive, corpus.file(src))
        if archive.suffix == ".tar":
            data = gzip.decompress(data)
        assert m["corpora"][corpus.name]["read"] == data.count(b"\n")
    assert train["read"] == sum(c["read"] for c in m["corpora"].values())
    # every file listed in the manifest: line counts and checksums
    for rel, entry in m["outputs"].items():
        path = out / rel
        assert entry["sha256"] == sha256(path), rel
        if "lines" in entry:
            assert entry["lines"] == len(lines(path)), rel
    for split in ("train", "valid", "test"):
        for lang in (src, tgt):
            n = counts[split]["binarized"]
            assert m["outputs"][f"raw/{split}.{lang}"]["lines"] == n
            assert m["outputs"][f"spm/{split}.{lang}"]["lines"] == n
            assert m["outputs"][f"data-bin/{split}.{src}-{tgt}.{lang}.idx"]["sequences"] == n
    for entry in m["inputs"]:
        assert entry["sha256"] == sha256(Path(entry["path"])) and entry["url"].startswith("http://")
    assert m["versions"]["sentencepiece"] and m["versions"]["fairseq"] and m["versions"]["python"]
    assert set(m["directions"]) == {f"{src}-{tgt}", f"{tgt}-{src}"}
    assert all(s["status"] == "ran" for s in m["stages"])


def test_wmt14_test_and_valid_are_the_complete_sgm_sets(wmt):
    out, src, tgt = wmt["out"], wmt["src"], wmt["tgt"]
    x = tgt
    test_src = sacrebleu_sgm_lines(member_bytes(MINI / "test-full.tgz", f"test-full/newstest2014-{x}en-src.en.sgm"))
    test_ref = sacrebleu_sgm_lines(member_bytes(MINI / "test-full.tgz", f"test-full/newstest2014-{x}en-ref.{x}.sgm"))
    assert len(test_src) == len(test_ref) == 3003
    assert lines(out / "ref" / f"test.{src}") == test_src
    assert lines(out / "ref" / f"test.{tgt}") == test_ref
    # the prepared text (what the model reads) is normalised like training text
    assert lines(out / "raw" / f"test.{tgt}") == [normalize_line(t)[0] for t in test_ref]
    valid_ref = sacrebleu_sgm_lines(member_bytes(MINI / "dev.tgz", f"dev/newstest2013-ref.{x}.sgm"))
    assert len(lines(out / "raw" / f"valid.{src}")) == 3000
    assert lines(out / "ref" / f"valid.{tgt}") == valid_ref
    # ref/ is byte for byte the reference sacreBLEU calls wmt14/full, where the shared copy exists
    shared = DATA / "newstest" / f"newstest2014-{x}en.{x}"
    if shared.exists():
        assert (out / "ref" / f"test.{tgt}").read_bytes() == shared.read_bytes()
    # newstest2014 fr has one line with cp1252 dashes (U+0096): the only line where raw/ and ref/ differ
    differ = sum(a != b for a, b in zip(lines(out / "raw" / f"test.{tgt}"), test_ref))
    assert differ == (1 if x == "fr" else 0)
    assert wmt["manifest"]["normalised"]["test"][tgt]["control_fixed"] == differ


def test_wmt14_binarized_data_loads_and_decodes_to_cleaned_text(wmt):
    import sentencepiece as spm
    from fairseq.data import Dictionary, data_utils

    out, src, tgt = wmt["out"], wmt["src"], wmt["tgt"]
    d = Dictionary.load(str(out / "data-bin" / f"dict.{src}.txt"))
    assert (out / "data-bin" / f"dict.{src}.txt").read_text() == (out / "data-bin" / f"dict.{tgt}.txt").read_text()
    sp = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    assert len(d) == sp.get_piece_size() == 1000
    for split in ("train", "valid", "test"):
        for lang in (src, tgt):
            ds = data_utils.load_indexed_dataset(str(out / "data-bin" / f"{split}.{src}-{tgt}.{lang}"), d)
            text = lines(out / "raw" / f"{split}.{lang}")
            assert len(ds) == len(text)
            for i in range(len(ds)):
                ids = ds[i].tolist()
                assert ids[-1] == d.eos() and d.unk() not in ids
                assert sp.decode_pieces([d[j] for j in ids[:-1]]) == text[i], (split, lang, i)
            assert sp.decode_pieces(d.string(ds[1]).split()) == text[1]
            # spot-check that SentencePiece ids and dictionary indices coincide
            assert ds[0][:-1].tolist() == sp.encode(text[0])


def test_wmt14_second_run_does_no_work(wmt, capsys):
    out = wmt["out"]
    kept = [out / "spm.model", out / "spm.vocab"] + [
        p for d in ("raw", "ref", "spm", "data-bin") for p in (out / d).iterdir()
    ]
    before = {p: p.stat().st_mtime_ns for p in kept}
    argv = ["--pair", wmt["pair"], "--mirror", str(MINI), "--out", str(out), "--workers", wmt["workers"], *SMALL]
    assert wmt14.main(argv) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert [s["status"] for s in m["stages"]] == ["skipped"] * 8
    assert "running" not in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in kept} == before  # nothing was rewritten
    assert m["line_counts"] == wmt["manifest"]["line_counts"]


def test_decode_fairseq_generate_output_including_byte_pieces(wmt, tmp_path, capsys):
    import sentencepiece as spm

    out, tgt = wmt["out"], wmt["tgt"]
    sp = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    text = lines(out / "raw" / f"test.{tgt}")[:50] + ["Snowman \u2603 and \U0001f600!"]
    pieces = [" ".join(sp.encode(t, out_type=str)) for t in text]
    assert any("<0x" in p for p in pieces)  # rare characters became byte pieces
    gen = tmp_path / "gen.out"
    gen.write_text(
        "".join(f"S-{i}\tx\nH-{i}\t-0.5\t{p}\nD-{i}\t-0.5\tx\n" for i, p in reversed(list(enumerate(pieces))))
    )
    assert decode.main(["--spm", str(out / "spm.model"), "--generate", str(gen)]) == 0
    assert capsys.readouterr().out.split("\n")[:-1] == text


# --- WMT14: bad archives ---------------------------------------------------------------------


def mirror_with(tmp_path: Path, name: str, data: bytes) -> Path:
    """A mirror like the mini one, with ``name`` replaced by ``data``."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for f in need(MINI).iterdir():
        if f.name != name:
            (mirror / f.name).symlink_to(f)
    (mirror / name).write_bytes(data)
    return mirror


def run_wmt14(pair: str, mirror: Path, out: Path) -> None:
    wmt14.prepare(
        wmt14.build_parser().parse_args(["--pair", pair, "--mirror", str(mirror), "--out", str(out), *SMALL]), []
    )


@pytest.mark.parametrize(
    "pair, name, damage",
    [
        ("en-de", "dev.tgz", lambda b: b[: len(b) // 2]),  # truncated .tgz
        ("en-de", "training-parallel-nc-v9.tgz", lambda b: b[:5000] + bytes(x ^ 0x55 for x in b[5000:5400]) + b[5400:]),
        ("en-fr", "training-giga-fren.tar", lambda b: b[: len(b) - 70000]),  # truncated plain tar
        ("en-de", "test-full.tgz", lambda b: b"<html>Not Found</html>"),  # an error page saved as archive
    ],
)
def test_damaged_archive_fails_clearly(tmp_path, pair, name, damage):
    mirror = mirror_with(tmp_path, name, damage(need(MINI / name).read_bytes()))
    with pytest.raises(DataPrepError, match=rf"{re.escape(name)}.*(truncated or corrupt|cannot be read)"):
        run_wmt14(pair, mirror, tmp_path / "out")
    assert not (tmp_path / "out" / "work" / "stamps" / "verify-archives.json").exists()


def retar(archive: Path, rename=None, edit=None) -> bytes:
    """A copy of a .tgz with members renamed or their content edited."""
    buf = io.BytesIO()
    with tarfile.open(archive) as src, tarfile.open(fileobj=buf, mode="w:gz") as dst:
        for info in src:
            data = src.extractfile(info).read() if info.isfile() else None
            if rename:
                info.name = rename(info.name)
            if edit and data is not None:
                data = edit(info.name, data)
                info.size = len(data)
            dst.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def test_unexpected_layout_fails_naming_the_member(tmp_path):
    data = retar(need(MINI / "training-parallel-europarl-v7.tgz"), rename=lambda n: n.replace("training/", "europarl/"))
    mirror = mirror_with(tmp_path, "training-parallel-europarl-v7.tgz", data)
    with pytest.raises(
        DataPrepError,
        match=r"training-parallel-europarl-v7\.tgz: missing training/europarl-v7\.de-en\.en.*WMT14 layout",
    ):
        run_wmt14("en-de", mirror, tmp_path / "out")


def test_invalid_utf8_inside_an_archive_names_member_and_line(tmp_path):
    def edit(name, data):
        if name == "commoncrawl.de-en.de":
            rows = data.split(b"\n")
            rows[6] = rows[6][:5] + b"\xc3\x28" + rows[6][5:]
            data = b"\n".join(rows)
        return data

    data = retar(need(MINI / "training-parallel-commoncrawl.tgz"), edit=edit)
    mirror = mirror_with(tmp_path, "training-parallel-commoncrawl.tgz", data)
    with pytest.raises(
        DataPrepError, match=r"training-parallel-commoncrawl\.tgz:commoncrawl\.de-en\.de: line 7: invalid UTF-8"
    ):
        run_wmt14("en-de", mirror, tmp_path / "out")


def test_missing_archive_names_file_and_url(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for f in need(MINI).iterdir():
        if f.name != "training-parallel-un.tgz":
            (mirror / f.name).symlink_to(f)
    with pytest.raises(
        DataPrepError,
        match=r"training-parallel-un\.tgz \(download it from http://statmt\.org/wmt13/training-parallel-un\.tgz\)",
    ):
        run_wmt14("en-fr", mirror, tmp_path / "out")


def test_cli_prints_error_and_exits_1_without_traceback(tmp_path):
    mirror = mirror_with(tmp_path, "dev.tgz", (need(MINI) / "dev.tgz").read_bytes()[:20000])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_prep.wmt14",
            "--pair",
            "en-de",
            "--mirror",
            str(mirror),
            "--out",
            str(tmp_path / "o"),
            *SMALL,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "dev.tgz" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "data_prep.wmt14", "--pair", "de-en", "--out", str(tmp_path / "o")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "use --pair en-de" in proc.stderr


# --- data_prep.parallel ----------------------------------------------------------------------


def test_multi30k_through_parallel_is_ready_for_fairseq_train(tmp_path_factory):
    from fairseq.data import Dictionary
    from fairseq.tasks.translation import load_langpair_dataset

    m30k = need(DATA / "multi30k")
    out = tmp_path_factory.mktemp("multi30k")
    argv = [
        "--src",
        "en",
        "--tgt",
        "de",
        "--train",
        str(m30k / "train"),
        "--valid",
        str(m30k / "val"),
        "--test",
        str(m30k / "test_2016_flickr"),
        "--out",
        str(out),
        "--workers",
        "2",
        *SMALL,
    ]
    assert parallel.main(argv) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["line_counts"]["train"]["read"] == 29000
    assert m["line_counts"]["valid"]["binarized"] == 1014 and m["line_counts"]["test"]["binarized"] == 1000
    assert lines(out / "raw" / "test.de") == lines(m30k / "test_2016_flickr.de")  # already clean text
    d = Dictionary.load(str(out / "data-bin" / "dict.en.txt"))
    # what fairseq-train does to load data, in both directions
    for s, t in (("en", "de"), ("de", "en")):
        ds = load_langpair_dataset(
            str(out / "data-bin"),
            "train",
            s,
            d,
            t,
            d,
            combine=False,
            dataset_impl=None,
            upsample_primary=1,
            left_pad_source=True,
            left_pad_target=False,
            max_source_positions=1024,
            max_target_positions=1024,
        )
        assert len(ds) == m["line_counts"]["train"]["binarized"] > 20000
    # a re-run is a no-op
    assert parallel.main(argv) == 0
    assert all(s["status"] == "skipped" for s in json.loads((out / "manifest.json").read_text())["stages"])


def test_tatoeba_gz_with_heldout_split_has_no_leak(tmp_path):
    tato = need(DATA / "tatoeba")
    prefix = tmp_path / "deu-eng"
    for lang in ("en", "de"):  # the first 4000 pairs, still gzipped: the many repeats make leaks likely
        with gzip.open(tato / f"deu-eng.2018-05-13.{lang}.gz", "rb") as f:
            head = b"".join(f.readline() for _ in range(4000))
        with gzip.open(f"{prefix}.{lang}.gz", "wb") as f:
            f.write(head)
    out = tmp_path / "out"
    argv = [
        "--src",
        "en",
        "--tgt",
        "de",
        "--train",
        str(prefix),
        "--valid-size",
        "200",
        "--test-size",
        "200",
        "--out",
        str(out),
        "--workers",
        "1",
        "--vocab-size",
        "600",
        "--no-progress",
    ]
    assert parallel.main(argv) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["dropped"]["train"]["heldout"] == 400 and m["dropped"]["train"]["heldout_overlap"] > 0
    assert len(lines(out / "raw" / "valid.en")) == len(lines(out / "raw" / "test.de")) == 200
    train_en = set(lines(out / "raw" / "train.en"))
    train_de = set(lines(out / "raw" / "train.de"))
    for split in ("valid", "test"):
        assert not train_en & set(lines(out / "raw" / f"{split}.en"))
        assert not train_de & set(lines(out / "raw" / f"{split}.de"))


def test_parallel_bad_input_fails_naming_file_and_line(tmp_path):
    write(tmp_path / "t.en", b"a\nb\nc\n")
    write(tmp_path / "t.de", b"A\nB\n")
    write(tmp_path / "v.en", b"x\n")
    write(tmp_path / "v.de", b"\xe4\n")  # latin-1, not UTF-8
    base = ["--src", "en", "--tgt", "de", "--out", str(tmp_path / "o"), "--no-progress"]

    def run(*extra):
        with pytest.raises(DataPrepError) as err:
            parallel.prepare(parallel.build_parser().parse_args(base + list(extra)), [])
        return str(err.value)

    assert re.search(
        r"v\.de: line 1: invalid UTF-8", run("--train", str(tmp_path / "t"), "--valid", str(tmp_path / "v"))
    )
    write(tmp_path / "v.de", b"X\n")
    msg = run("--train", str(tmp_path / "t"), "--valid", str(tmp_path / "v"))
    assert "t.de has 2 lines" in msg and "t.en has 3" in msg and "line 3" in msg
    assert "no file" in run("--train", str(tmp_path / "nothing"), "--valid", str(tmp_path / "v"))
    assert "validation set" in run("--train", str(tmp_path / "t"))
