"""data_prep under change and under fault: re-runs after each option and input change, kill -9 at
any point, full disks and impossible paths, and a seeded corruption fuzz of the inputs.

Self-contained: a synthetic corpus (no shared data needed). Most runs replace fairseq-preprocess by
a fast stand-in that writes the same file names (the stage logic is what is under test; fairseq
costs 4 s a run); the kill -9 tests and one re-run test use the real one.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from data_prep import binarize, clean, parallel, stages, subword
from data_prep.clean import length_drop_reason, normalize_line
from data_prep.errors import DataPrepError
from data_prep.sgm import parse_sgm
from fairseq_resmlp_tools import _fs

REPO = Path(__file__).resolve().parents[1]
STAGES = ["eval-text", "train-text", "spm-sample", "spm-train", "encode", "filter", "binarize"]
BASE = [
    "--vocab-size",
    "300",
    "--spm-sample",
    "300",
    "--max-len",
    "60",
    "--len-ratio",
    "1.5",
    "--workers",
    "1",
    "--no-progress",
]


# --- a synthetic corpus and a fast stand-in for fairseq-preprocess --------------------------------


def write_corpus(folder: Path, seed: int = 0, n_train: int = 400) -> Path:
    """train/valid/test .en/.de of random words, with repeats (for --dedup) and long lines (for the filters)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8))) for _ in range(200)]

    def sent(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    for split, n in (("train", n_train), ("valid", 20), ("test", 20)):
        src: List[str] = []
        tgt: List[str] = []
        for i in range(n):
            if split == "train" and i % 50 == 7 and src:
                src.append(src[-1])  # an exact repeat
                tgt.append(tgt[-1])
                continue
            k = rng.randint(1, 12)
            src.append(sent(k))
            tgt.append(sent(max(1, k + rng.randint(-2, 2))))
        (folder / f"{split}.en").write_text("\n".join(src) + "\n", encoding="utf-8")
        (folder / f"{split}.de").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return folder


def fake_preprocess(src, tgt, prefixes, dictionary, destdir, workers, log_path, progress=False) -> Dict[str, dict]:
    """What binarize needs from fairseq-preprocess, in milliseconds: the pieces as .bin, an mmap .idx header."""
    destdir.mkdir(parents=True)
    for lang in (src, tgt):
        shutil.copyfile(dictionary, destdir / f"dict.{lang}.txt")
    for split, prefix in prefixes.items():
        for lang in (src, tgt):
            data = Path(f"{prefix}.{lang}").read_bytes()
            stem = destdir / f"{split}.{src}-{tgt}.{lang}"
            Path(f"{stem}.bin").write_bytes(data)
            header = b"MMIDIDX\x00\x00" + struct.pack("<QB", 1, 4) + struct.pack("<Q", data.count(b"\n"))
            Path(f"{stem}.idx").write_bytes(header)
    log_path.write_text("fake\n")
    return {}


@pytest.fixture
def fast_binarize(monkeypatch):
    monkeypatch.setattr(binarize, "run_preprocess", fake_preprocess)


def argv_for(corpus: Path, out: Path, *extra: str, test: bool = True) -> List[str]:
    argv = ["--src", "en", "--tgt", "de", "--train", str(corpus / "train"), "--out", str(out)]
    if "--valid-size" not in extra:
        argv += ["--valid", str(corpus / "valid")]
    if test and "--test-size" not in extra:
        argv += ["--test", str(corpus / "test")]
    return argv + BASE + list(extra)


def run(argv: List[str]) -> dict:
    assert parallel.main(argv) == 0
    out = Path(argv[argv.index("--out") + 1])
    return json.loads((out / "manifest.json").read_text())


def ran(manifest: dict) -> List[str]:
    return [s["name"] for s in manifest["stages"] if s["status"] == "ran"]


def snapshot(out: Path, corpus: Optional[Path] = None) -> Dict[str, bytes]:
    """Every file outside work/ (hidden leftovers included), manifest.json without what may differ.

    fairseq's preprocess.log names the output directory and the manifest the inputs: with ``corpus``
    given, both paths are replaced by placeholders so that runs in other directories compare.
    """
    files = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out).as_posix()
        if p.is_file() and not rel.startswith("work/") and rel not in (".lock", "manifest.json"):
            files[rel] = p.read_bytes()
    m = json.loads((out / "manifest.json").read_text())
    for key in ("command", "started", "finished"):
        m.pop(key)
    m["options"].pop("out")
    m["options"].pop("force")
    m["options"].pop("progress")
    m["stages"] = [(s["name"], s["stats"]) for s in m["stages"]]
    if corpus is not None:
        m["outputs"].pop("data-bin/preprocess.log")  # compared above, paths replaced
    files["manifest.json"] = json.dumps(m, sort_keys=True).encode()
    if corpus is not None:
        for rel, data in files.items():
            files[rel] = data.replace(str(out).encode(), b"<OUT>").replace(str(corpus).encode(), b"<CORPUS>")
    return files


