"""Checkpoint repair: fairseq's copy to checkpoint_last.pt is not atomic, so kill -9 can truncate it."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path
from typing import Optional

from fairseq_resmlp_tools._fs import atomic_path


def is_intact_checkpoint(path: Path) -> bool:
    """Whether a torch checkpoint is complete. torch.save writes a zip archive whose directory comes last, so a
    truncated file (a copy interrupted by kill -9) fails this check without reading the whole file."""
    try:
        with zipfile.ZipFile(path) as z:
            return len(z.namelist()) > 0
    except (zipfile.BadZipFile, OSError):
        return False


def repair_last_checkpoint(save_dir: Path) -> Optional[str]:
    """Make ``checkpoint_last.pt`` resumable again after an interrupted copy; returns what was done, if anything.

    fairseq writes each checkpoint to a temporary name and renames it, but then *copies* it to
    checkpoint_last.pt (and checkpoint_best.pt), which is not atomic: kill -9 during the copy leaves a
    truncated checkpoint_last.pt on which fairseq-train fails. The copy's source is complete, so the newest
    intact checkpoint is put back as checkpoint_last.pt.
    """
    last = save_dir / "checkpoint_last.pt"
    if not last.exists() or is_intact_checkpoint(last):
        return None
    candidates = sorted(
        (p for p in save_dir.glob("checkpoint*.pt") if p.name != last.name and "avg" not in p.name),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for candidate in candidates:
        if is_intact_checkpoint(candidate):
            with atomic_path(last) as tmp:
                shutil.copyfile(candidate, tmp)
            return f"{last} was truncated (interrupted copy); restored it from {candidate.name}"
    broken = last.with_name("checkpoint_last.pt.broken")
    os.replace(last, broken)
    return f"{last} was truncated and no intact checkpoint was found; moved it to {broken.name}, training restarts"
