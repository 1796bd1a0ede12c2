"""Talking to fairseq without importing it: its commands, the plugin's --user-dir, and the files it writes.

Importing fairseq costs seconds, so everything here reads fairseq's outputs directly (the ``.idx`` header, the
``H-`` lines of fairseq-generate, the JSON log records of fairseq-train).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import re
import shlex
import shutil
import signal
import struct
import sys
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from fairseq_resmlp_tools._cli import ToolError


def user_dir() -> Path:
    """The folder to give fairseq as ``--user-dir``: wherever ``fairseq_resmlp`` is importable from.

    fairseq does not store --user-dir in checkpoints, so every fairseq command gets it again, absolute, so that
    it works from any working directory. Found without importing the plugin (which imports fairseq).
    """
    spec = importlib.util.find_spec("fairseq_resmlp")
    if spec is None or not spec.submodule_search_locations:
        raise ToolError("the fairseq_resmlp package is not importable: install fairseq-resmlp (README)")
    return Path(list(spec.submodule_search_locations)[0]).resolve()


def fairseq_command(name: str) -> str:
    """Path of a fairseq console script (``fairseq-generate`` ...) from the running interpreter's environment.

    Taking it from next to ``sys.executable`` avoids picking up another environment's fairseq from PATH.
    """
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ToolError(f"{name} not found next to {sys.executable} nor on PATH; is fairseq installed?")
    return found


def format_command(cmd: Sequence[object]) -> str:
    """A command line a user can copy into a shell."""
    return shlex.join(str(c) for c in cmd)


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn for subprocesses: have the kernel kill the child when this process dies.

    Without it, ``kill -9`` of a recipe leaves its fairseq-train running; a re-run would then train twice
    into the same directory at once. Linux only; elsewhere it does nothing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


# --- data-bin --------------------------------------------------------------------------------------------

_MMAP_MAGIC = b"MMIDIDX\x00\x00"


def mmap_index_count(idx: Path) -> int:
    """Number of sequences in a fairseq ``mmap`` dataset, from its ``.idx`` header (magic, version, dtype, count)."""
    with open(idx, "rb") as f:
        header = f.read(26)
    if len(header) < 26 or header[:9] != _MMAP_MAGIC:
        raise ToolError(f"{idx}: not a fairseq mmap index")
    return struct.unpack("<Q", header[18:26])[0]


# --- checkpoints -----------------------------------------------------------------------------------------


def load_checkpoint_checked(path: Path) -> Dict[str, object]:
    """A fairseq checkpoint as a dict (CPU, ``torch.load(weights_only=True)``), or a ToolError in one line naming
    the file and the cause: missing, empty, truncated, damaged (CRC), not a torch file, not a fairseq checkpoint,
    of an architecture fairseq cannot build. The one check every tool runs on the checkpoints it is given."""
    # Imports torch and fairseq: only when loading. Importing the plugin registers its architectures, which the
    # check looks up.
    from fairseq_resmlp import CheckpointFileError
    from fairseq_resmlp._compat import load_checkpoint_checked as load

    try:
        return load(path)
    except CheckpointFileError as e:
        raise ToolError(str(e)) from None


# --- fairseq-generate ------------------------------------------------------------------------------------

_OUTPUT_LINE = re.compile(r"^([A-Z])-(\d+)\t([^\t]*)\t(.*)$")


def parse_generate_output(lines: Iterable[str], prefix: str = "H") -> List[Tuple[int, str]]:
    """(sentence id, text) for every ``H-`` line (or ``D-``, detokenized, with ``prefix="D"``) of
    fairseq-generate's or fairseq-interactive's output, in the printed order."""
    found = []
    for line in lines:
        m = _OUTPUT_LINE.match(line.rstrip("\n"))
        if m and m.group(1) == prefix:
            found.append((int(m.group(2)), m.group(4)))
    return found


def order_hypotheses(found: Sequence[Tuple[int, str]], n_expected: Optional[int], where: str) -> List[str]:
    """Hypotheses in sentence order; a ToolError unless the ids are exactly 0..n_expected-1, each once.

    With ``n_expected`` None the count is taken from the largest id (the ids must still have no gap).
    """
    if not found:
        raise ToolError(f"{where}: no H-<id> lines found: is this fairseq-generate output?")
    by_id: Dict[int, str] = {}
    duplicates = set()
    for i, hyp in found:
        if i in by_id:
            duplicates.add(i)
        by_id[i] = hyp
    n = max(by_id) + 1 if n_expected is None else n_expected
    missing = sorted(set(range(n)) - set(by_id))
    extra = sorted(set(by_id) - set(range(n)))
    problems = []
    if missing:
        problems.append(f"no hypothesis for {len(missing)} sentence(s) (ids {_preview(missing)})")
    if extra:
        problems.append(f"{len(extra)} hypothesis id(s) beyond the {n} references (ids {_preview(extra)})")
    if duplicates:
        problems.append(f"several hypotheses for sentence id(s) {_preview(sorted(duplicates))}")
    if problems:
        expected = f" for {n} references" if n_expected is not None else ""
        raise ToolError(
            f"{where}: {len(found)} hypotheses{expected}: "
            + "; ".join(problems)
            + ". Refusing to score: output over a different set of sentences is not comparable"
        )
    return [by_id[i] for i in range(n)]


def _preview(ids: Sequence[int], k: int = 8) -> str:
    shown = ", ".join(map(str, ids[:k]))
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > k else "")


# --- fairseq-train logs ----------------------------------------------------------------------------------

LOG_TAGS = ("train_inner", "train", "valid")


def _classify(record: dict) -> str:
    """Tag of a bare JSON record (``--log-file`` output has no tags): validation, epoch summary or inner."""
    if any(k.startswith("valid_") for k in record):
        return "valid"
    if "train_loss" in record:
        return "train"
    return "train_inner"


def read_json_log(path: Path) -> Iterator[Tuple[str, dict]]:
    """(tag, record) for each JSON record of a fairseq-train ``--log-format json`` log, in file order.

    Reads the console output saved to a file (``2024-01-01 10:00:00 | INFO | train_inner | {"loss": ...}``)
    and the bare JSON lines of ``--log-file``; tags are ``train_inner``, ``train`` (epoch summary), ``valid``.
    """
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            brace = line.find("{")
            if brace < 0 or not line.endswith("}"):
                continue
            try:
                record = json.loads(line[brace:])
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            prefix = line[:brace].rstrip(" |").split("|")
            tag = prefix[-1].strip() if len(prefix) >= 3 else _classify(record)
            if tag in LOG_TAGS:
                yield tag, record


def last_update(path: Path) -> int:
    """The last update number a fairseq-train JSON log reports (0 for a missing or empty log)."""
    if not path.exists():
        return 0
    last = 0
    for tag, record in read_json_log(path):
        key = {"train_inner": "num_updates", "train": "train_num_updates", "valid": "valid_num_updates"}[tag]
        if key in record:
            last = int(float(record[key]))
    return last


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m fairseq_resmlp_tools.fairseq_io last-update LOG``: the shell scripts' way to read a log."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m fairseq_resmlp_tools.fairseq_io", description=main.__doc__)
    p.add_argument("what", choices=("last-update",))
    p.add_argument("log", type=Path, help="fairseq-train console output with --log-format json")
    print(last_update(p.parse_args(argv).log))
    return 0


if __name__ == "__main__":
    sys.exit(main())
