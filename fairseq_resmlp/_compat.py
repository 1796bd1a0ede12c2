"""Make fairseq's own pickled objects loadable under torch >= 2.6's ``weights_only=True`` default.

fairseq calls ``torch.load`` without ``weights_only=False``. Single-process checkpoints of a dataclass-configured
model hold only plain containers and tensors, but multi-process training broadcasts the loaded checkpoint from
rank 0 to the other ranks through ``torch.save``/``torch.load`` with fairseq's ``_TensorPlaceholder`` inside.
Allow-listing those types once, at plugin import, means no user ever needs TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.
"""

import torch


def allow_fairseq_checkpoint_globals() -> None:
    """Register the fairseq types that its checkpoint code pickles as safe for ``torch.load``."""
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is None:  # torch < 2.4 loads everything anyway
        return
    from fairseq.distributed.utils import _TensorPlaceholder

    add_safe_globals([_TensorPlaceholder])
