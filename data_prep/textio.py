"""Reading raw text: plain or gzip files and members of tar archives, line by line, strictly.

Lines are split on ``\\n`` only and read as bytes, so that a stray ``\\r`` or U+2028 inside a line can
never shift one side of a parallel corpus against the other, and so that invalid UTF-8 can be
reported with its file and line number.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Sequence, Tuple

from data_prep.errors import DataPrepError

# Errors that mean "this file or archive is damaged" rather than "this program is wrong".
READ_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error)


@dataclass(frozen=True)
class InputFile:
    """A text file to read: a plain or .gz file, or a member of a tar archive (the member may be .gz)."""

    path: Path
    member: Optional[str] = None

    @property
    def gz(self) -> bool:
        return (self.member or self.path.name).endswith(".gz")

    @property
    def label(self) -> str:
        """How error messages name this file."""
        return f"{self.path}:{self.member}" if self.member else str(self.path)


@dataclass(frozen=True)
class ParallelSource:
    """One parallel corpus: line i of ``src`` is the translation of line i of ``tgt``."""

    name: str
    src: InputFile
    tgt: InputFile


def member_name(name: str) -> str:
    """Tar member names sometimes start with './'; compare them without it."""
    return name[2:] if name.startswith("./") else name


def damaged(label: str, exc: BaseException) -> DataPrepError:
    """The error for a file that cannot be read to the end (truncated download, bad gzip, ...)."""
    return DataPrepError(
        f"{label}: cannot be read ({type(exc).__name__}: {exc}); the file is truncated or corrupt -- download it again"
    )


@contextmanager
def open_binary(inp: InputFile) -> Iterator[BinaryIO]:
    """Open ``inp`` for reading bytes, decompressing gzip and streaming out of tar archives."""
    if not inp.path.exists():
        raise DataPrepError(f"{inp.path}: no such file")
    if inp.member is None:
        with open(inp.path, "rb") as raw:
            yield gzip.GzipFile(fileobj=raw) if inp.gz else raw  # type: ignore[misc]
        return
    # Stream mode ('r|*') reads the archive once from the front; random access on a .tgz would
    # decompress it several times over.
    with tarfile.open(inp.path, "r|*") as tar:
        for info in tar:
            if member_name(info.name) != inp.member:
                continue
            member = tar.extractfile(info)
            if member is None:
                raise DataPrepError(f"{inp.label}: is not a regular file in the archive")
            yield gzip.GzipFile(fileobj=member) if inp.gz else member  # type: ignore[misc]
            return
    raise DataPrepError(f"{inp.path}: has no member {inp.member!r}; the archive does not have the expected layout")


def iter_raw_lines(inp: InputFile) -> Iterator[bytes]:
    """Yield the lines of ``inp`` as bytes without the trailing ``\\n``."""
    try:
        with open_binary(inp) as stream:
            for raw in io.BufferedReader(stream, 1 << 20) if inp.gz else stream:  # type: ignore[arg-type]
                yield raw[:-1] if raw.endswith(b"\n") else raw
    except DataPrepError:
        raise
    except READ_ERRORS as exc:
        raise damaged(inp.label, exc) from exc


def decode_line(raw: bytes, label: str, lineno: int) -> str:
    """Decode one line as strict UTF-8; the error names the file, line and byte offset."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        context = raw[max(0, exc.start - 20) : exc.end + 20]
        raise DataPrepError(
            f"{label}: line {lineno}: invalid UTF-8 at byte {exc.start} of the line ({context!r})"
        ) from None


def iter_raw_pairs(source: ParallelSource) -> Iterator[Tuple[int, bytes, bytes]]:
    """Yield ``(line number, src bytes, tgt bytes)``; fail if the two sides differ in length."""
    lineno = 0
    for lineno, (a, b) in enumerate(zip_longest(iter_raw_lines(source.src), iter_raw_lines(source.tgt)), start=1):
        if a is None or b is None:
            longer, shorter = (source.tgt, source.src) if a is None else (source.src, source.tgt)
            n_short = lineno - 1
            n_long = count_lines(longer)  # error path only: one more pass for a precise message
            raise DataPrepError(
                f"parallel files differ in length: {shorter.label} has {n_short} lines but "
                f"{longer.label} has {n_long} (first unmatched line: {longer.label}: line {lineno})"
            )
        yield lineno, a, b


def iter_text_pairs(
    source: ParallelSource, drop_invalid_utf8: bool = False
) -> Iterator[Tuple[int, Optional[str], Optional[str]]]:
    """Decoded pairs; with ``drop_invalid_utf8`` an undecodable side comes back as ``None``."""
    for lineno, a, b in iter_raw_pairs(source):
        if drop_invalid_utf8:
            try:
                src: Optional[str] = a.decode("utf-8")
            except UnicodeDecodeError:
                src = None
            try:
                tgt: Optional[str] = b.decode("utf-8")
            except UnicodeDecodeError:
                tgt = None
            yield lineno, src, tgt
        else:
            yield lineno, decode_line(a, source.src.label, lineno), decode_line(b, source.tgt.label, lineno)


def count_lines(inp: "InputFile | Path") -> int:
    """Number of lines (a last line without ``\\n`` counts too)."""
    if isinstance(inp, Path):
        inp = InputFile(inp)
    n = 0
    last = b"\n"
    try:
        with open_binary(inp) as stream:
            while True:
                block = stream.read(1 << 20)
                if not block:
                    break
                n += block.count(b"\n")
                last = block[-1:]
    except DataPrepError:
        raise
    except READ_ERRORS as exc:
        raise damaged(inp.label, exc) from exc
    return n + (last != b"\n")


def find_prefix_file(prefix: str, lang: str) -> InputFile:
    """``PREFIX.lang`` or ``PREFIX.lang.gz``; a clear error when neither exists."""
    candidates = [Path(f"{prefix}.{lang}"), Path(f"{prefix}.{lang}.gz")]
    found = [p for p in candidates if p.is_file()]
    if not found:
        raise DataPrepError(f"no file {candidates[0]} (or {candidates[1].name}) for prefix {prefix!r}")
    if len(found) > 1:
        raise DataPrepError(f"both {found[0]} and {found[1]} exist; keep only one of them")
    return InputFile(found[0])


def read_members(archive: Path, names: Sequence[str]) -> dict:
    """Read several (small) members of a tar archive in one pass; returns ``{name: bytes}``."""
    wanted = set(names)
    found: dict = {}
    if not archive.exists():
        raise DataPrepError(f"{archive}: no such file")
    try:
        with tarfile.open(archive, "r|*") as tar:
            for info in tar:
                name = member_name(info.name)
                if name in wanted:
                    member = tar.extractfile(info)
                    if member is None:
                        raise DataPrepError(f"{archive}:{name}: is not a regular file in the archive")
                    found[name] = member.read()
                    if len(found) == len(wanted):
                        break
    except DataPrepError:
        raise
    except READ_ERRORS as exc:
        raise damaged(str(archive), exc) from exc
    missing = [n for n in names if n not in found]
    if missing:
        raise DataPrepError(
            f"{archive}: has no member {', '.join(map(repr, missing))}; the archive does not have the expected layout"
        )
    return found
