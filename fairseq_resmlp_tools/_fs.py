"""File-system helpers: atomic writes and the one-run-per-directory lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
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


# Write errors that say the output place is unusable, whatever file the tool was writing at that moment.
_OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


def _make_dir(directory: Path) -> None:
    """mkdir -p, or a ToolError naming the directory (a file in the way, no permission, read-only ...)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if directory.is_dir():
            return
        cause = None
    except OSError as e:
        cause = e.strerror or str(e)
    blocker = next((p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        cause = f"{blocker} is a file, not a directory"
    raise ToolError(f"cannot create the output directory {directory}: {cause}")


def check_writable(final: Path) -> None:
    """Fail now, before any work, if ``final`` cannot be written: its directory cannot be created, is not
    writable, or ``final`` is a directory. Leaves nothing behind but the directory."""
    if final.is_dir():
        raise ToolError(f"cannot write {final}: it is a directory")
    _make_dir(final.parent)
    probe = tmp_path(final, unique=True)
    try:
        probe.open("wb").close()
    except OSError as e:
        raise ToolError(f"cannot write {final}: {e.strerror or e}") from None
    probe.unlink()


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``final``, on failure removed.

    Readers then see either the old file or the complete new one, never half of one. An unusable output place
    (no permission, a file where the directory should be, a full disk) is a ToolError naming ``final``.
    """
    _make_dir(final.parent)
    tmp = tmp_path(final, unique=True)
    try:
        try:
            yield tmp
            os.replace(tmp, final)
        except OSError as e:
            if e.errno in _OUTPUT_ERRNOS or e.filename in (str(tmp), str(final)):
                raise ToolError(f"cannot write {final}: {e.strerror or e}") from None
            raise
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
    _make_dir(near)
    try:
        return Path(tempfile.mkdtemp(prefix=f".{prefix}.", dir=near))
    except OSError as e:
        raise ToolError(f"cannot write in the output directory {near}: {e.strerror or e}") from None


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


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
