"""Running a recipe: a list of commands that is printed first, resumable, and safe to run again.

Each finished step leaves a stamp in ``RUN_DIR/.recipe/``: the command it ran and the stamp of the step before
it. A re-run skips a step whose stamp matches; a step that ran again (or a changed command) makes every later
step run again. fairseq-train resumes by itself from ``checkpoint_last.pt``; the training step is simply run
again until it finishes. A lock file keeps two runs out of the same directory, and every child process is
killed with the recipe (even by ``kill -9``), so a re-run never races a leftover trainer.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from scripts._common import ScriptError, child_env, die_with_parent, format_command, write_text_atomic


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
        with _exclusive_lock(self.stamps / "lock", self.run_dir):
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


class _exclusive_lock:
    """flock on a file in the run directory; the kernel releases it when the process dies, even by kill -9."""

    def __init__(self, path: Path, run_dir: Path) -> None:
        self.path = path
        self.run_dir = run_dir
        self.fd = -1

    def __enter__(self) -> "_exclusive_lock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(self.fd, 64).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise ScriptError(f"another run of this recipe (pid {other}) is using {self.run_dir}; wait for it or stop it") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


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
            step.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            env=child_env(step.env), preexec_fn=die_with_parent, bufsize=1,
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
        raise ScriptError(
            f"step {step.name} failed (exit status {code}){where}. Fix the cause and run the same command again: "
            "finished steps are skipped and training resumes from its last checkpoint"
        )


# --- checkpoints -----------------------------------------------------------------------------------------


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
        key=lambda p: p.stat().st_mtime, reverse=True,
    )
    for candidate in candidates:
        if is_intact_checkpoint(candidate):
            tmp = save_dir / ".checkpoint_last.pt.repair"
            shutil.copyfile(candidate, tmp)
            os.replace(tmp, last)
            return f"{last} was truncated (interrupted copy); restored it from {candidate.name}"
    broken = last.with_name("checkpoint_last.pt.broken")
    os.replace(last, broken)
    return f"{last} was truncated and no intact checkpoint was found; moved it to {broken.name}, training restarts"


def valid_bleu_args() -> List[str]:
    """fairseq-train options that add validation BLEU to the logs (greedy, capped length: cheap enough to run at
    every validation). Detokenized like the evaluation; the best checkpoint is still chosen by validation loss,
    because fairseq crashes (KeyError 'bleu') when a validation produces no n-gram matches at all."""
    return [
        "--eval-bleu",
        "--eval-bleu-args", json.dumps({"beam": 1, "max_len_a": 1.2, "max_len_b": 10}),
        "--eval-bleu-detok", "space",
        "--eval-bleu-remove-bpe", "sentencepiece",
    ]


def logging_args(log_interval: int) -> List[str]:
    """JSON logs (what plot_training.py reads); the recipe saves the console output as SAVE_DIR/train.log.
    fairseq's own --log-file is not used: it drops the record tags and repeats lines once per epoch."""
    return ["--log-format", "json", "--log-interval", str(log_interval)]


def cuda_device_count() -> int:
    """GPUs visible to torch (0 without CUDA)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA set-up means CPU
        return 0


def data_languages(data: Path, source_lang: Optional[str], target_lang: Optional[str]) -> tuple:
    """(source, target) for a data_prep output directory: as given, else from its manifest.json.

    The data-bin of ``data_prep`` serves both directions, so either language can be the source.
    """
    if not data.is_dir():
        raise ScriptError(f"--data {data} is not a directory (prepare it with python -m data_prep.parallel or data_prep.wmt14)")
    if not (data / "data-bin").is_dir():
        raise ScriptError(f"--data {data} has no data-bin/ directory: is it a data_prep output directory?")
    langs: dict = {}
    manifest = data / "manifest.json"
    if manifest.exists():
        try:
            langs = json.loads(manifest.read_text(encoding="utf-8")).get("languages", {})
        except ValueError as e:
            raise ScriptError(f"{manifest} is not valid JSON: {e}") from None
    pair = [langs.get("src"), langs.get("tgt")]
    for option, lang in (("--source-lang", source_lang), ("--target-lang", target_lang)):
        if lang and all(pair) and lang not in pair:
            raise ScriptError(f"{option} {lang}: {data} holds {pair[0]}-{pair[1]} (see its manifest.json)")
    src = source_lang or (pair[0] if target_lang in (None, pair[1]) else pair[1])
    tgt = target_lang or next((lang for lang in pair if lang and lang != src), None)
    if not src or not tgt:
        raise ScriptError(f"cannot tell the languages of {data} (no manifest.json): give --source-lang and --target-lang")
    return src, tgt


SCRIPTS = Path(__file__).resolve().parent


def train_step(command: List[str], save: Path) -> Step:
    """The training step of a recipe: restores a truncated checkpoint_last.pt before (re)starting fairseq."""

    def repair() -> None:
        message = repair_last_checkpoint(save)
        if message:
            print(f"note: {message}", flush=True)

    return Step("train", command, log=save / "train.log", before=repair)


def finishing_steps(
    save: Path,
    average_flag: str,
    average_last: int,
    evaluate_args: List[str],
    label: str,
) -> List[Step]:
    """What every recipe does after training: average the last checkpoints, evaluate the average, plot.

    ``average_flag`` is ``--num-epoch-checkpoints`` or ``--num-update-checkpoints``; ``evaluate_args`` are the
    data/split/language/beam options for scripts/evaluate.py.
    """
    py = sys.executable
    average = save / f"checkpoint_avg{average_last}.pt"
    return [
        Step("average", [
            py, str(SCRIPTS / "average_checkpoints.py"), "--inputs", str(save),
            average_flag, str(average_last), "--allow-fewer", "--output", str(average),
        ]),
        Step("evaluate", [py, str(SCRIPTS / "evaluate.py"), str(average), *evaluate_args]),
        Step("plot", [py, str(SCRIPTS / "plot_training.py"), str(save / "train.log"), "--labels", label,
                      "-o", str(save / "training.png")]),
    ]
