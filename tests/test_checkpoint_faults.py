"""Damaged checkpoint files and unusable output places: one ``error:`` line naming the file and the cause, a
non-zero exit status, never a traceback (resmlp-average, resmlp-evaluate, resmlp-interactive, the hub). Plus a
seeded random corruption fuzz of the checkpoint and the dictionaries through resmlp-interactive: every case
translates exactly as the intact files do, or stops with one clear error.

Runs on the 0.1.0 checkpoint fixture (tests/data/checkpoint_v1): nothing is trained.
"""

import errno
import io
import json
import random
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from helpers import V1_CHECKPOINT_DIR

from fairseq_resmlp import CheckpointFileError, ResMLPModel
from fairseq_resmlp_tools import average, evaluate, interactive
from fairseq_resmlp_tools._cli import ToolError
from fairseq_resmlp_tools._fs import atomic_path

GOOD = V1_CHECKPOINT_DIR / "checkpoint.pt"
SOURCES = json.loads((V1_CHECKPOINT_DIR / "expected.json").read_text())["sources"][:6]
LANGS = ["--source-lang", "src", "--target-lang", "tgt"]


def _member_data_offset(data: bytes, member: str) -> int:
    """Where a zip member's bytes start (after its local header)."""
    info = zipfile.ZipFile(io.BytesIO(data)).getinfo(member)
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _renamed_model(name: str) -> bytes:
    state = torch.load(GOOD, weights_only=True)
    state["cfg"]["model"]["_name"] = name
    return _saved(state)


def _flipped_weight(data: bytes) -> bytes:
    out = bytearray(data)
    out[_member_data_offset(data, "archive/data/9") + 5] ^= 0x40  # one bit of one weight
    return bytes(out)


def _foreign_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("notes.txt", "not a checkpoint")
    return buffer.getvalue()