def same_size_edit(path: Path, line: int = 3) -> None:
    """Change a line's content, keeping the file's size and mtime (only the content tells)."""
    st = path.stat()
    rows = path.read_bytes().split(b"\n")
    rows[line] = bytes(reversed(rows[line])) if rows[line] != bytes(reversed(rows[line])) else rows[line].upper()
    path.write_bytes(b"\n".join(rows))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


# --- change one option or input, re-run: exactly the dependent stages run, output = a clean run ----

ALL_AFTER_SPM = ["spm-train", "encode", "filter", "binarize"]
OPTION_CASES = [
    # (changed arguments, stages that must re-run)
    (["--vocab-size", "320"], ALL_AFTER_SPM),
    (["--model-type", "bpe"], ALL_AFTER_SPM),
    (["--spm-sample", "200"], ["spm-sample"] + ALL_AFTER_SPM),
    (["--seed", "2"], ["spm-sample"] + ALL_AFTER_SPM),  # a different sample
    (["--spm-threads", "4"], ["spm-train", "encode"]),  # the model file records its thread count only
    (["--character-coverage", "1.0"], ["spm-train", "encode"]),  # same pieces for 26 letters
    (["--max-len", "40"], ["filter", "binarize"]),
    (["--len-ratio", "2"], ["filter", "binarize"]),
    (["--len-ratio", "0", "--max-len", "0"], ["filter", "binarize"]),
    (["--dedup"], ["train-text", "spm-sample"] + ALL_AFTER_SPM),
    (["--drop-invalid-utf8"], ["train-text"]),  # same text: nothing after it changes
    (["--workers", "2"], []),  # the output does not depend on the number of processes
    (["--force"], STAGES),
]


@pytest.fixture
def base_run(tmp_path, fast_binarize) -> Path:
    """A complete run with the base settings in tmp_path/r (corpus in r/corpus, output in r/out)."""
    root = tmp_path / "r"
    run(argv_for(write_corpus(root / "corpus"), root / "out"))
    return root


def copy_base(base: Path, to: Path) -> Path:
    return base if base == to else Path(shutil.copytree(base, to, symlinks=True))


def test_a_moved_output_and_corpus_stay_up_to_date(base_run, tmp_path):
    moved = copy_base(base_run, tmp_path / "moved")
    m = run(argv_for(moved / "corpus", moved / "out"))
    assert ran(m) == []  # content keys, not paths
    # and the manifest names the files where they are now
    assert str(base_run) not in json.dumps(m)
    run(argv_for(moved / "corpus", tmp_path / "clean"))
    assert snapshot(moved / "out") == snapshot(tmp_path / "clean")


@pytest.mark.parametrize("change, expected", OPTION_CASES, ids=[" ".join(c[0]) for c in OPTION_CASES])
def test_option_change_reruns_exactly_the_dependent_stages(base_run, tmp_path, fast_binarize, change, expected):
    root = copy_base(base_run, tmp_path / "r")
    m = run(argv_for(root / "corpus", root / "out", *change))
    assert ran(m) == expected
    assert ran(run(argv_for(root / "corpus", root / "out", *change))) == ([] if "--force" not in change else STAGES)
    clean_run = run(argv_for(root / "corpus", tmp_path / "clean", *change))
    assert ran(clean_run) == STAGES
    assert snapshot(root / "out") == snapshot(tmp_path / "clean")


