"""Resumable stages: write to temporary names, rename when done, and leave a stamp.

A stage's stamp records the sha256 of its inputs, its options and the sha256 of its outputs. On a
re-run a stage is skipped when the stamp matches all three, and redone otherwise; because later
stages key on the *content* of earlier outputs, redoing a stage that produces the same files does
not cascade. A stage interrupted half-way has no stamp and leaves only hidden ``.*.tmp`` files,
which the next run removes.
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


class ChecksumCache:
    """sha256 of files, remembered by (size, mtime) so that a re-run does not re-read unchanged files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: Dict[str, list] = {}
        self._dirty = False
        if path.exists():
            try:
                self._data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self._data = {}  # a damaged cache only costs re-hashing

    def sha256(self, path: Path) -> str:
        if path.is_dir():
            # A directory's digest covers the names and digests of all its files.
            h = hashlib.sha256()
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                h.update(f"{child.relative_to(path).as_posix()}\0{self.sha256(child)}\n".encode())
            return h.hexdigest()
        st = path.stat()
        key = str(path.resolve())
        cached = self._data.get(key)
        if cached and cached[0] == st.st_size and cached[1] == st.st_mtime_ns:
            return cached[2]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
        self._data[key] = [st.st_size, st.st_mtime_ns, digest]
        self._dirty = True
        return digest

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


@dataclass
class StageResult:
    """What a stage did in this run (``ran`` or ``skipped``) and the statistics it reported."""

    name: str
    status: str
    seconds: float
    stats: Dict[str, Any]
    inputs: List[str]
    outputs: Dict[str, str]


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

    def _label(self, path: Path) -> str:
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
            label = self._label(out)
            if not out.exists() or recorded.get(label) != self.cache.sha256(out):
                return None
        return stamp

    def run(self, stage: Stage) -> StageResult:
        stamp = self.is_current(stage)
        if stamp is not None:
            self.log(f"[{stage.name}] up to date, skipped")
            return StageResult(
                stage.name, "skipped", 0.0, stamp.get("stats", {}),
                [i["sha256"] for i in stamp["inputs"]], stamp["outputs"],
            )
        self.stamp_path(stage.name).unlink(missing_ok=True)
        for out in stage.outputs:
            out.parent.mkdir(parents=True, exist_ok=True)
            remove_path(tmp_path(out))  # left over from an interrupted run
        self.log(f"[{stage.name}] running")
        inputs = self._digests(stage.inputs, "input", stage.name)
        start = time.monotonic()
        try:
            stats = stage.action(StageContext(stage)) or {}
            for out in stage.outputs:
                if not tmp_path(out).exists():
                    raise RuntimeError(f"stage {stage.name} did not write {out}")
        except BaseException:
            for out in stage.outputs:
                remove_path(tmp_path(out))  # nothing half-written survives
            raise
        for out in stage.outputs:
            remove_path(out)
            os.replace(tmp_path(out), out)
        seconds = time.monotonic() - start
        outputs = {self._label(out): self.cache.sha256(out) for out in stage.outputs}
        # The stamp is written last: a crash before this line means the stage runs again.
        write_json_atomic(
            self.stamp_path(stage.name),
            {
                "format": STAMP_FORMAT,
                "stage": stage.name,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": round(seconds, 3),
                "options": json.loads(json.dumps(dict(stage.options), sort_keys=True, default=str)),
                "inputs": [
                    {"path": self._label(p), "sha256": d} for p, d in zip(stage.inputs, inputs)
                ],
                "outputs": outputs,
                "stats": stats,
            },
        )
        self.cache.save()
        self.log(f"[{stage.name}] done in {seconds:.1f}s")
        return StageResult(stage.name, "ran", seconds, stats, inputs, outputs)
