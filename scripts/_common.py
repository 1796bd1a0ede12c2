"""Small helpers shared by the scripts: errors, atomic writes, running fairseq commands."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
# fairseq does not store --user-dir in checkpoints, so every fairseq command gets it again, as an absolute
# path so that it works from any working directory.
USER_DIR = REPO_ROOT / "fairseq_resmlp"


class ScriptError(Exception):
    """A problem with the user's input or environment: reported as ``error: ...`` with exit status 1."""


def run_main(main: Callable[[Optional[Sequence[str]]], Optional[int]], argv: Optional[Sequence[str]] = None) -> int:
    """Call ``main(argv)`` and turn a ScriptError into ``error: ...`` on stderr and exit status 1."""
    try:
        return main(argv) or 0
    except ScriptError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head & co.: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def fairseq_command(name: str) -> str:
    """Path of a fairseq console script (``fairseq-generate`` ...) from the running interpreter's environment.

    Taking it from next to ``sys.executable`` avoids picking up another environment's fairseq from PATH.
    """
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ScriptError(f"{name} not found next to {sys.executable} nor on PATH; is fairseq installed?")
    return found


def format_command(cmd: Sequence[str]) -> str:
    """A command line a user can copy into a shell."""
    return shlex.join(str(c) for c in cmd)


def hidden_tmp(final: Path) -> Path:
    """A hidden temporary name next to ``final``: same directory, so the final rename is atomic."""
    return final.with_name(f".{final.name}.tmp{os.getpid()}")


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``final``, on failure removed.

    Readers then see either the old file or the complete new one, never half of one.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = hidden_tmp(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def make_temp_dir(near: Path, prefix: str) -> Path:
    """A temporary directory on the same file system as ``near`` (renames out of it are atomic)."""
    near.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{prefix}.", dir=near))


def read_lines(path: Path) -> List[str]:
    """Lines of a UTF-8 text file without their newlines, split exactly as fairseq-preprocess splits them."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


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


def child_env(extra: Optional[dict] = None) -> dict:
    env = dict(os.environ)
    # The scripts may run from a checkout that is not installed: make fairseq_resmlp and scripts importable.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    if extra:
        env.update(extra)
    return env


def checkpoint_safe_globals() -> list:
    """Plain-data types that fairseq checkpoints hold besides tensors, for ``torch.load(weights_only=True)``.

    * numpy arrays: fairseq's ``--eval-bleu`` keeps its n-gram counts as numpy arrays in the training metrics
      saved with every checkpoint;
    * ``argparse.Namespace``: the configuration of models registered the old way (fairseq's
      ``transformer_iwslt_de_en`` among them) is a Namespace inside the checkpoint's ``cfg``.
    Rebuilding either runs no code from the file, so allow-listing them keeps the safety of weights_only.
    """
    import argparse

    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    names = [argparse.Namespace, _reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25: one class per dtype
    if dtypes is not None:
        names += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return names