INPUT_CASES = [
    # (file to edit keeping size and mtime, stages that must re-run)
    # line 4 is not in the SentencePiece sample: the same sample, so the same model (no cascade)
    ("train.en", ["train-text", "spm-sample", "encode", "filter", "binarize"]),
    ("train.de", ["train-text", "spm-sample", "encode", "filter", "binarize"]),
    ("valid.en", ["eval-text", "encode", "binarize"]),
    ("valid.de", ["eval-text", "encode", "binarize"]),
    ("test.en", ["eval-text", "encode", "binarize"]),
    ("test.de", ["eval-text", "encode", "binarize"]),
]


@pytest.mark.parametrize("name, expected", INPUT_CASES, ids=[c[0] for c in INPUT_CASES])
def test_input_content_change_reruns_exactly_the_dependent_stages(base_run, tmp_path, fast_binarize, name, expected):
    root = copy_base(base_run, tmp_path / "r")
    argv = argv_for(root / "corpus", root / "out")
    same_size_edit(root / "corpus" / name)
    assert ran(run(argv)) == expected
    run(argv_for(root / "corpus", tmp_path / "clean"))
    assert snapshot(root / "out") == snapshot(tmp_path / "clean")


@pytest.mark.parametrize(
    "change, expected",
    [
        ("swap valid and test", ["eval-text", "encode", "binarize"]),
        ("no test", ["eval-text", "encode", "binarize"]),
        ("held-out valid", ["eval-text", "train-text", "spm-sample"] + ALL_AFTER_SPM),
    ],
)
def test_split_changes_rerun_and_leave_no_stale_split(base_run, tmp_path, fast_binarize, change, expected):
    root = copy_base(base_run, tmp_path / "r")

    def argv(out: Path) -> List[str]:
        c = root / "corpus"
        if change == "swap valid and test":
            a = argv_for(c, out, test=False) + ["--test", str(c / "valid")]
            a[a.index("--valid") + 1] = str(c / "test")
            return a
        if change == "no test":
            return argv_for(c, out, test=False)
        return argv_for(c, out, "--valid-size", "20")

    assert ran(run(argv(root / "out"))) == expected
    run(argv(tmp_path / "clean"))
    assert snapshot(root / "out") == snapshot(tmp_path / "clean")


def test_option_change_with_the_real_fairseq_preprocess(tmp_path):
    root = tmp_path / "r"
    run(argv_for(write_corpus(root / "corpus"), root / "out"))
    argv = argv_for(root / "corpus", root / "out", "--max-len", "40")
    assert ran(run(argv)) == ["filter", "binarize"]
    run(argv_for(root / "corpus", tmp_path / "clean", "--max-len", "40"))
    assert snapshot(root / "out", root / "corpus") == snapshot(tmp_path / "clean", root / "corpus")


def test_checksum_cache_is_not_fooled_by_same_size_and_mtime(tmp_path):
    cache = stages.ChecksumCache(tmp_path / "sums.json")
    f = tmp_path / "f.txt"
    f.write_text("abc\n")
    old = cache.sha256(f)
    same_size_edit(f, line=0)
    assert cache.sha256(f) != old
    cache.save()
    assert stages.ChecksumCache(tmp_path / "sums.json").sha256(f) == cache.sha256(f)


def test_input_changed_while_a_stage_reads_it_is_an_error(tmp_path):
    runner = stages.StageRunner(
        tmp_path, tmp_path / "stamps", stages.ChecksumCache(tmp_path / "s.json"), log=lambda m: None
    )
    src = tmp_path / "in.txt"
    src.write_text("one\n")
    out = tmp_path / "out.txt"

    def action(ctx):
        ctx.tmp(out).write_text(src.read_text())
        src.write_text("two\n")  # another program rewrites the input meanwhile

    with pytest.raises(DataPrepError, match=r"in\.txt: changed while stage s was reading it"):
        runner.run(stages.Stage("s", action, inputs=[src], outputs=[out]))
    assert not out.exists() and not (tmp_path / "stamps" / "s.json").exists()


# --- empty splits, full disks, impossible paths: one line naming the path, exit 1 ------------------


