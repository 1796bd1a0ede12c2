"""Resumable stages: write to temporary names, rename when done, and leave a stamp.

A stage's stamp records the sha256 of its inputs, its options and the sha256 of its outputs. On a
re-run a stage is skipped when the stamp matches all three, and redone otherwise; because later
stages key on the *content* of earlier outputs, redoing a stage that produces the same files does
not cascade. A stage interrupted half-way has no stamp and leaves only hidden ``.*.tmp`` files,
which the next run removes. Checksums are keyed by content (see :class:`ChecksumCache`), and a stage
fails if an input changes while it runs, so a stamp always describes the content that was read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from data_prep.errors import DataPrepError
from fairseq_resmlp_tools._fs import tmp_path, write_json_atomic

STAMP_FORMAT = 1


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# A cached digest is trusted only for a file last changed this long before it was hashed: a change
# within the same timestamp tick (coarse kernel clock, or 1-2 s on some filesystems) could otherwise
# leave size, mtime and ctime all as they were ("racy" entries, as git calls them). Those are re-hashed.
RACY_NS = 2_000_000_000


def file_signature(path: Path) -> List[int]:
    """What changes whenever a file's content can have changed: size, mtime, ctime, inode, device.

    mtime alone can be set back by anyone (``touch -d``, ``cp -p``, ``tar -x``); ctime cannot: every
    write and every utime() moves it to the current time.
    """
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


class ChecksumCache:
    """sha256 of files, with (size, mtime, ctime, inode) as a fast path so that a re-run need not re-read them.

    The fast path is taken only when the signature is unchanged and the file was already settled
    when it was hashed (see :data:`RACY_NS`); anything else is re-hashed, so the digest is always
    that of the current content.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: Dict[str, list] = {}
        self._dirty = False
        if path.exists():
            try:
                self._data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self._data = {}  # a damaged cache only costs re-hashing
            if not isinstance(self._data, dict):
                self._data = {}

    def sha256(self, path: Path) -> str:
        if path.is_dir():
            # A directory's digest covers the names and digests of all its files.
            h = hashlib.sha256()
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                h.update(f"{child.relative_to(path).as_posix()}\0{self.sha256(child)}\n".encode())
            return h.hexdigest()
        key = str(path.resolve())
        for _ in range(3):
            sig = file_signature(path)
            cached = self._data.get(key)
            if (
                isinstance(cached, list)
                and len(cached) == 3
                and cached[0] == sig
                and max(sig[1], sig[2]) < cached[1] - RACY_NS
            ):
                return cached[2]
            hashed_at = time.time_ns()  # taken before reading: a change after it makes the entry racy
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            if file_signature(path) == sig:
                self._data[key] = [sig, hashed_at, h.hexdigest()]
                self._dirty = True
                return h.hexdigest()
        raise DataPrepError(f"{path}: keeps changing while it is read; is another program writing it?")

    def save(self) -> None:
        if self._dirty:
            write_json_atomic(self.path, self._data)
            self._dirty = False


@dataclass
class Stage:
    """A resumable pipeline step: the files it reads, the files it writes, its options, its action."""

    name: str
    action: Callable[["StageContext"], Optional[Dict[str, Any]]]
    inputs: Sequence[Path] = ()
    outputs: Sequence[Path] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    # Statistics that describe this run rather than the content (e.g. where the inputs are now): laid
    # over the stats whether the stage ran or was skipped, and not part of its key.
    describe: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class StageResult:
    """What a stage did in this run (``ran`` or ``skipped``) and the statistics it reported."""

    name: str
    status: str
    seconds: float
    stats: Dict[str, Any]
    inputs: Dict[str, str]  # label -> sha256 of the content the stage read (or found unchanged)
    outputs: Dict[str, str]  # label -> sha256 of what it wrote