# kind -> (bytes of the damaged file, words the error must contain)
DAMAGE = {
    "empty": (lambda d: b"", "is empty"),
    "truncated": (lambda d: d[: len(d) // 2], "truncated or damaged"),
    "text": (lambda d: b"model weights: see README\n", "is not a torch checkpoint"),
    "foreign-zip": (lambda d: _foreign_zip(), "zip archive but not a torch checkpoint"),
    "torch-not-fairseq": (lambda d: _saved({"weights": torch.ones(3)}), "not a fairseq checkpoint"),
    "flipped-weight": (_flipped_weight, "does not match its CRC-32"),
    "unknown-model": (lambda d: _renamed_model("not_a_model"), "'not_a_model', which is not registered"),
}


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> dict:
    """{kind: path of a damaged copy of the fixture checkpoint}."""
    folder = tmp_path_factory.mktemp("damaged")
    good = GOOD.read_bytes()
    paths = {}
    for kind, (make, _) in DAMAGE.items():
        paths[kind] = folder / f"{kind}.pt"
        paths[kind].write_bytes(make(good))
    return paths


@pytest.fixture(scope="module")
def fake_eval_data(tmp_path_factory) -> list:
    """resmlp-evaluate's data options on a stand-in data-bin (2 sentences): enough to reach the checkpoint."""
    folder = tmp_path_factory.mktemp("evaldata")
    (folder / "data-bin").mkdir()
    header = b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + b"\x04" + struct.pack("<Q", 2)
    (folder / "data-bin" / "test.src-tgt.tgt.idx").write_bytes(header)
    # A real (tiny) SentencePiece model: resmlp-evaluate reads it before translating.
    import sentencepiece as spm

    text = folder / "spm.txt"
    text.write_text("".join(f"word{i} other{i % 7} thing\n" for i in range(200)))
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(folder / "spm"), vocab_size=40, minloglevel=2, hard_vocab_limit=False
    )
    (folder / "ref.txt").write_text("a\nb\n")
    return ["--data-bin", str(folder / "data-bin"), "--spm-model", str(folder / "spm.model")] + [
        "--ref-raw",
        str(folder / "ref.txt"),
        *LANGS,
    ]


@pytest.fixture(scope="module")
def input_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("input") / "input.txt"
    path.write_text("".join(s + "\n" for s in SOURCES))
    return path


def one_error_line(capsys, code: int, *names: str) -> str:
    """The tool failed with exactly one ``error:`` line, naming each of ``names``, and no traceback."""
    _, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1, err
    assert len(errors) == 1 and "Traceback" not in err, err
    for name in names:
        assert name in errors[0], errors[0]
    return errors[0]


TOOLS = ["average", "evaluate", "interactive"]


def run_tool(tool: str, checkpoint: Path, tmp_path: Path, eval_data: list, input_file: Path) -> int:
    if tool == "average":
        return average.main(["--inputs", str(checkpoint), str(GOOD), "--output", str(tmp_path / "avg.pt")])
    if tool == "evaluate":
        return evaluate.main([str(checkpoint), *eval_data, "--output", str(tmp_path / "r.json")])
    return interactive.main(
        [str(V1_CHECKPOINT_DIR), "--path", str(checkpoint), *LANGS, "--input", str(input_file)]
        + ["--output-text", str(tmp_path / "out.txt")]
    )


@pytest.mark.parametrize("kind", sorted(DAMAGE))
@pytest.mark.parametrize("tool", TOOLS)
def test_damaged_checkpoint_is_one_line(tool, kind, damaged, fake_eval_data, input_file, tmp_path, capsys):
    code = run_tool(tool, damaged[kind], tmp_path, fake_eval_data, input_file)
    one_error_line(capsys, code, str(damaged[kind]), DAMAGE[kind][1])
    assert list(tmp_path.iterdir()) == []  # no output, not even a partial one


@pytest.mark.parametrize("kind", sorted(DAMAGE) + ["transformer", "missing"])
def test_hub_refuses_damaged_or_foreign_checkpoint(kind, damaged, tmp_path):
    if kind == "transformer":
        path, cause = tmp_path / "t.pt", "'transformer_iwslt_de_en' (TransformerModel), not of a ResMLPModel"
        path.write_bytes(_renamed_model("transformer_iwslt_de_en"))
    elif kind == "missing":
        path, cause = tmp_path / "none.pt", "does not exist"
    else:
        path, cause = damaged[kind], DAMAGE[kind][1]
    with pytest.raises(CheckpointFileError) as e:
        ResMLPModel.from_pretrained(
            str(path.parent), checkpoint_file=path.name, data_name_or_path=str(V1_CHECKPOINT_DIR), source_lang="src"
        )
    message = str(e.value)
    assert "\n" not in message and str(path) in message and cause in message, message


def test_interactive_accepts_a_checkpoint_for_other_dictionaries_with_one_line(tmp_path, input_file, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("dict.src.txt", "dict.tgt.txt"):
        lines = (V1_CHECKPOINT_DIR / name).read_text().splitlines()
        (data / name).write_text("\n".join(lines[:-1]) + "\n")  # one symbol fewer than the model's
    code = interactive.main([str(data), "--path", str(GOOD), *LANGS, "--input", str(input_file)])
    one_error_line(capsys, code, str(data / "dict.src.txt"), "source dictionary of")


@pytest.mark.parametrize("script", ["resmlp-average", "resmlp-interactive"])
def test_console_scripts_print_no_traceback(script, damaged, input_file, tmp_path):
    """The installed commands themselves (not only main()): exit status 1 and the error as the last line."""
    bad = damaged["truncated"]
    args = ["--inputs", bad, "--output", tmp_path / "a.pt"]
    if script == "resmlp-interactive":
        args = [V1_CHECKPOINT_DIR, "--path", bad, *LANGS, "--input", input_file]
    exe = Path(sys.executable).parent / script
    proc = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {bad} is truncated or damaged")
    assert proc.stdout == ""


# --- output places ---------------------------------------------------------------------------------------


def test_unusable_output_places_are_one_line(tmp_path, fake_eval_data, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = average.main(["--inputs", str(GOOD), "--output", str(blocker / "avg.pt")])
    one_error_line(capsys, code, f"cannot create the output directory {blocker}: {blocker} is a file")
    code = evaluate.main([str(GOOD), *fake_eval_data, "--output", str(blocker / "sub" / "r.json")])
    one_error_line(capsys, code, f"{blocker} is a file, not a directory")
    code = average.main(["--inputs", str(GOOD), "--output", str(tmp_path)])
    one_error_line(capsys, code, f"cannot write {tmp_path}: it is a directory")


@pytest.mark.skipif(sys.platform != "linux" or __import__("os").geteuid() == 0, reason="root may write anywhere")
def test_output_without_permission_is_one_line(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code = average.main(["--inputs", str(GOOD), "--output", str(locked / "avg.pt")])
    one_error_line(capsys, code, f"cannot write {locked / 'avg.pt'}: Permission denied")


def test_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    with pytest.raises(ToolError, match=rf"^cannot write {target}: No space left on device$"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(average.torch, "save", full)
    with pytest.raises(ToolError, match=rf"^cannot write {tmp_path / 'avg.pt'}: .*failed writing file"):
        average.save_checkpoint({"model": {}}, tmp_path / "avg.pt")
    assert list(tmp_path.iterdir()) == []


# --- fuzz ------------------------------------------------------------------------------------------------


def _flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _drop_chunk(data: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(data))
    return data[:start] + data[start + rng.randint(1, 512) :]


def _drop_line(data: bytes, rng: random.Random) -> bytes:
    lines = data.split(b"\n")[:-1]
    del lines[rng.randrange(len(lines))]
    return b"".join(line + b"\n" for line in lines)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


# A byte flipped inside a dictionary's symbol is left out: fairseq checkpoints do not record their dictionary,
# so a symbol changed into another valid-looking one cannot be told from the right one (docs/evaluation.md).
FUZZ = [("checkpoint.pt", f, seed) for f in (_flip, _drop_chunk, _truncate) for seed in range(4)] + [
    (name, f, seed) for name in ("dict.src.txt", "dict.tgt.txt") for f in (_drop_line, _truncate) for seed in range(2)
]


@pytest.fixture(scope="module")
def clean_output(tmp_path_factory, input_file) -> str:
    out = tmp_path_factory.mktemp("clean") / "out.txt"
    code = interactive.main(
        [str(V1_CHECKPOINT_DIR), "--path", str(GOOD), *LANGS, "--input", str(input_file), "--output-text", str(out)]
    )
    assert code == 0
    return out.read_text()


@pytest.mark.parametrize("name,corrupt,seed", FUZZ, ids=[f"{n}-{f.__name__[1:]}-{s}" for n, f, s in FUZZ])
def test_fuzz_corrupted_files_translate_correctly_or_stop_clearly(
    name, corrupt, seed, clean_output, input_file, tmp_path, capsys
):
    folder = tmp_path / "model"
    shutil.copytree(V1_CHECKPOINT_DIR, folder)
    rng = random.Random(f"{name}-{corrupt.__name__}-{seed}")
    (folder / name).write_bytes(corrupt((folder / name).read_bytes(), rng))
    out = tmp_path / "out.txt"
    capsys.readouterr()
    code = interactive.main(
        [str(folder), "--path", str(folder / "checkpoint.pt"), *LANGS, "--input", str(input_file)]
        + ["--output-text", str(out)]
    )
    if code == 0:
        assert out.read_text() == clean_output  # exit status 0 only with the right translations
    else:
        one_error_line(capsys, code, str(folder / name) if name.endswith(".pt") else str(folder))
        assert not out.exists()


def test_unreadable_sentencepiece_model_is_one_line(tmp_path, fake_eval_data, capsys):
    garbage = tmp_path / "spm.model"
    garbage.write_bytes(b"not a model")
    args = list(fake_eval_data)
    args[args.index("--spm-model") + 1] = str(garbage)
    code = evaluate.main([str(GOOD), *args, "--output", str(tmp_path / "r.json")])
    one_error_line(capsys, code, f"--spm-model {garbage}: not a readable SentencePiece model")
