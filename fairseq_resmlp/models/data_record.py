"""What a ResMLP model was trained on, recorded in its config and verified whenever a checkpoint is loaded.

A checkpoint only fits the dictionaries it was trained with, in the direction it was trained in. A dictionary
of another SentencePiece model with the same number of symbols, or the joint dictionary used the other way
round, loads without any shape error and translates into nonsense. So ``build_model`` records, when a model is
built for training, the SHA-256 of the source and target dictionaries' symbols (in order) and the direction
(``en-de``) in the model config (``ResMLPConfig.source_dict_sha256`` ...), which fairseq saves in every
checkpoint; when a checkpoint is loaded (hub, fairseq-generate, fairseq-interactive: all build the model with
the task's dictionaries) the same values are computed from the task and compared.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any, Dict, Optional, Sequence

from fairseq.utils import safe_getattr

logger = logging.getLogger(__name__)

# The config fields this module sets and checks; they may not be overridden when loading (see from_pretrained).
RECORD_FIELDS = ("source_dict_sha256", "target_dict_sha256", "direction")


class ResMLPCheckpointError(ValueError):
    """A checkpoint that does not fit the data it is being used with."""


def symbols_sha256(symbols: Sequence[str]) -> str:
    """SHA-256 of a dictionary's symbols in order (specials included): what the embedding rows mean.

    Symbols never contain a newline (fairseq's dict.txt has one per line), so joining with one is unambiguous.
    """
    return hashlib.sha256("\n".join(symbols).encode("utf-8")).hexdigest()


def dictionary_files(task: Any) -> Dict[str, str]:
    """{"source": DIR/dict.SRC.txt, "target": DIR/dict.TGT.txt} of a translation task, to name them in errors."""
    data = safe_getattr(getattr(task, "cfg", None), "data", None)
    src, tgt = task_direction(task)
    if not data or not src or not tgt:
        return {}
    first = str(data).split(os.pathsep)[0]
    return {"source": os.path.join(first, f"dict.{src}.txt"), "target": os.path.join(first, f"dict.{tgt}.txt")}


def task_direction(task: Any) -> "tuple[Optional[str], Optional[str]]":
    cfg = getattr(task, "cfg", None)
    return safe_getattr(cfg, "source_lang", None), safe_getattr(cfg, "target_lang", None)


def task_record(task: Any) -> Dict[str, Optional[str]]:
    """The values of RECORD_FIELDS for the data a task reads."""
    src, tgt = task_direction(task)
    return {
        "source_dict_sha256": symbols_sha256(task.source_dictionary.symbols),
        "target_dict_sha256": symbols_sha256(task.target_dictionary.symbols),
        "direction": f"{src}-{tgt}" if src and tgt else None,
    }


def verify_or_record(cfg: Any, task: Any) -> None:
    """Compare the task's data with what ``cfg`` records (a loaded checkpoint); record what it does not (training,
    or a checkpoint from before these fields existed: it loads as before, unverified)."""
    actual = task_record(task)
    recorded = {name: safe_getattr(cfg, name, None) for name in RECORD_FIELDS}
    files = dictionary_files(task)
    # Direction first: with a joint dictionary both sides hash the same, and the direction is what is wrong.
    if recorded["direction"] and actual["direction"] and recorded["direction"] != actual["direction"]:
        trained, asked = recorded["direction"].replace("-", "->"), actual["direction"].replace("-", "->")
        raise ResMLPCheckpointError(
            f"the checkpoint was trained {trained}, but the task translates {asked} "
            "(--source-lang/--target-lang): a model translates only the direction it was trained in"
        )
    for side in ("source", "target"):
        name = f"{side}_dict_sha256"
        if recorded[name] and recorded[name] != actual[name]:
            where = files.get(side, f"the task's {side} dictionary")
            raise ResMLPCheckpointError(
                f"the checkpoint was trained with another {side} dictionary than {where} (sha256 of its symbols "
                f"{actual[name][:12]}..., the checkpoint's {recorded[name][:12]}...): translate with the data "
                "directory (dictionaries) the model was trained on"
            )
    if not all(recorded.values()):
        missing = {name: value for name, value in actual.items() if not recorded[name] and value}
        for name, value in missing.items():
            _set_everywhere(cfg, name, value)
        if missing:
            logger.info("recorded in the model config (verified when a checkpoint is loaded): %s", missing)


def _set_everywhere(cfg: Any, name: str, value: str) -> None:
    """Set ``cfg.name`` and the same field of the config fairseq saves in checkpoints.

    fairseq builds the model from a merged copy of ``cfg.model`` (``merge_with_parent``) whose parent is the run's
    whole config; the trainer saves that config's ``model``, not the copy, so the value goes there too.
    """
    setattr(cfg, name, value)
    try:
        from omegaconf import OmegaConf, open_dict
    except ImportError:  # pragma: no cover - fairseq depends on omegaconf
        return
    if not OmegaConf.is_config(cfg):
        return
    parent = cfg._get_parent()
    original = parent.get("model") if parent is not None and OmegaConf.is_dict(parent) else None
    if original is not None and original is not cfg and OmegaConf.is_config(original):
        with open_dict(original):
            original[name] = value
