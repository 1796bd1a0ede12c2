"""Running a recipe: a list of commands that is printed first, resumable, and safe to run again.

Each finished step leaves a stamp in ``RUN_DIR/.recipe/``: the command it ran and the stamp of the step before
it. A re-run skips a step whose stamp matches; a step that ran again (or a changed command) makes every later
step run again. fairseq-train resumes by itself from ``checkpoint_last.pt``; the training step is simply run
again until it finishes. A lock file keeps two runs out of the same directory, and every child process is
killed with the recipe (even by ``kill -9``), so a re-run never races a leftover trainer.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from fairseq_resmlp_tools._cli import ToolError
from fairseq_resmlp_tools._fs import output_lock, write_text_atomic
from fairseq_resmlp_tools.fairseq_io import die_with_parent, format_command


@dataclass
class Step:
    """One command of a recipe. ``log``: also append its output to this file. ``before``: run just before it."""

    name: str
    command: List[str]
    log: Optional[Path] = None
    before: Optional[Callable[[], None]] = None
    env: dict = field(default_factory=dict)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


class Recipe:
    """Steps run in order inside ``run_dir``; see the module docstring."""

    def __init__(self, run_dir: Path, steps: Sequence[Step], title: str) -> None:
        self.run_dir = run_dir
        self.steps = list(steps)
        self.title = title
        self.stamps = run_dir / ".recipe"

    def _stamp_file(self, step: Step) -> Path:
        return self.stamps / f"{step.name}.json"

    def _read_stamp(self, step: Step) -> Optional[dict]:
        try:
            return json.loads(self._stamp_file(step).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _status(self) -> List[bool]:
        """Whether each step is done: every step before it is, and its stamp matches its command and the
        stamp of the step before it (so a step that ran again makes the later ones run again)."""
        done: List[bool] = []
        previous = ""
        for step in self.steps:
            stamp = self._read_stamp(step)
            ok = (
                all(done)
                and stamp is not None
                and stamp.get("command") == _digest(*step.command)
                and stamp.get("after") == previous
            )
            done.append(ok)
            previous = stamp["id"] if ok and stamp is not None else "-"
        return done

    def describe(self) -> str:
        status = self._status() if self.stamps.exists() else [False] * len(self.steps)
        lines = [f"# {self.title}", f"# run directory: {self.run_dir}"]
        for i, (step, done) in enumerate(zip(self.steps, status), 1):
            lines.append(f"# step {i}/{len(self.steps)}: {step.name}{'  (done, will be skipped)' if done else ''}")
            env = " ".join(f"{k}={v}" for k, v in step.env.items())
            lines.append((env + " " if env else "") + format_command(step.command))
        return "\n".join(lines)

    def run(self, dry_run: bool = False) -> None:
        print(self.describe(), flush=True)
        if dry_run:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.stamps.mkdir(exist_ok=True)
        with output_lock(self.run_dir, lock_file=".recipe/lock", what="run of this recipe"):
            previous = ""
            for i, (step, done) in enumerate(zip(self.steps, self._status()), 1):
                if done:
                    print(f"\n== step {i}/{len(self.steps)} {step.name}: done already, skipped", flush=True)
                    previous = self._read_stamp(step)["id"]  # type: ignore[index]
                    continue
                print(f"\n== step {i}/{len(self.steps)} {step.name}", flush=True)
                self._stamp_file(step).unlink(missing_ok=True)
                started = time.time()
                if step.before is not None:
                    step.before()
                _run_step(step)
                stamp = {
                    "id": _digest(step.name, str(time.time_ns())),
                    "command": _digest(*step.command),
                    "after": previous,
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "seconds": round(time.time() - started, 1),
                    "command_line": format_command(step.command),
                }
                write_text_atomic(self._stamp_file(step), json.dumps(stamp, indent=2) + "\n")
                previous = stamp["id"]
        print(f"\n== {self.title}: all {len(self.steps)} steps done", flush=True)


def _run_step(step: Step) -> None:
    """Run one command; its output goes to our stdout and, if asked, is appended to ``step.log``."""
    log = None
    if step.log is not None:
        step.log.parent.mkdir(parents=True, exist_ok=True)
        log = open(step.log, "a", encoding="utf-8")
        log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {format_command(step.command)}\n")
        log.flush()
    try:
        proc = subprocess.Popen(
            step.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env={**os.environ, **step.env},
            preexec_fn=die_with_parent,
            bufsize=1,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if log is not None:
                log.write(line)
                log.flush()
        code = proc.wait()
    finally:
        if log is not None:
            log.close()
    if code != 0:
        where = f"; its output is in {step.log}" if step.log else ""
        raise ToolError(
            f"step {step.name} failed (exit status {code}){where}. Fix the cause and run the same command again: "
            "finished steps are skipped and training resumes from its last checkpoint"
        )