def cli_error(argv: List[str], capsys) -> str:
    rc = parallel.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1, err
    assert err[-1].startswith("error: ") and not any("Traceback" in line for line in err)
    return err[-1]


@pytest.mark.parametrize(
    "edit, extra, message",
    [
        ({"train.en": b"", "train.de": b""}, [], r"no training pairs left in .*train\.en.*the files are empty"),
        ({"train.en": b"\n \n", "train.de": b"a\nb\n"}, [], r"no training pairs left in .*train\.en.*empty 2"),
        ({"valid.en": b"", "valid.de": b""}, [], r"valid\.en and .*valid\.de: no sentences"),
        ({}, ["--max-len", "1"], r"length filter dropped all .*--max-len"),
        ({"train.en": b"a b\n" * 400}, ["--len-ratio", "1.01"], r"length filter dropped all .*--len-ratio"),
        ({"train.en": None}, [], r"no file .*train\.en"),
    ],
)
def test_empty_split_or_input_is_an_error_naming_file_or_option(tmp_path, capsys, fast_binarize, edit, extra, message):
    corpus = write_corpus(tmp_path / "c")
    for name, data in edit.items():
        if data is None:
            (corpus / name).unlink()
        else:
            (corpus / name).write_bytes(data)
    assert re.search(message, cli_error(argv_for(corpus, tmp_path / "o", *extra), capsys))


class FullDisk(io.StringIO):
    """A text file whose writes fail as on a full disk, after ``room`` characters."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def write(self, s: str) -> int:
        self.room -= len(s)
        if self.room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(s)


# Stage stamps and the manifest are written through the shared atomic writer (fairseq_resmlp_tools._fs).
@pytest.mark.parametrize("module", [clean, subword, _fs])
def test_full_disk_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch, fast_binarize, module):
    real_open = open

    def full_open(path, mode="r", *args, **kwargs):
        if "w" in mode and "b" not in mode:
            return FullDisk(100)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(module, "open", full_open, raising=False)
    corpus = write_corpus(tmp_path / "c")
    msg = cli_error(argv_for(corpus, tmp_path / "o"), capsys)
    assert "No space left on device" in msg and str(tmp_path / "o") in msg
    # and nothing half-written is left under a final name: a run with space finishes cleanly
    monkeypatch.undo()
    monkeypatch.setattr(binarize, "run_preprocess", fake_preprocess)
    run(argv_for(corpus, tmp_path / "o"))
    run(argv_for(corpus, tmp_path / "clean"))
    assert snapshot(tmp_path / "o") == snapshot(tmp_path / "clean")


def test_impossible_and_unwritable_output_paths(tmp_path, capsys, monkeypatch, fast_binarize):
    corpus = write_corpus(tmp_path / "c")
    (tmp_path / "file").write_text("x")
    msg = cli_error(argv_for(corpus, tmp_path / "file" / "out"), capsys)
    assert msg.startswith(f"error: {tmp_path / 'file' / 'out'}") and "Not a directory" in msg
    msg = cli_error(argv_for(corpus, tmp_path / "file"), capsys)
    assert str(tmp_path / "file") in msg
    real_mkdir = Path.mkdir

    def denied(self, *args, **kwargs):
        if self.name == "raw":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", denied)
    msg = cli_error(argv_for(corpus, tmp_path / "o"), capsys)
    assert msg.startswith(f"error: {tmp_path / 'o' / 'raw'}: Permission denied")


def test_cli_error_without_traceback_in_a_subprocess(tmp_path):
    corpus = write_corpus(tmp_path / "c")
    (corpus / "valid.de").write_bytes(b"\xe4\n" * 20)
    proc = subprocess.run(
        [sys.executable, "-m", "data_prep.parallel", *argv_for(corpus, tmp_path / "o")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {corpus / 'valid.de'}: line 1: invalid UTF-8")


# --- kill -9 at any point: no orphan, and the same command gives the clean run's bytes -------------


def our_processes(marker: str) -> List[int]:
    """Live processes whose command line mentions ``marker`` (the run's output directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if (
                    marker.encode() in (entry / "cmdline").read_bytes()
                    and "Z" not in (entry / "stat").read_text().split(")")[-1][:3]
                ):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.fixture(scope="module")
