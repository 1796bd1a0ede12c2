"""File-system helpers: atomic writes and the one-run-per-directory lock."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from fairseq_resmlp_tools._cli import ToolError


def tmp_path(final: Path, unique: bool = False) -> Path:
    """The hidden temporary name next to ``final`` (same directory, so the final rename is atomic).

    ``unique`` adds the process id, for writers that hold no lock on the directory.
    """
    return final.with_name(f".{final.name}.tmp{os.getpid() if unique else ''}")


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``final``, on failure removed.

    Readers then see either the old file or the complete new one, never half of one.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(final, unique=True)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    """Write UTF-8 text so that readers never see half a file."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write indented JSON (non-ASCII kept) so that readers never see half a file."""
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def make_temp_dir(near: Path, prefix: str) -> Path:
    """A temporary directory on the same file system as ``near`` (renames out of it are atomic)."""
    near.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{prefix}.", dir=near))


@contextlib.contextmanager
def output_lock(directory: Path, lock_file: str = ".lock", what: str = "run") -> Iterator[None]:
    """One run per directory at a time: an flock that the kernel releases when the process dies, even by kill -9.

    The lock file holds the owner's pid, so the error names the process in the way.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 64).decode(errors="replace").strip() or "?"
            raise ToolError(f"{directory} is in use by another {what} (pid {other}); wait for it or stop it") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
