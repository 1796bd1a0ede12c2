"""SentencePiece: sample the training text, train one joint model, encode files in parallel.

The model is trained with ``identity`` normalisation and byte fallback, so that decoding the
pieces gives back exactly the cleaned text (rare characters become byte pieces rather than
``<unk>``), and with the ids of fairseq's special symbols (<s>=0, <pad>=1, </s>=2, <unk>=3), so
that a SentencePiece id and the fairseq dictionary index of the same piece are equal.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import random
import shutil
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import sentencepiece as spm
from tqdm import tqdm

from data_prep.children import die_with_parent
from data_prep.errors import DataPrepError
from data_prep.textio import count_lines

SPECIAL_PIECES = ("<s>", "<pad>", "</s>", "<unk>")
# Bytes per encoding task: large enough to amortise process overhead, small enough to balance.
CHUNK_BYTES = 8 << 20


def sample_pairs(src: Path, tgt: Path, out: Path, n: int, seed: int) -> int:
    """Write both sides of ``n`` random pairs (all pairs if fewer) to ``out``; returns pairs written.

    A seeded sample keeps SentencePiece training time independent of corpus size and makes
    reruns reproducible.
    """
    total = count_lines(src)
    if n <= 0 or n >= total:
        chosen = None
    else:
        chosen = set(random.Random(seed).sample(range(total), n))
    written = 0
    with (
        open(src, encoding="utf-8", newline="\n") as fs,
        open(tgt, encoding="utf-8", newline="\n") as ft,
        open(out, "w", encoding="utf-8", newline="\n") as fo,
    ):
        for i, (a, b) in enumerate(zip(fs, ft)):
            if chosen is None or i in chosen:
                fo.write(a)
                fo.write(b)
                written += 1
    return written


def train_model(
    sample: Path,
    model_prefix: Path,
    vocab_size: int,
    model_type: str,
    character_coverage: float,
    threads: int,
    seed: int,
) -> None:
    """Train the joint model; writes ``model_prefix.model`` and ``model_prefix.vocab``.

    The sentences are streamed in and the model comes back as bytes: trained from a file, the model
    would record that file's path (and the prefix), so the same data in another output directory
    would give another ``spm.model``.
    """
    model = io.BytesIO()
    try:
        with open(sample, encoding="utf-8", newline="\n") as f:
            spm.SentencePieceTrainer.train(
                sentence_iterator=(line.rstrip("\n") for line in f),
                model_writer=model,
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=character_coverage,
                normalization_rule_name="identity",
                byte_fallback=True,
                bos_id=0,
                pad_id=1,
                eos_id=2,
                unk_id=3,
                input_sentence_size=0,  # the sample is already the size we want
                num_threads=max(1, threads),
                minloglevel=1,
            )
    except (RuntimeError, OSError) as exc:
        raise DataPrepError(
            f"SentencePiece training on {sample} failed: {exc} "
            "(if the vocabulary is too large for this corpus, lower --vocab-size)"
        ) from None
    Path(f"{model_prefix}.model").write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    with open(f"{model_prefix}.vocab", "w", encoding="utf-8", newline="\n") as f:
        for i in range(sp.get_piece_size()):  # the format SentencePiece writes: piece TAB score
            f.write(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n")


def write_fairseq_dict(spm_vocab: Path, out: Path) -> int:
    """The fairseq dictionary listing the SentencePiece pieces in id order; returns its size.

    fairseq adds its four special symbols itself, so they are left out; the counts are dummies
    (fairseq only uses them for thresholding, which a ready-made dictionary does not need).
    """
    pieces: List[str] = []
    with open(spm_vocab, encoding="utf-8") as f:
        for line in f:
            piece = line.rstrip("\n").split("\t")[0]
            if piece not in SPECIAL_PIECES:
                pieces.append(piece)
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        for i, piece in enumerate(pieces):
            f.write(f"{piece} {len(pieces) - i}\n")
    return len(pieces) + len(SPECIAL_PIECES)


# --- parallel encoding -------------------------------------------------------------------------

_processor: Optional[spm.SentencePieceProcessor] = None
_processor_key: Optional[tuple] = None


def _load(model: str) -> spm.SentencePieceProcessor:
    """The model, loaded once per process; keyed by the file's signature, not its path, because a
    re-run in the same process (a library caller, the tests) may have trained a new model there."""
    global _processor, _processor_key
    st = os.stat(model)
    key = (model, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if _processor is None or _processor_key != key:
        _processor = spm.SentencePieceProcessor(model_file=model)
        _processor_key = key
    return _processor


def _encode_chunk(task: Tuple[str, str, int, int, str]) -> int:
    """Encode bytes [start, end) of a file (whole lines) into a part file; returns the line count."""
    model, path, start, end, part = task
    sp = _load(model)
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    if not data:
        Path(part).write_bytes(b"")
        return 0
    lines = data.decode("utf-8").split("\n")
    if lines[-1] == "":
        lines.pop()  # the chunk ends with a newline
    pieces = sp.encode(lines, out_type=str)
    with open(part, "w", encoding="utf-8", newline="\n") as f:
        for p in pieces:
            f.write(" ".join(p))
            f.write("\n")
    return len(lines)


def chunk_bounds(path: Path, chunk_bytes: int = CHUNK_BYTES) -> List[Tuple[int, int]]:
    """Split a file into byte ranges that start and end on line boundaries."""
    size = path.stat().st_size
    bounds: List[Tuple[int, int]] = []
    start = 0
    with open(path, "rb") as f:
        while start < size:
            end = min(size, start + chunk_bytes)
            if end < size:
                f.seek(end)
                f.readline()  # move to the end of the line we landed in
                end = f.tell()
            bounds.append((start, end))
            start = end
    return bounds or [(0, 0)]


def encode_files(
    model: Path,
    jobs: Sequence[Tuple[Path, Path]],
    workers: int,
    progress: bool = True,
    chunk_bytes: int = CHUNK_BYTES,
) -> List[int]:
    """Encode each ``(input, output)`` text file into space-separated pieces; returns line counts.

    The files are cut into chunks that a pool of ``workers`` processes encodes independently;
    the parts are then concatenated in order.
    """
    tasks = []
    owners = []
    for j, (src, dst) in enumerate(jobs):
        for k, (start, end) in enumerate(chunk_bounds(src, chunk_bytes)):
            # next to dst and named after it, so that an interrupted run's parts are found and removed
            part = dst.with_name(f"{dst.name}.part{k:05d}")
            tasks.append((str(model), str(src), start, end, str(part)))
            owners.append(j)
    totals = [0] * len(jobs)
    total_bytes = sum(src.stat().st_size for src, _ in jobs)
    bar = tqdm(
        total=total_bytes,
        unit="B",
        unit_scale=True,
        desc="encode",
        disable=not progress,
        file=sys.stderr,
        mininterval=0.5,
    )
    try:
        if workers <= 1 or len(tasks) == 1:
            results = (_encode_chunk(t) for t in tasks)
            for i, n in enumerate(results):
                totals[owners[i]] += n
                bar.update(tasks[i][3] - tasks[i][2])
        else:
            # spawn, not fork: the parent may hold threads (tqdm, torch) that fork would copy badly.
            # Workers die with us (kill -9 included), so none is left writing a part file.
            with mp.get_context("spawn").Pool(
                min(workers, len(tasks)), initializer=die_with_parent, initargs=(os.getpid(),)
            ) as pool:
                for i, n in enumerate(pool.imap(_encode_chunk, tasks)):
                    totals[owners[i]] += n
                    bar.update(tasks[i][3] - tasks[i][2])
        for j, (_, dst) in enumerate(jobs):
            with open(dst, "wb") as out:
                for t, owner in zip(tasks, owners):
                    if owner == j:
                        with open(t[4], "rb") as part:
                            shutil.copyfileobj(part, out, 1 << 20)
    finally:
        bar.close()
        for t in tasks:
            if os.path.exists(t[4]):
                os.remove(t[4])
    return totals
