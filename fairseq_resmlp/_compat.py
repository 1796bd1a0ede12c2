"""Make fairseq's own pickled objects loadable under torch >= 2.6's ``weights_only=True`` default.

fairseq calls ``torch.load`` without ``weights_only=False``. A single-process checkpoint of a dataclass-configured
model holds only plain containers and tensors and loads as it is. But when multi-process training resumes, rank 0
loads the checkpoint, turns its config into an omegaconf ``DictConfig`` and broadcasts the whole state to the
other ranks through ``torch.save``/``torch.load``, with fairseq's ``_TensorPlaceholder`` in place of tensors; the
other ranks then fail with "Unsupported global". Allow-listing exactly those types once, at plugin import, means
no user ever needs ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``. (The list is what
``torch.serialization.get_unsafe_globals_in_checkpoint`` reports for such a broadcast, plus omegaconf's other
value nodes, which a config holds when it is built from a dataclass.)

Two more kinds of plain data appear in fairseq checkpoints: numpy arrays (``--eval-bleu`` stores its n-gram
counts in every checkpoint's metrics) and ``argparse.Namespace`` (the config of models registered the old
``add_args`` way, such as fairseq's own Transformer baselines, loaded next to ResMLP in comparisons).
"""

import argparse
import collections
import typing

import numpy as np
import torch


def allow_fairseq_checkpoint_globals() -> None:
    """Register the types that fairseq's checkpoint broadcast pickles as safe for ``torch.load``."""
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is None:  # torch < 2.4 loads everything anyway
        return
    add_safe_globals(fairseq_checkpoint_globals())


def fairseq_checkpoint_globals() -> list:
    """The plain-data types fairseq checkpoints (and their broadcast between ranks) hold besides tensors.

    The one allow-list, registered for the process by :func:`allow_fairseq_checkpoint_globals` (plugin import, tools).
    """
    from fairseq.distributed.utils import _TensorPlaceholder
    from omegaconf import DictConfig, ListConfig, base, nodes

    value_nodes = [
        getattr(nodes, name)
        for name in (
            "AnyNode",
            "StringNode",
            "IntegerNode",
            "FloatNode",
            "BooleanNode",
            "EnumNode",
            "BytesNode",
            "PathNode",
        )
        if hasattr(nodes, name)
    ]
    return [
        _TensorPlaceholder,
        DictConfig,
        ListConfig,
        base.ContainerMetadata,
        base.Metadata,
        *value_nodes,
        typing.Any,
        collections.defaultdict,
        dict,
        list,
        int,
        argparse.Namespace,
        *_numpy_array_globals(),
    ]


def _numpy_array_globals() -> list:
    """What pickling a numpy array refers to: its reconstructor, ndarray, dtype and the concrete dtype classes."""
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    found = [_reconstruct, np.ndarray, np.dtype]
    if hasattr(np, "dtypes"):
        found += [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    return found


# --- reading a checkpoint file, with one clear error for every way it can be unusable ---------------------

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80  # first byte of a pickle of protocol >= 2: torch's legacy (pre-1.6, non-zip) format


class CheckpointFileError(ValueError):
    """A checkpoint file that cannot be used: missing, empty, truncated, damaged, not a fairseq checkpoint, or
    of a model that cannot be built here. The message is one line and names the file."""


def load_checkpoint_checked(path, require_model: typing.Optional[type] = None) -> dict:
    """A fairseq checkpoint's state dict, loaded on the CPU with ``torch.load(weights_only=True)``, or a
    :class:`CheckpointFileError` naming ``path`` and what is wrong with it.

    Everything the project loads goes through here (resmlp-average, resmlp-evaluate, resmlp-interactive, the hub),
    so a damaged file gives the same one-line error everywhere instead of whatever torch or fairseq trip over. A
    torch zip checkpoint carries a CRC-32 of every member, which torch itself does not check: verifying them turns
    flipped bytes in the weights into an error instead of a model that loads and translates differently.
    ``require_model`` (a model class) also refuses checkpoints of other models (the hub of ResMLPModel).
    """
    import os
    import zipfile

    path = str(path)
    if not os.path.exists(path):
        raise CheckpointFileError(f"checkpoint {path} does not exist")
    if not os.path.isfile(path):
        raise CheckpointFileError(f"checkpoint {path} is not a file")
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise CheckpointFileError(f"checkpoint {path} is empty (0 bytes)")
    if head.startswith(_ZIP_MAGIC):
        _check_torch_zip(path, zipfile)
    elif head[0] != _PICKLE_PROTO:
        raise CheckpointFileError(f"{path} is not a torch checkpoint (it starts with {head!r})")

    allow_fairseq_checkpoint_globals()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file makes torch fail in many ways (KeyError, OSError, EOFError ...)
        message = " ".join(str(e).split())
        if "Unsupported global" in message:
            globals_named = " ".join(line.strip() for line in str(e).splitlines() if "GLOBAL" in line)
            raise CheckpointFileError(
                f"{path} holds objects that torch.load(weights_only=True), which runs no code from the file, "
                f"refuses: {globals_named or message[:200]}"
            ) from None
        raise CheckpointFileError(
            f"{path} is truncated or damaged: torch.load failed ({type(e).__name__}: {message[:200]})"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointFileError(f"{path} is a torch file but not a fairseq checkpoint (no 'model' state dict)")
    arch = checkpoint_architecture(state)
    if arch is None:
        raise CheckpointFileError(f"{path} is not a fairseq checkpoint: it names no model (no cfg.model nor args)")
    from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY

    model_class = ARCH_MODEL_REGISTRY.get(arch) or MODEL_REGISTRY.get(arch)
    if model_class is None:
        raise CheckpointFileError(
            f"{path} is a checkpoint of model architecture {arch!r}, which is not registered with fairseq here "
            "(a model of another plugin?)"
        )
    if require_model is not None and not issubclass(model_class, require_model):
        raise CheckpointFileError(
            f"{path} is a checkpoint of {arch!r} ({model_class.__name__}), not of a {require_model.__name__}"
        )
    return state


def checkpoint_architecture(state: dict) -> typing.Optional[str]:
    """The architecture a fairseq checkpoint was trained with (``cfg.model._name``, or ``args.arch`` of older
    and argparse-configured models), None if it names none."""
    cfg = state.get("cfg")
    model = cfg.get("model") if isinstance(cfg, dict) else getattr(cfg, "model", None)
    if model is None:
        model = state.get("args")
    if model is None:
        return None
    if isinstance(model, dict):
        name = model.get("_name") or model.get("arch")
    else:
        name = getattr(model, "arch", None) or getattr(model, "_name", None)
    return str(name) if name else None


def _check_torch_zip(path: str, zipfile) -> None:
    """A torch zip checkpoint that is complete (its directory comes last) and whose members match their CRC-32."""
    import zlib

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not any(name.endswith("/data.pkl") for name in names):
                raise CheckpointFileError(f"{path} is a zip archive but not a torch checkpoint (no data.pkl)")
            bad = archive.testzip()  # reads every member and checks its CRC-32
    except CheckpointFileError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as e:
        raise CheckpointFileError(
            f"{path} is truncated or damaged: not a complete zip archive, as torch writes them ({e})"
        ) from None
    if bad is not None:
        raise CheckpointFileError(f"{path} is damaged: member {bad} does not match its CRC-32 checksum")
