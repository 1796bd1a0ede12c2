"""Downloading with resume (HTTP Range) and checking archives before anything trusts them."""

from __future__ import annotations

import gzip
import io
import os
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, List, Optional

from tqdm import tqdm

from data_prep.errors import DataPrepError
from data_prep.textio import READ_ERRORS, damaged, member_name

USER_AGENT = "fairseq-resmlp-data-prep/0.1 (+https://github.com/)"


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


class _Counting(io.RawIOBase):
    """A read-only file wrapper that reports bytes read to a progress bar."""

    def __init__(self, raw: BinaryIO, bar: tqdm) -> None:
        super().__init__()
        self.raw, self.bar = raw, bar

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = self.raw.readinto(buffer)
        self.bar.update(n or 0)
        return n or 0


def verify_archive(path: Path, expected: Iterable[str], label: Optional[str] = None, progress: bool = False) -> dict:
    """Read a tar(.gz) archive to its very end and check the members we need are there.

    For a .tgz the whole gzip stream is decompressed, which checks its CRC and length, so a
    truncated or corrupted download is caught here and not hours later. Returns the member count
    and byte size for the manifest.
    """
    label = label or str(path)
    names: List[str] = []
    bar = tqdm(
        total=path.stat().st_size,
        unit="B",
        unit_scale=True,
        desc=f"check {path.name}",
        disable=not progress,
        file=sys.stderr,
        mininterval=0.5,
    )
    try:
        with open(path, "rb") as f, bar:
            raw = io.BufferedReader(_Counting(f, bar), 1 << 20)
            stream = gzip.GzipFile(fileobj=raw) if _is_gzip(path) else raw
            with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
                for info in tar:
                    names.append(member_name(info.name))
            # tarfile stops at the end-of-archive marker; read the rest so gzip checks its trailer.
            while stream.read(1 << 20):
                pass
    except READ_ERRORS as exc:
        raise damaged(label, exc) from exc
    present = set(names)
    missing = [m for m in expected if m not in present]
    if missing:
        shown = ", ".join(sorted(present)[:8]) + (" ..." if len(present) > 8 else "")
        raise DataPrepError(
            f"{label}: missing {', '.join(missing)}; the archive does not have the WMT14 layout "
            f"(it contains: {shown or 'nothing'})"
        )
    return {"members": len(names), "bytes": path.stat().st_size}


def download(
    url: str,
    dest: Path,
    verify: Callable[[Path], object],
    progress: bool = True,
    retries: int = 5,
    timeout: float = 60.0,
) -> None:
    """Download ``url`` to ``dest``, resuming a previous partial download, then verify it.

    Data goes to ``dest.part`` first and is renamed only after ``verify`` accepts it, so a file
    named ``dest`` is always complete. A part that fails verification is deleted (resuming from
    bad bytes would only repeat the failure).
    """
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    last_error: Optional[BaseException] = None
    for attempt in range(retries):
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": USER_AGENT}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
                if have and r.status == 206:
                    mode = "ab"
                else:  # the server ignored Range (200): start over
                    mode, have = "wb", 0
                length = r.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                with (
                    open(part, mode) as f,
                    tqdm(
                        total=total,
                        initial=have,
                        unit="B",
                        unit_scale=True,
                        desc=dest.name,
                        disable=not progress,
                        file=sys.stderr,
                        mininterval=0.5,
                    ) as bar,
                ):
                    for block in iter(lambda: r.read(1 << 20), b""):
                        f.write(block)
                        bar.update(len(block))
            if total is not None and part.stat().st_size < total:
                raise OSError(f"connection closed after {part.stat().st_size} of {total} bytes")
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:
                break  # nothing left to fetch: the part is already complete
            if exc.code in (403, 404, 410):
                raise DataPrepError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
            last_error = exc
        except (urllib.error.URLError, OSError) as exc:  # includes timeouts and resets
            last_error = exc
        time.sleep(min(30, 2**attempt))
    else:
        raise DataPrepError(
            f"cannot download {url} to {dest}: {last_error}; {part} keeps what arrived, "
            "re-run to resume (or fetch the file yourself and use --mirror)"
        )
    try:
        verify(part)
    except DataPrepError as exc:
        part.unlink(missing_ok=True)
        raise DataPrepError(f"downloaded {url} but it is unusable and was deleted: {exc}") from None
    os.replace(part, dest)
