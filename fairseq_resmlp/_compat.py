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
