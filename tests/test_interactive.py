"""resmlp-interactive: one record per input line whose id is the line number, for any --buffer-size; over-long
lines stop the run or are reported; --output-text; the same hypotheses as fairseq-interactive.

Runs on the 0.1.0 checkpoint fixture (word-level, 24 source positions): nothing is trained. The tool runs
in-process (fairseq's import is paid once); fairseq-interactive once, as a command, for the comparison.
"""

import json
import re
from pathlib import Path

import pytest
from helpers import V1_CHECKPOINT_DIR, run_fairseq

from fairseq_resmlp_tools import interactive
from fairseq_resmlp_tools.fairseq_io import user_dir

EXPECTED = json.loads((V1_CHECKPOINT_DIR / "expected.json").read_text())
SOURCES = EXPECTED["sources"]
LIMIT = 24  # the fixture's max_source_positions
OVERLONG = " ".join(["buuk"] * 30)  # 31 tokens with the end of sentence
# Translated lines, an empty line (fairseq translates it from EOS alone), two over-long lines (ids 3 and 8).
LINES = [SOURCES[0], SOURCES[1], "", OVERLONG, SOURCES[2], SOURCES[3], SOURCES[4], SOURCES[5], OVERLONG, SOURCES[6]]
SKIPPED_IDS = [3, 8]
COMMON = ["--path", str(V1_CHECKPOINT_DIR / "checkpoint.pt"), "--source-lang", "src", "--target-lang", "tgt"]
COMMON += ["--beam", "4"]
SKIP = "--skip-invalid-size-inputs-valid-test"


@pytest.fixture(scope="module")
def input_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("interactive") / "input.txt"
    path.write_text("".join(line + "\n" for line in LINES), encoding="utf-8")
    return path