def clean_real(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean-real")
    corpus = write_corpus(root / "corpus")
    run(argv_for(corpus, root / "out", "--workers", "2"))
    return root


def binarize_log_has(pattern: str):
    """A kill point: fairseq-preprocess's log (work/binarize.log) contains ``pattern``.

    States, not delays: a fixed sleep lands at a different point on every machine (a fast CI host once
    finished the whole run inside 3.5 s, so the kill hit nothing).
    """

    def reached(out: Path) -> bool:
        try:
            return pattern in (out / "work" / "binarize.log").read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return False

    return reached


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    "trigger, delay",
    [
        pytest.param("[spm-train] running", 0.0, marks=pytest.mark.slow),
        ("[encode] running", 0.05),
        # fairseq started (its command line is in the log) and has not written anything yet
        ("[binarize] fairseq-preprocess", binarize_log_has("fairseq-preprocess --source-lang")),
        # fairseq is part-way: one file binarized ("N sents, M tokens"), the others not yet
        pytest.param("[binarize] fairseq-preprocess", binarize_log_has(" sents, "), marks=pytest.mark.slow),
        pytest.param("[binarize] done", 0.0, marks=pytest.mark.slow),
    ],
)
def test_kill_9_then_same_command_is_byte_identical_and_leaves_no_orphan(clean_real, tmp_path, trigger, delay):
    corpus = shutil.copytree(clean_real / "corpus", tmp_path / "corpus")
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "data_prep.parallel", *argv_for(corpus, out, "--workers", "2")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in proc.stderr:
            if line.startswith(trigger):
                if callable(delay):  # poll for the state, at most 60 s; the run must still be going
                    deadline = time.monotonic() + 60
                    while not delay(out) and proc.poll() is None and time.monotonic() < deadline:
                        time.sleep(0.005)
                    assert delay(out), f"the run ended before the kill point after {trigger!r}"
                else:
                    time.sleep(delay)
                proc.kill()  # the parent only: its children must go with it
                break
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, f"the run ended before {trigger!r}"
        # fairseq takes seconds to start: one that outlived its parent would still be there now
        deadline = time.monotonic() + 1
        while our_processes(str(out)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert our_processes(str(out)) == []
        again = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)  # at once
        assert again.returncode == 0, again.stderr
    finally:  # cleanup if the test failed half-way: the run, and any child of it that survived
        for pid in [proc.pid] + our_processes(str(out)):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    expected = snapshot(clean_real / "out", clean_real / "corpus")
    got = snapshot(out, corpus)
    assert sorted(got) == sorted(expected)
    assert got == expected


# --- seeded corruption fuzz of the inputs -------------------------------------------------------


def corrupt(data: bytes, rng: random.Random) -> bytes:
    kind = rng.choice(["flip", "drop", "truncate", "invisible"])
    if kind == "flip" and data:
        b = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == "drop":
        rows = data.split(b"\n")
        del rows[rng.randrange(len(rows))]
        return b"\n".join(rows)
    if kind == "truncate":
        return data[: rng.randrange(len(data) + 1)]
    rows = data.split(b"\n")  # invisible characters that must not reach the model
    i = rng.randrange(len(rows))
    rows[i] = rows[i][:3] + rng.choice(["\ufeff", "\x00", "\x92", "\u2581", "\x1f", "\r"]).encode() + rows[i][3:]
    return b"\n".join(rows)


def expected_lines(data: bytes) -> Optional[List[str]]:
    """The lines of a file as the pipeline must read them; None where it must stop (not UTF-8)."""
    rows = data.split(b"\n")
    if rows and rows[-1] == b"":
        rows.pop()
    try:
        return [r.decode("utf-8") for r in rows]
    except UnicodeDecodeError:
        return None