class StageContext:
    """Handed to a stage's action: temporary paths for each declared output."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage

    def tmp(self, final: Path) -> Path:
        if final not in self.stage.outputs:
            raise ValueError(f"{final} is not an output of stage {self.stage.name}")
        return tmp_path(final)


class StageRunner:
    """Runs stages, skipping those whose stamp matches their inputs, options and outputs."""

    def __init__(
        self,
        root: Path,
        stamps: Path,
        cache: ChecksumCache,
        force: bool = False,
        log: Callable[[str], None] = print,
    ) -> None:
        self.root = root
        self.stamps = stamps
        self.cache = cache
        self.force = force
        self.log = log

    def label(self, path: Path) -> str:
        """How stamps name a file: relative to the output directory where it is inside it."""
        try:
            return path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(path)

    def _digests(self, paths: Sequence[Path], what: str, stage: str) -> List[str]:
        digests = []
        for p in paths:
            if not p.exists():
                raise DataPrepError(f"stage {stage}: {what} {p} does not exist")
            digests.append(self.cache.sha256(p))
        return digests

    def stamp_path(self, name: str) -> Path:
        return self.stamps / f"{name}.json"

    def is_current(self, stage: Stage) -> Optional[dict]:
        """The stage's stamp if it is complete and matches; None if the stage must run."""
        path = self.stamp_path(stage.name)
        if self.force or not path.exists():
            return None
        try:
            stamp = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if stamp.get("format") != STAMP_FORMAT:
            return None
        options = json.loads(json.dumps(dict(stage.options), sort_keys=True, default=str))
        if stamp.get("options") != options:
            return None
        inputs = self._digests(stage.inputs, "input", stage.name)
        if [i["sha256"] for i in stamp.get("inputs", [])] != inputs:
            return None
        recorded = stamp.get("outputs", {})
        for out in stage.outputs:
            label = self.label(out)
            if not out.exists() or recorded.get(label) != self.cache.sha256(out):
                return None
        return stamp

    def run(self, stage: Stage) -> StageResult:
        stamp = self.is_current(stage)
        if stamp is not None:
            self.log(f"[{stage.name}] up to date, skipped")
            return StageResult(
                stage.name,
                "skipped",
                0.0,
                overlay(stamp.get("stats", {}), stage.describe),
                {i["path"]: i["sha256"] for i in stamp["inputs"]},
                stamp["outputs"],
            )
        self.stamp_path(stage.name).unlink(missing_ok=True)
        for out in stage.outputs:
            out.parent.mkdir(parents=True, exist_ok=True)
            remove_leftovers(out)  # from an interrupted run
        self.log(f"[{stage.name}] running")
        inputs = self._digests(stage.inputs, "input", stage.name)
        before = [_signature(p) for p in stage.inputs]
        start = time.monotonic()
        try:
            stats = stage.action(StageContext(stage)) or {}
            for out in stage.outputs:
                if not tmp_path(out).exists():
                    raise RuntimeError(f"stage {stage.name} did not write {out}")
            for p, sig in zip(stage.inputs, before):
                # the stamp and the manifest must describe the content that was actually read
                if _signature(p) != sig:
                    raise DataPrepError(f"{p}: changed while stage {stage.name} was reading it; run again")
        except BaseException as exc:
            for out in stage.outputs:
                remove_leftovers(out)  # nothing half-written survives
            if isinstance(exc, OSError):
                raise os_error(exc, stage) from None
            raise
        try:
            for out in stage.outputs:
                remove_path(out)
                os.replace(tmp_path(out), out)
            seconds = time.monotonic() - start
            outputs = {self.label(out): self.cache.sha256(out) for out in stage.outputs}
            # The stamp is written last: a crash before this line means the stage runs again.
            write_json_atomic(
                self.stamp_path(stage.name),
                {
                    "format": STAMP_FORMAT,
                    "stage": stage.name,
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "seconds": round(seconds, 3),
                    "options": json.loads(json.dumps(dict(stage.options), sort_keys=True, default=str)),
                    "inputs": [{"path": self.label(p), "sha256": d} for p, d in zip(stage.inputs, inputs)],
                    "outputs": outputs,
                    "stats": stats,
                },
            )
            self.cache.save()
        except OSError as exc:
            raise os_error(exc, stage) from None
        self.log(f"[{stage.name}] done in {seconds:.1f}s")
        return StageResult(
            stage.name,
            "ran",
            seconds,
            overlay(stats, stage.describe),
            {self.label(p): d for p, d in zip(stage.inputs, inputs)},
            outputs,
        )


def overlay(stats: Dict[str, Any], extra: Mapping[str, Any]) -> Dict[str, Any]:
    """``stats`` with ``extra`` laid over it, nested dictionaries merged."""
    merged = dict(stats)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = overlay(merged[key], value)
        else:
            merged[key] = value
    return merged


def _signature(path: Path) -> Optional[list]:
    """A file's signature, or for a directory those of all its files (None when it is gone)."""
    if not path.exists():
        return None
    if path.is_dir():
        return [[p.relative_to(path).as_posix(), file_signature(p)] for p in sorted(path.rglob("*")) if p.is_file()]
    return file_signature(path)


def remove_leftovers(final: Path) -> None:
    """Remove what an interrupted stage may have left next to ``final``: its temporary and part files."""
    remove_path(tmp_path(final))
    if final.parent.is_dir():
        for p in final.parent.glob(f"{tmp_path(final).name}*"):
            remove_path(p)


def os_error(exc: OSError, stage: Stage) -> DataPrepError:
    """One line naming the path and the cause (a write error has no file name: then the stage's outputs)."""
    if exc.filename is not None:
        where = str(exc.filename)
    else:
        where = ", ".join(str(p) for p in stage.outputs) or stage.name
    return DataPrepError(f"{where}: {exc.strerror or exc} (stage {stage.name})")