def run_tool(capsys, input_file: Path, *extra: str):
    """(exit status, stdout, stderr) of resmlp-interactive run in-process."""
    code = interactive.main([str(V1_CHECKPOINT_DIR), *COMMON, "--input", str(input_file), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def records(stdout: str) -> dict:
    """{kind: {id: [fields after the id, one list per record]}} of the S-/H-/D-/P-/E-... lines."""
    found: dict = {}
    for line in stdout.splitlines():
        m = re.match(r"^([A-Z])-(\d+)\t(.*)$", line)
        assert m, f"not a record: {line!r}"
        found.setdefault(m.group(1), {}).setdefault(int(m.group(2)), []).append(m.group(3))
    return found


def check_aligned(stdout: str) -> dict:
    """Every input line has exactly one S- record; a D-, H-, P- record unless skipped, an E- record if so."""
    found = records(stdout)
    n = len(LINES)
    assert sorted(found["S"]) == list(range(n)) and all(len(v) == 1 for v in found["S"].values())
    translated = [i for i in range(n) if i not in SKIPPED_IDS]
    for kind in "HDPW":
        assert sorted(found[kind]) == translated, kind
    assert sorted(found["E"]) == SKIPPED_IDS
    for i in SKIPPED_IDS:
        assert found["E"][i] == [f"skipped: 31 tokens > max_source_positions {LIMIT}"]
    # The record order is the input order.
    assert [int(m) for m in re.findall(r"^S-(\d+)\t", stdout, flags=re.M)] == list(range(n))
    return found


@pytest.mark.parametrize("buffer_size", [1, 3, 64])
def test_ids_are_input_line_numbers_for_any_buffer_size(capsys, input_file, buffer_size):
    code, out, err = run_tool(capsys, input_file, SKIP, "--allow-skipped", "--buffer-size", str(buffer_size))
    assert code == 0, err
    found = check_aligned(out)
    # Each translated line's hypothesis is the fixture's (recorded with 0.1.0) for that line: nothing shifted.
    for line_id, source in enumerate(LINES):
        if source in SOURCES:
            text = found["D"][line_id][0].split("\t", 1)[1]
            assert text == EXPECTED["beam4_text"][SOURCES.index(source)], line_id
    # The empty line is translated (fairseq's behaviour: the model sees the end of sentence alone).
    assert found["S"][2] == [""] and len(found["D"][2]) == 1


def test_same_records_as_fairseq_interactive(capsys, input_file):
    """fairseq-interactive skips the over-long lines silently; on every line it translates, resmlp-interactive
    prints the same S-, H-, D- and P- records (scores in base 2)."""
    code, out, _ = run_tool(capsys, input_file, SKIP, "--allow-skipped", "--buffer-size", "3")
    assert code == 0
    ours = records(out)
    proc = run_fairseq(
        ["fairseq-interactive", V1_CHECKPOINT_DIR, "--user-dir", user_dir(), *COMMON, SKIP, "--buffer-size", "3"],
        cwd=input_file.parent,
        stdin=input_file.read_text(),
    )
    theirs = records("\n".join(line for line in proc.stdout.splitlines() if re.match(r"^[A-Z]-\d+\t", line)))
    translated = [i for i in range(len(LINES)) if i not in SKIPPED_IDS]
    assert sorted(theirs["D"]) == translated  # fairseq: no record at all for ids 3 and 8
    for kind in "SHDP":
        assert {i: ours[kind][i] for i in translated} == theirs[kind], kind
    # The documented `grep ^D- | cut -f3` recipe is shifted from the first skipped line on.
    cut = [line.split("\t")[2] for line in proc.stdout.splitlines() if line.startswith("D-")]
    assert len(cut) == len(LINES) - len(SKIPPED_IDS)


def test_overlong_line_without_the_skip_flag_stops_before_translating(capsys, input_file):
    code, out, err = run_tool(capsys, input_file, "--buffer-size", "2")
    assert code == 1
    assert out == ""  # nothing translated, not even the lines before it
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err
    assert "input line 4 (id 3) has 31 tokens" in errors[0] and f"max_source_positions {LIMIT}" in errors[0]
    assert "2 over-long lines in all: 4, 9" in errors[0] and SKIP in errors[0]


def test_skipped_lines_are_reported_with_a_distinct_exit_status(capsys, input_file):
    code, out, err = run_tool(capsys, input_file, SKIP)
    assert code == interactive.EXIT_SKIPPED == 3
    check_aligned(out)
    assert "skipped 2 of 10 input line(s), longer than max_source_positions 24: line(s) 4, 9 (ids 3, 8)" in err


def test_output_text_one_line_per_input_line(capsys, input_file, tmp_path):
    short = tmp_path / "short.txt"
    kept = [i for i in range(len(LINES)) if i not in SKIPPED_IDS]
    short.write_text("".join(LINES[i] + "\n" for i in kept), encoding="utf-8")
    target = tmp_path / "out" / "hyp.txt"  # the directory is created
    code = interactive.main([str(V1_CHECKPOINT_DIR), *COMMON, "--input", str(short), "--output-text", str(target)])
    out, err = capsys.readouterr()
    assert code == 0, err
    texts = target.read_text(encoding="utf-8").split("\n")
    assert texts[-1] == "" and len(texts) - 1 == len(kept)
    found = records(out)
    assert texts[:-1] == [found["D"][i][0].split("\t", 1)[1] for i in range(len(kept))]
    assert [p.name for p in target.parent.iterdir()] == ["hyp.txt"]  # no temporary file left


def test_output_text_is_refused_when_lines_were_skipped(capsys, input_file, tmp_path):
    target = tmp_path / "hyp.txt"
    code, out, err = run_tool(capsys, input_file, SKIP, "--output-text", str(target))
    assert code == interactive.EXIT_SKIPPED
    assert not target.exists() and list(tmp_path.iterdir()) == []
    assert f"error: --output-text {target} not written: 2 line(s) have no translation" in err
    # With --allow-skipped: the skipped lines are empty lines, the others their translations, in input order.
    code, out, err = run_tool(capsys, input_file, SKIP, "--allow-skipped", "--output-text", str(target))
    assert code == 0
    texts = target.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(texts) == len(LINES)
    found = records(out)
    for i, text in enumerate(texts):
        assert text == ("" if i in SKIPPED_IDS else found["D"][i][0].split("\t", 1)[1]), i
    assert f"wrote {target}: 10 lines, 2 of them empty (skipped)" in err


def test_input_errors_are_one_line(capsys, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(SOURCES[0].encode() + b"\n\xff\xfe broken\n")
    code, _, err = run_tool(capsys, bad)
    assert code == 1 and f"error: {bad}, line 2: not UTF-8" in err and "Traceback" not in err
    code, _, err = run_tool(capsys, bad, "--output-text", str(bad / "x.txt"))
    assert code == 1 and f"error: cannot create the output directory {bad}: {bad} is a file" in err
    # Lines end at \n only (fairseq would also split at the lone \r): the ids stay `wc -l` line numbers.
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(f"{SOURCES[0]}\r\n{SOURCES[1]}\r\n".encode())
    code, out, _ = run_tool(capsys, crlf)
    assert code == 0 and sorted(records(out)["D"]) == [0, 1]


def test_user_dir_is_added_only_when_absent():
    assert interactive.with_user_dir(["data"]) == ["data", "--user-dir", str(user_dir())]
    assert interactive.with_user_dir(["data", "--user-dir", "x"]) == ["data", "--user-dir", "x"]
    assert interactive.with_user_dir(["data", "--user-dir=x"]) == ["data", "--user-dir=x"]