def check_output(out: Path, files: Dict[str, bytes], max_len: int, ratio: float) -> None:
    """The outputs equal what the (corrupted) inputs must give, computed independently of the pipeline."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    text = {name: expected_lines(data) for name, data in files.items()}
    for split in ("valid", "test"):
        for lang in ("en", "de"):
            rows = text[f"{split}.{lang}"]
            assert (out / "raw" / f"{split}.{lang}").read_text().split("\n")[:-1] == [
                normalize_line(r)[0] for r in rows
            ]
            assert (out / "ref" / f"{split}.{lang}").read_text().split("\n")[:-1] == [
                normalize_line(r, repair_controls=False)[0] for r in rows
            ]
    pairs = [(normalize_line(a)[0], normalize_line(b)[0]) for a, b in zip(text["train.en"], text["train.de"])]
    kept = [
        (a, b)
        for a, b in pairs
        if a and b and length_drop_reason(len(sp.encode(a)), len(sp.encode(b)), max_len, ratio) is None
    ]
    assert (out / "raw" / "train.en").read_text().split("\n")[:-1] == [a for a, _ in kept]
    assert (out / "raw" / "train.de").read_text().split("\n")[:-1] == [b for _, b in kept]
    for split in ("train", "valid", "test"):
        for lang in ("en", "de"):
            raw = (out / "raw" / f"{split}.{lang}").read_text().split("\n")[:-1]
            pieces = (out / "spm" / f"{split}.{lang}").read_text().split("\n")[:-1]
            assert [sp.decode_pieces(p.split()) for p in pieces] == raw  # decoding gives the prepared text
            assert all("\u2581" not in r and r.isprintable() for r in raw)
    m = json.loads((out / "manifest.json").read_text())
    for rel, entry in m["outputs"].items():
        assert entry["sha256"] == hashlib.sha256((out / rel).read_bytes()).hexdigest()


def test_corruption_fuzz(tmp_path, capsys, fast_binarize):
    rng = random.Random(1234)
    base = write_corpus(tmp_path / "base", n_train=150)
    names = [f"{s}.{lang}" for s in ("train", "valid", "test") for lang in ("en", "de")]
    outcomes = {"ok": 0, "error": 0}
    start = time.monotonic()
    for case in range(30):
        corpus = tmp_path / f"c{case}"
        shutil.copytree(base, corpus)
        victim = rng.choice(names)
        if rng.random() < 0.25:  # some gzipped inputs: truncation and flips hit the gzip stream
            data = corrupt(gzip.compress((base / victim).read_bytes(), mtime=0), rng)
            (corpus / victim).unlink()
            (corpus / f"{victim}.gz").write_bytes(data)
        else:
            (corpus / victim).write_bytes(corrupt((base / victim).read_bytes(), rng))
        rc = parallel.main(argv_for(corpus, tmp_path / f"o{case}", "--max-len", "12"))
        err = capsys.readouterr().err.strip().splitlines()
        if rc == 0:
            files = {
                n: (corpus / n).read_bytes()
                if (corpus / n).exists()
                else gzip.decompress((corpus / f"{n}.gz").read_bytes())
                for n in names
            }
            assert all(expected_lines(d) is not None for d in files.values()), f"case {case}: accepted bad UTF-8"
            en, de = (expected_lines(files[f"train.{x}"]) for x in ("en", "de"))
            assert len(en) == len(de), f"case {case}: accepted files of different lengths"
            check_output(tmp_path / f"o{case}", files, 12, 1.5)
            outcomes["ok"] += 1
        else:
            assert rc == 1 and err[-1].startswith("error: ") and not any("Traceback" in e for e in err), err
            assert str(corpus / victim.split(".")[0]) in err[-1] or "--" in err[-1], err[-1]
            outcomes["error"] += 1
    assert outcomes["ok"] >= 5 and outcomes["error"] >= 5, outcomes
    assert time.monotonic() - start < 60


SGM = b"""<srcset setid="t" srclang="any">
<doc docid="d1" genre="news">
<seg id="1">Standard & Poor&apos;s &amp; co &#233;t&#xE9;</seg>
<seg id="2">  two\xc2\xa0 spaces </seg>
</doc>
<doc docid="d2">
<seg id="1">third</seg>
</doc>
</srcset>
"""


def test_sgm_fuzz_only_ever_raises_data_prep_errors():
    rng = random.Random(7)
    for _ in range(300):
        data = corrupt(SGM, rng)
        try:
            segments = parse_sgm(data, "x.sgm")
        except DataPrepError as exc:
            assert str(exc).startswith("x.sgm")
        else:
            assert all("<seg" not in s.text and "</seg" not in s.text for s in segments)
